"""An exact selective scan for Mamba on CPU, with a hand-written backward pass.

Owns: `selective_scan` (a drop-in for transformers' `mamba_selective_scan`, same arguments,
same math: h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t, gated by silu(z)),
and `install()`, which makes transformers' Mamba use it when mamba-ssm is not importable.

Why: transformers' torch path is a Python loop of three ops per time step whose autograd graph
makes training ~30 tokens/s; this one does ONE in-place op per step forward and one backward
(`addcmul_` on a [batch, d_inner, d_state] slice), everything else as large batched ops, and
keeps only three [T, batch, d_inner, d_state] tensors for the backward. It is exact: the same
recurrence in float32, checked against transformers' own scan in tests/zoo/test_mamba_scan.py.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
_STATE: dict = {"installed": False, "reference": None, "logged": False}


CHUNK = 32  # time steps per chunk: the chunk's [CHUNK, B, D, N] tensors stay in cache


def _chunk_states(dt: torch.Tensor, dtu: torch.Tensor, bt: torch.Tensor, A: torch.Tensor,
                  h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of the recurrence. dt, dtu [l, B, D]; bt [l, B, N]; A [D, N]; h0 [B, D, N]
    -> dA [l, B, D, N] (exp(dt A)) and the states H [l, B, D, N]."""
    dA = torch.exp(dt.unsqueeze(-1) * A)                             # [l, B, D, N]
    H = dtu.unsqueeze(-1) * bt.unsqueeze(2)                          # [l, B, D, N] = dt B x
    H[0].addcmul_(dA[0], h0)
    for t in range(1, H.shape[0]):                                   # h_t = dA_t h_{t-1} + dBx_t
        H[t].addcmul_(dA[t], H[t - 1])
    return dA, H


