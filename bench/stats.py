"""Streaming accumulators of the per-layer statistics that layer-wise methods ask for.

Owns: `StatAccumulator`, fed with a linear layer's input batches [..., in] through a forward
pre-hook, producing `LayerStats` (token count, sum of squared inputs per feature, and the
Hessian 2 X X^T / n, or the mean and variance of each feature). Memory is O(in^2) per layer, independent of the token count.

Batch invariance: the sums are accumulated in float64, in the order of the calibration batches,
and rounded to float32 once at the end, so the statistic of a given set of inputs does not
depend on how the engine cut them into batches (float32 accumulation made a SparseGPT 2:4 run
move by 2.7 % in ppl between engine batch sizes 64 and 32; docs/protocol.md, "Noise floor").
On CPU the Hessian's X^T X is a symmetric rank-k update: BLAS `dsyrk` (through scipy) computes
only its upper triangle, half the flops of a matmul; elsewhere (GPU) it is one `addmm_`.
"""
from __future__ import annotations

import torch
from torch import nn

from methods.base import LayerStats, StatKind


ACC_DTYPE = torch.float64


def _syrk_upper(x: torch.Tensor, out: torch.Tensor) -> bool:
    """out[upper] += (x^T x)[upper] for CPU float64 x [tokens, in]; False when not applicable."""
    if x.device.type != "cpu" or x.dtype != torch.float64 or out.dtype != torch.float64:
        return False
    try:
        from scipy.linalg.blas import dsyrk
    except ImportError:  # scipy missing: the caller falls back to a full matmul
        return False
    xt = x.contiguous().numpy().T                              # [in, tokens], Fortran order, no copy
    upper = torch.from_numpy(dsyrk(1.0, xt, trans=0))          # [in, in], upper triangle valid
    out += upper.triu()
    return True


class StatAccumulator:
    def __init__(self, in_features: int, kind: StatKind, device: torch.device) -> None:
        self.kind = kind
        self.n_tokens = 0
        self.act_sq = torch.zeros(in_features, dtype=ACC_DTYPE, device=device)
        self.act_sum = (torch.zeros(in_features, dtype=ACC_DTYPE, device=device)
                        if kind == "act_moments" else None)
        self.xtx = (torch.zeros(in_features, in_features, dtype=ACC_DTYPE, device=device)
                    if kind == "hessian" else None)
        self._upper_only = False      # True once xtx holds only its upper triangle (syrk path)

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """x [..., in] -> accumulate over all leading dimensions (tokens)."""
        x2 = x.reshape(-1, x.shape[-1]).to(ACC_DTYPE)         # [tokens, in]
        self.n_tokens += x2.shape[0]
        if self.act_sum is not None:
            self.act_sum += x2.sum(dim=0)
        if self.xtx is None:
            self.act_sq += (x2 * x2).sum(dim=0)
            return                                            # (else act_sq = diag(X^T X))
        if (self._upper_only or self.n_tokens == x2.shape[0]) and _syrk_upper(x2, self.xtx):
            self._upper_only = True
        elif self._upper_only:                                # keep one representation
            self.xtx.addmm_(x2.t(), x2).triu_()
        else:
            self.xtx.addmm_(x2.t(), x2)                       # [in, in]

    def hook(self, module: nn.Module, args: tuple) -> None:
        self.add(args[0])

    def finish(self) -> LayerStats:
        n = max(self.n_tokens, 1)
        hessian = None
        if self.xtx is not None:
            xtx = self.xtx
            if self._upper_only:                              # mirror the upper triangle
                xtx = xtx + xtx.triu(1).t()
            hessian = (xtx * (2.0 / n)).float()               # rounded to float32 once
        act_sq = self.act_sq if self.xtx is None else torch.diagonal(self.xtx)
        mean = var = None
        if self.act_sum is not None:                          # in float64, then rounded once
            mean64 = self.act_sum / n
            var = (self.act_sq / n - mean64 * mean64).clamp_min(0.0).float()
            mean = mean64.float()
        return LayerStats(n_tokens=self.n_tokens, act_sq=act_sq.float(), hessian=hessian,
                          act_mean=mean, act_var=var)
