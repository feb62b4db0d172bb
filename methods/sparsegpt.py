"""SparseGPT: one-shot pruning with OBS weight updates (Frantar & Alistarh 2023).

Given the damped Hessian H = 2 X X^T / n of a layer's inputs, the method walks the columns in
blocks of `blocksize`. Unstructured: inside each block the mask is chosen adaptively from the
OBS saliency w^2 / [H^-1]_jj^2 over the whole block (all rows), pruning exactly the target
fraction of the block. N:M: every M columns, each row prunes its (M-N) lowest-saliency weights.
Each pruned weight's error is spread over the remaining columns through the upper Cholesky
factor of H^-1; updates to later blocks are batched once per block ("lazy batch updates").
If the Hessian is not positive definite or the result is not finite, damping is raised 10x
and the layer retried, up to `max_damp_retries` times, then a clear error is raised.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from methods.base import (Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern,
                          PruneBenchError)
from methods.hessian import inverse_hessian_cholesky, revive_dead, tenfold, with_damping_retries
from methods.masks import lowest, n_pruned
from methods.registry import register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparseGPTParams:
    blocksize: int = 128
    percdamp: float = 0.01
    max_damp_retries: int = 3

    def validate(self) -> None:
        if self.blocksize <= 0:
            raise PruneBenchError("sparsegpt: blocksize must be positive")
        if not self.percdamp > 0:
            raise PruneBenchError("sparsegpt: percdamp must be > 0")
        if self.max_damp_retries < 0:
            raise PruneBenchError("sparsegpt: max_damp_retries must be >= 0")


def _sparsegpt_once(weight: torch.Tensor, hessian: torch.Tensor, pattern: Pattern,
                    blocksize: int, percdamp: float,
                    segments: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] (rows of one or more layers sharing `hessian`) -> (pruned weight, keep).

    `segments` are the row counts of the stacked layers: the unstructured mask of a block is
    chosen inside each segment separately, so stacking layers changes nothing but speed.
    """
    w = weight.float().clone()                                # [out, in]
    h, dead = revive_dead(hessian)                            # [in, in], [in]
    rows, cols = w.shape
    segments = segments or [rows]
    w[:, dead] = 0.0
    hinv = inverse_hessian_cholesky(h, percdamp)              # [in, in] upper
    pruned = torch.zeros_like(w, dtype=torch.bool)            # [out, in] True = removed
    m = pattern.m or 0
    n_remove = (m - (pattern.n or 0)) if pattern.kind == "nm" else 0
    if pattern.kind == "nm" and blocksize % m != 0:
        blocksize = max(m, (blocksize // m) * m)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2]                                      # [out, B] view, updated in place
        hinv1 = hinv[i1:i2, i1:i2]                            # [B, B]
        d1 = torch.diag(hinv1)                                # [B]
        mask1 = torch.zeros(rows, i2 - i1, dtype=torch.bool, device=w.device)  # [out, B]
        if pattern.kind == "unstructured":
            saliency = w1 ** 2 / d1.unsqueeze(0) ** 2         # [out, B]
            r0 = 0
            for seg in segments:                              # one adaptive mask per layer
                k = n_pruned(seg * (i2 - i1), pattern.sparsity)
                if k > 0:
                    idx = lowest(saliency[r0:r0 + seg].flatten(), k)
                    mask1[r0:r0 + seg].view(-1)[idx] = True
                r0 += seg
        scale = mask1.float() / d1.unsqueeze(0)               # [out, B] err = w * scale
        err1 = torch.empty(i2 - i1, rows, dtype=w.dtype, device=w.device)  # [B, out]
        for i in range(i2 - i1):
            if n_remove and i % m == 0:
                sal = w1[:, i:i + m] ** 2 / d1[i:i + m].unsqueeze(0) ** 2   # [out, m]
                idx = lowest(sal, n_remove, dim=1)
                mask1[:, i:i + m].scatter_(1, idx, True)
                scale[:, i:i + m] = mask1[:, i:i + m].float() / d1[i:i + m].unsqueeze(0)
            err = torch.mul(w1[:, i], scale[:, i], out=err1[i])            # [out]
            w1[:, i:].addr_(err, hinv1[i, i:], alpha=-1.0)    # column i becomes its pruned value
        pruned[:, i1:i2] = mask1
        if i2 < cols:
            w[:, i2:].addmm_(err1.t(), hinv[i1:i2, i2:], alpha=-1.0)
    keep = ~pruned
    return (w * keep).to(weight.dtype), keep


def sparsegpt_prune_group(weights: list[torch.Tensor], hessian: torch.Tensor, pattern: Pattern,
                          blocksize: int = 128, percdamp: float = 0.01, max_damp_retries: int = 3,
                          name: str = "layer") -> list[LayerResult]:
    """Layers sharing `hessian` ([in, in]), each [out_i, in] -> one LayerResult per layer.

    The layers are stacked row-wise and solved at once (one Cholesky, one column sweep); rows are
    independent in SparseGPT, so this equals pruning each layer alone.
    """
    stacked = torch.cat(weights, dim=0) if len(weights) > 1 else weights[0]
    segments = [w.shape[0] for w in weights]

    def solve(attempt: int) -> list[LayerResult] | None:
        new, keep = _sparsegpt_once(stacked, hessian, pattern, blocksize,
                                    tenfold(percdamp, attempt), segments)
        if not torch.isfinite(new).all():
            return None
        return [LayerResult(a, b) for a, b in zip(new.split(segments), keep.split(segments))]

    return with_damping_retries("sparsegpt", name, solve, max_damp_retries,
                                lambda k: f"percdamp={tenfold(percdamp, k):g}")


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, pattern: Pattern,
                    blocksize: int = 128, percdamp: float = 0.01,
                    max_damp_retries: int = 3, name: str = "layer") -> LayerResult:
    """weight [out, in], hessian [in, in] -> pruned + OBS-updated weight and keep mask."""
    return sparsegpt_prune_group([weight], hessian, pattern, blocksize, percdamp,
                                 max_damp_retries, name)[0]


@register
class SparseGPT(LayerwiseMethod):
    name = "sparsegpt"
    updates_weights = True               # the OBS update of the kept weights
    stat = "hessian"
    capabilities = Capabilities(kinds=frozenset({"unstructured", "nm"}))
    Params = SparseGPTParams
    description = ("Approximate OBS reconstruction: adaptive per-block masks, Cholesky of the damped "
                   "inverse Hessian, lazy batched weight updates.")
    paper = "Frantar & Alistarh 2023, SparseGPT (arXiv 2301.00774)"
    fidelity = ("One statistics pass per block, the pruned block's outputs feeding the next (the "
                'reference default; `sparsegpt_seq` is the true-sequential variant). Same '
                'damping, block size, adaptive mask and lazy updates as the reference (identical '
                "masks on a layer, tested). The reference's unstructured mask cuts at a threshold"
                ' per block; ours removes exactly the target count. Hessians summed in float64. '
                'Ties in the score: the lower index is removed first (stable sort), for every '
                'pattern.')

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        assert stats is not None and stats.hessian is not None, "sparsegpt needs a Hessian"
        p = self.params
        if not math.isfinite(float(stats.hessian.abs().max())):
            raise PruneBenchError(f"sparsegpt: layer {name} has a non-finite Hessian")
        return sparsegpt_prune(weight, stats.hessian, pattern, p.blocksize, p.percdamp,
                               p.max_damp_retries, name)

    def prune_group(self, weights: list[torch.Tensor], stats: LayerStats | None,
                    pattern: Pattern, names: list[str]) -> list[LayerResult]:
        assert stats is not None and stats.hessian is not None, "sparsegpt needs a Hessian"
        p = self.params
        label = "+".join(names)
        if not math.isfinite(float(stats.hessian.abs().max())):
            raise PruneBenchError(f"sparsegpt: layer {label} has a non-finite Hessian")
        return sparsegpt_prune_group(weights, stats.hessian, pattern, p.blocksize, p.percdamp,
                                     p.max_damp_retries, label)


@register
class SparseGPTSeq(SparseGPT):
    """The true-sequential variant (bench/engine.py): same layer rule, another schedule."""

    name = "sparsegpt_seq"
    sequential = True
    description = SparseGPT.description + " True-sequential schedule."
