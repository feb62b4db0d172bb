"""APT: optimal multi-weight removal for layer-wise pruning (Zhao et al., arXiv 2410.15567).

Owns the `apt` method: our implementation of the paper's multiple-removal formulation (the paper
published no code; docs/methods/apt.md says which parts are our reading). For one output row w
(1 x in) and the inverse Hessian Hinv of the layer inputs, removing the weights Q at once has the
closed-form optimal update  dw = -w_Q [Hinv_QQ]^-1 Hinv_Q,:  with loss  1/2 w_Q [Hinv_QQ]^-1 w_Q^T.

1. Mask selection (a column sweep like SparseGPT's, over groups of `group` columns, M for N:M):
   for each row, among all subsets of the group with the row's removal count, remove the subset
   with the smallest EXACT joint loss under the inverse Hessian of the still-free columns, and
   apply the joint update to the row's free columns (later blocks lazily, as SparseGPT does).
   Removal counts: N:M removes M-N per group; unstructured takes SparseGPT's adaptive per-block
   allocation (lowest w^2 / [Hinv]_jj^2 over the block) and counts it per (row, group).
2. Exact reconstruction: with the mask fixed, every row's kept weights are set to the least-squares
   reconstruction of the row's output on the calibration inputs, w_K = H_KK^-1 (H w)_K, i.e. the
   multi-weight update above applied to the whole removed set at once (batched float64 Cholesky
   solves; rows with the same kept count share one batched call). `lsq_damp` > 0 makes it a
   ridge fit (H + lsq_damp * mean(diag H) * I); 0, the default, is the exact least squares.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import torch

from methods.base import (Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern,
                          PruneBenchError)
from methods.masks import lowest, n_pruned
from methods.registry import register
from methods.hessian import damped, inverse_hessian_cholesky, revive_dead, with_damping_retries

log = logging.getLogger(__name__)
# memory of one batched float64 solve [b, k, k] (and its Cholesky factor) is capped here: at the
# Llama-2-7B down_proj (k = 5504 kept columns) 128 rows would ask for 29 GiB (seen on an H200).
# Rows are solved independently, so the chunking never changes a result.
LSQ_CHUNK_BYTES = 2 * 2**30


@dataclass(frozen=True)
class APTParams:
    blocksize: int = 128        # columns per lazy-update block of the mask sweep
    group: int = 8              # unstructured: columns whose removal is chosen jointly (<= 12)
    percdamp: float = 0.01      # damping of the Hessian used by the mask sweep
    lsq_damp: float = 0.0       # damping of the final least-squares solve (0: exact LS)
    row_chunk: int = 128        # rows per batched least-squares solve (at most; see LSQ_CHUNK_BYTES)
    max_damp_retries: int = 3

    def validate(self) -> None:
        if self.blocksize <= 0 or self.row_chunk <= 0:
            raise PruneBenchError("apt: blocksize and row_chunk must be positive")
        if not 1 <= self.group <= 12:
            raise PruneBenchError("apt: group must be in [1, 12] (2^group subsets are scored)")
        if not self.percdamp > 0 or self.lsq_damp < 0:
            raise PruneBenchError("apt: percdamp must be > 0 and lsq_damp >= 0")
        if self.max_damp_retries < 0:
            raise PruneBenchError("apt: max_damp_retries must be >= 0")


def _subsets(g: int, c: int, device: torch.device) -> torch.Tensor:
    """All c-subsets of range(g) as an index tensor [n_subsets, c]."""
    return torch.tensor(list(itertools.combinations(range(g), c)), dtype=torch.long,
                        device=device).reshape(-1, c)


def _remove_jointly(w: torch.Tensor, local: torch.Tensor, counts: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor]:
    """Choose and remove, per row, the subset of a column group with the smallest joint loss.

    w [rows, g] current weights of the group; local [g, g] upper Cholesky block U[i:i+g, i:i+g]
    (so the free columns' inverse Hessian restricted to the group is local^T local);
    counts [rows] how many to remove per row. Returns (removed [rows, g] bool, coef [rows, g])
    with the row update  dw[:, i:] = -coef @ U[i:i+g, i:]."""
    rows, g = w.shape
    ginv = local.t() @ local                                   # [g, g] = (Hinv_free)_group
    removed = torch.zeros(rows, g, dtype=torch.bool, device=w.device)
    coef = torch.zeros(rows, g, dtype=w.dtype, device=w.device)
    for c in torch.unique(counts).tolist():
        if c == 0:
            continue
        rsel = (counts == c).nonzero().squeeze(1)              # [r]
        subs = _subsets(g, c, w.device)                        # [s, c]
        gss = ginv[subs[:, :, None], subs[:, None, :]]         # [s, c, c]
        gss_inv = torch.linalg.inv(gss)                        # [s, c, c]
        ws = w[rsel][:, subs]                                  # [r, s, c]
        loss = torch.einsum("rsc,scd,rsd->rs", ws, gss_inv, ws)  # [r, s] (2x the OBS loss)
        best = loss.argmin(dim=1)                              # [r]
        chosen = subs[best]                                    # [r, c]
        lam = torch.einsum("rc,rcd->rd", ws[torch.arange(len(rsel)), best], gss_inv[best])
        # dw_free = -lam @ (Hinv_free)_{S,:} = -(lam @ local[:, S]^T) @ U[i:i+g, i:]
        coef[rsel] = torch.einsum("rc,rgc->rg", lam, local[:, chosen].permute(1, 0, 2))
        removed[rsel.unsqueeze(1), chosen] = True
    return removed, coef


def select_mask(weight: torch.Tensor, hessian: torch.Tensor, pattern: Pattern, blocksize: int,
                group: int, percdamp: float, segments: list[int]) -> torch.Tensor:
    """The mask sweep (step 1). weight [out, in], hessian [in, in] -> removed [out, in] bool."""
    w = weight.float().clone()                                 # [out, in]
    rows, cols = w.shape
    u = inverse_hessian_cholesky(hessian, percdamp)            # [in, in] upper
    g = pattern.m if pattern.kind == "nm" else group
    assert g is not None
    blocksize = max(g, (blocksize // g) * g)
    removed = torch.zeros(rows, cols, dtype=torch.bool, device=w.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2]                                       # [out, B] view
        coefs = torch.zeros(rows, i2 - i1, dtype=w.dtype, device=w.device)
        if pattern.kind == "unstructured":                     # adaptive counts, per layer
            sal = w1 ** 2 / torch.diag(u[i1:i2, i1:i2]).unsqueeze(0) ** 2   # [out, B]
            alloc = torch.zeros(rows, i2 - i1, dtype=torch.bool, device=w.device)
            r0 = 0
            for seg in segments:
                k = n_pruned(seg * (i2 - i1), pattern.sparsity)
                if k > 0:
                    idx = lowest(sal[r0:r0 + seg].flatten(), k)
                    alloc[r0:r0 + seg].view(-1)[idx] = True
                r0 += seg
        for j in range(0, i2 - i1, g):
            j2 = min(j + g, i2 - i1)
            if pattern.kind == "nm":
                counts = torch.full((rows,), pattern.m - pattern.n, device=w.device)
            else:
                counts = alloc[:, j:j2].sum(dim=1)             # [out]
            local = u[i1 + j:i1 + j2, i1 + j:i1 + j2]           # [g, g]
            rem, coef = _remove_jointly(w1[:, j:j2], local, counts)
            removed[:, i1 + j:i1 + j2] = rem
            coefs[:, j:j2] = coef
            w1[:, j:] -= coef @ u[i1 + j:i1 + j2, i1 + j:i2]   # removed columns become 0
        if i2 < cols:
            w[:, i2:] -= coefs @ u[i1:i2, i2:]
    return removed


def least_squares_rows(weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor,
                       damp: float = 0.0, row_chunk: int = 256) -> torch.Tensor:
    """Step 2: per row, argmin_{v: v_Q = 0} (w - v) H (w - v)^T, i.e. v_K = H_KK^-1 (H w)_K.

    Solved in float64: activation Hessians are ill-conditioned, and an exact least-squares fit
    in float32 would lose most of its digits. weight [out, in], hessian [in, in],
    keep [out, in] bool -> [out, in] float32."""
    w = weight.double()
    h = hessian.double()
    if damp > 0:
        h = damped(h, damp)
    rhs_all = w @ h                                            # [out, in] = (H w^T)^T
    out = torch.zeros_like(w)
    counts = keep.sum(dim=1)                                   # [out]
    for k in torch.unique(counts).tolist():
        if k == 0:
            continue
        rows_k = (counts == k).nonzero().squeeze(1)
        chunk = max(1, min(row_chunk, LSQ_CHUNK_BYTES // (2 * 8 * k * k)))
        for start in range(0, rows_k.numel(), chunk):
            r = rows_k[start:start + chunk]                    # [b]
            idx = keep[r].nonzero()[:, 1].view(r.numel(), k)   # [b, k] kept columns, sorted
            hkk = h[idx[:, :, None], idx[:, None, :]]          # [b, k, k]
            rhs = rhs_all[r.unsqueeze(1), idx].unsqueeze(2)    # [b, k, 1]
            chol, info = torch.linalg.cholesky_ex(hkk)
            if int(info.max()) > 0:
                raise torch.linalg.LinAlgError("H_KK is not positive definite")
            sol = torch.cholesky_solve(rhs, chol).squeeze(2)   # [b, k]
            out[r.unsqueeze(1), idx] = sol
    return out.float()


def apt_prune_group(weights: list[torch.Tensor], hessian: torch.Tensor, pattern: Pattern,
                    params: APTParams = APTParams(), name: str = "layer") -> list[LayerResult]:
    """Layers sharing `hessian`, each [out_i, in] -> one LayerResult per layer (rows stacked)."""
    stacked = torch.cat(weights, dim=0) if len(weights) > 1 else weights[0]   # [out, in]
    segments = [w.shape[0] for w in weights]
    h, dead = revive_dead(hessian)                            # [in, in], [in]
    w = stacked.float().clone()
    w[:, dead] = 0.0
    def schedule(attempt: int) -> tuple[float, float]:
        """(mask sweep damping, least-squares damping) of an attempt: both grow tenfold, the
        least squares starting from percdamp once the exact fit has failed."""
        damp, lsq_damp = params.percdamp, params.lsq_damp
        for _ in range(attempt):
            damp, lsq_damp = damp * 10, max(lsq_damp * 10, params.percdamp)
        return damp, lsq_damp

    def solve(attempt: int) -> list[LayerResult] | None:
        damp, lsq_damp = schedule(attempt)
        removed = select_mask(w, h, pattern, params.blocksize, params.group, damp, segments)
        new = least_squares_rows(w, h, ~removed, lsq_damp, params.row_chunk)
        if not torch.isfinite(new).all():
            return None
        new = (new * ~removed).to(stacked.dtype)
        return [LayerResult(a, ~b) for a, b in zip(new.split(segments), removed.split(segments))]

    return with_damping_retries("apt", name, solve, params.max_damp_retries,
                                lambda k: "percdamp={:g}, lsq_damp={:g}".format(*schedule(k)))


@register
class APT(LayerwiseMethod):
    name = "apt"
    updates_weights = True               # the optimal multi-weight update of the kept weights
    stat = "hessian"
    capabilities = Capabilities(kinds=frozenset({"unstructured", "nm"}))
    Params = APTParams
    description = ("Optimal multi-weight removal: each row's pruned set chosen group by group with "
                   "the exact joint OBS loss, then kept weights set to the exact least-squares "
                   "reconstruction.")
    paper = "Zhao et al. 2024, Pruning Foundation Models for High Accuracy without Retraining (arXiv 2410.15567)"
    fidelity = ('No reference code was published; docs/methods/apt.md says which parts follow the'
                " paper's formulation and which are our reading. One statistics pass per block, "
                "the pruned block's outputs feeding the next (the reference default; `apt_seq` is"
                ' the true-sequential variant). Ties in the score: the lower index is removed '
                'first (stable sort), for every pattern.')

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        return self.prune_group([weight], stats, pattern, [name])[0]

    def prune_group(self, weights: list[torch.Tensor], stats: LayerStats | None,
                    pattern: Pattern, names: list[str]) -> list[LayerResult]:
        assert stats is not None and stats.hessian is not None, "apt needs a Hessian"
        label = "+".join(names)
        if not math.isfinite(float(stats.hessian.abs().max())):
            raise PruneBenchError(f"apt: layer {label} has a non-finite Hessian")
        return apt_prune_group(weights, stats.hessian, pattern, self.params, label)


@register
class APTSeq(APT):
    """The true-sequential variant (bench/engine.py): same layer rule, another schedule."""

    name = "apt_seq"
    sequential = True
    description = APT.description + " True-sequential schedule."