class _Scan(torch.autograd.Function):
    """u, delta [B, D, T]; A [D, N]; Bm, C [B, N, T] -> y [B, D, T], last state [B, D, N].

    Time is processed in chunks of CHUNK steps; only the state entering each chunk is saved,
    and the backward recomputes a chunk's states from it (exactly the same float operations)."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                Bm: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T, nb, d, n = u.shape[2], u.shape[0], u.shape[1], A.shape[1]
        dt = delta.permute(2, 0, 1).contiguous()                     # [T, B, D]
        ut = u.permute(2, 0, 1).contiguous()                         # [T, B, D]
        dtu = dt * ut                                                # [T, B, D]
        bt = Bm.permute(2, 0, 1).contiguous()                        # [T, B, N]
        ct = C.permute(2, 0, 1).contiguous()                         # [T, B, N]
        starts = list(range(0, T, CHUNK))
        states = u.new_empty(len(starts), nb, d, n)                  # state entering each chunk
        y = u.new_empty(T, nb, d)
        h = u.new_zeros(nb, d, n)
        for c, t0 in enumerate(starts):
            t1 = min(T, t0 + CHUNK)
            states[c] = h
            _, H = _chunk_states(dt[t0:t1], dtu[t0:t1], bt[t0:t1], A, h)
            y[t0:t1] = torch.bmm(H.view(-1, d, n), ct[t0:t1].reshape(-1, n, 1)).view(-1, nb, d)
            h = H[-1].clone()
        ctx.save_for_backward(dt, ut, dtu, bt, ct, A, states)
        return y.permute(1, 2, 0), h

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor, glast: torch.Tensor | None):  # type: ignore[override]
        dt, ut, dtu, bt, ct, A, states = ctx.saved_tensors
        T, nb, d = dt.shape
        n = A.shape[1]
        gyt = gy.to(dt.dtype).permute(2, 0, 1).contiguous()          # [T, B, D]
        gdt, gu = torch.empty_like(dt), torch.empty_like(dt)         # [T, B, D]
        gbt, gct = torch.empty_like(bt), torch.empty_like(ct)        # [T, B, N]
        gA = torch.zeros_like(A)                                     # [D, N]
        carry = glast.to(dt.dtype) if glast is not None else None    # dL/dh from later steps
        for c in range(states.shape[0] - 1, -1, -1):
            t0 = c * CHUNK
            t1 = min(T, t0 + CHUNK)
            dA, H = _chunk_states(dt[t0:t1], dtu[t0:t1], bt[t0:t1], A, states[c])
            Hf = H.view(-1, d, n)                                    # [l*B, D, N]
            gct[t0:t1] = torch.bmm(Hf.transpose(1, 2), gyt[t0:t1].reshape(-1, d, 1)).view(-1, nb, n)
            G = gyt[t0:t1].unsqueeze(-1) * ct[t0:t1].unsqueeze(2)    # [l, B, D, N] direct dL/dH
            if carry is not None:
                G[-1] += carry
            for t in range(G.shape[0] - 2, -1, -1):                  # total dL/dH, reverse scan
                G[t].addcmul_(dA[t + 1], G[t + 1])
            carry = dA[0] * G[0]                                     # into the previous chunk
            Gf = G.view(-1, d, n)
            # H_t = dA_t H_{t-1} + dtu_t B_t: G is also dL/d(dtu_t B_t)
            gdtu = torch.bmm(Gf, bt[t0:t1].reshape(-1, n, 1)).view(-1, nb, d)
            gbt[t0:t1] = torch.bmm(Gf.transpose(1, 2), dtu[t0:t1].reshape(-1, d, 1)).view(-1, nb, n)
            G[1:] *= H[:-1]                                          # dL/d dA_t
            G[0] *= states[c]
            G *= dA                                                  # dL/d (dt A)
            gdt[t0:t1] = gdtu * ut[t0:t1] + (G * A).sum(-1)
            gA += (G * dt[t0:t1].unsqueeze(-1)).sum((0, 1))
            gu[t0:t1] = gdtu * dt[t0:t1]
        return (gu.permute(1, 2, 0), gdt.permute(1, 2, 0), gA, gbt.permute(1, 2, 0),
                gct.permute(1, 2, 0))


@torch.compiler.disable
def selective_scan(hidden_states: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                   B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None = None,
                   z: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                   delta_softplus: bool = False, return_last_state: bool = False,
                   **_: Any) -> Any:
    """transformers' `mamba_selective_scan` contract: hidden_states, dt, z [B, D, T];
    A [D, N]; B, C [B, N, T] -> y [B, D, T] (and the last state [B, D, N])."""
    input_dtype = hidden_states.dtype
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    ft = torch.promote_types(hidden_states.dtype, torch.float32)   # float32, or float64 in tests
    u = hidden_states.to(ft)
    with torch.autocast(u.device.type, enabled=False):            # the scan stays in ft
        y, last = _Scan.apply(u, dt.to(ft), A.to(ft), B.to(ft), C.to(ft))
    if D is not None:
        y = y + u * D[None, :, None]
    if z is not None:
        y = y * F.silu(z)
    y = y.to(input_dtype)
    return (y, last.to(input_dtype)) if return_last_state else y


def _has_mamba_ssm() -> bool:
    try:
        import mamba_ssm  # noqa: F401
    except Exception:  # not installed, or built without CUDA
        return False
    return torch.cuda.is_available()


def install() -> str:
    """Route transformers' Mamba torch path through `selective_scan`; returns the path in use.

    With mamba-ssm (CUDA) present nothing changes. Logs once which path is used."""
    if _has_mamba_ssm():
        path = "mamba-ssm CUDA kernels"
    else:
        import transformers.models.mamba.modeling_mamba as mm

        if not _STATE["installed"]:
            _STATE["reference"] = mm.mamba_selective_scan
            mm.mamba_selective_scan = selective_scan
            _STATE["installed"] = True
        path = "PruneBench exact PyTorch selective scan (bench/zoo/mamba_scan.py; no mamba-ssm)"
    if not _STATE["logged"]:
        log.info("Mamba: using %s", path)
        _STATE["logged"] = True
    return path


def reference_scan():
    """transformers' own torch scan (for tests), whether or not `install()` ran."""
    import transformers.models.mamba.modeling_mamba as mm

    return _STATE["reference"] or mm.mamba_selective_scan
