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
from methods.masks import n_pruned
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


def inverse_hessian_cholesky(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """hessian [in, in] (dead inputs already handled) -> upper Cholesky factor U of (H + damp I)^-1."""
    damp = percdamp * torch.mean(torch.diag(hessian))
    h = hessian + damp * torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    lower = torch.linalg.cholesky(h)
    hinv = torch.cholesky_inverse(lower)
    return torch.linalg.cholesky(hinv, upper=True)


def _sparsegpt_once(weight: torch.Tensor, hessian: torch.Tensor, pattern: Pattern,
                    blocksize: int, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.float().clone()                                # [out, in]
    h = hessian.float().clone()                               # [in, in]
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = inverse_hessian_cholesky(h, percdamp)              # [in, in] upper
    pruned = torch.zeros_like(w, dtype=torch.bool)            # [out, in] True = removed
    m = pattern.m or 0
    n_remove = (m - (pattern.n or 0)) if pattern.kind == "nm" else 0
    if pattern.kind == "nm" and blocksize % m != 0:
        blocksize = max(m, (blocksize // m) * m)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()                              # [out, B]
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]                            # [B, B]
        d1 = torch.diag(hinv1)                                # [B]
        if pattern.kind == "unstructured":
            saliency = w1 ** 2 / d1.unsqueeze(0) ** 2         # [out, B]
            k = n_pruned(saliency.numel(), pattern.sparsity)
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
            if k > 0:
                idx = torch.topk(saliency.flatten(), k, largest=False).indices
                mask1.view(-1)[idx] = True
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(count):
            col = w1[:, i]                                    # [out]
            d = hinv1[i, i]
            if n_remove and i % m == 0:
                sal = w1[:, i:i + m] ** 2 / d1[i:i + m].unsqueeze(0) ** 2   # [out, m]
                idx = torch.topk(sal, n_remove, dim=1, largest=False).indices
                mask1[:, i:i + m].scatter_(1, idx, True)
            q = col.masked_fill(mask1[:, i], 0.0)
            q1[:, i] = q
            err = (col - q) / d                               # [out]
            w1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i1:i2] = q1
        pruned[:, i1:i2] = mask1
        if i2 < cols:
            w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    keep = ~pruned
    return (w * keep).to(weight.dtype), keep


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, pattern: Pattern,
                    blocksize: int = 128, percdamp: float = 0.01,
                    max_damp_retries: int = 3, name: str = "layer") -> LayerResult:
    """weight [out, in], hessian [in, in] -> pruned + OBS-updated weight and keep mask."""
    damp = percdamp
    for attempt in range(max_damp_retries + 1):
        try:
            new, keep = _sparsegpt_once(weight, hessian, pattern, blocksize, damp)
            if torch.isfinite(new).all():
                return LayerResult(new, keep)
            reason = "non-finite weights"
        except torch.linalg.LinAlgError as exc:
            reason = f"Cholesky failed ({str(exc).splitlines()[0]})"
        if attempt < max_damp_retries:
            log.warning("sparsegpt %s: %s at percdamp=%g; retrying with %g", name, reason, damp,
                        damp * 10)
            damp *= 10
    raise PruneBenchError(f"sparsegpt: layer {name} still has {reason} after "
                          f"{max_damp_retries} damping increases (last percdamp={damp:g})")


@register
class SparseGPT(LayerwiseMethod):
    name = "sparsegpt"
    stat = "hessian"
    capabilities = Capabilities(kinds=frozenset({"unstructured", "nm"}))
    Params = SparseGPTParams
    description = ("Approximate OBS reconstruction: adaptive per-block masks, Cholesky of the damped "
                   "inverse Hessian, lazy batched weight updates.")
    paper = "Frantar & Alistarh 2023, SparseGPT (arXiv 2301.00774)"

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        assert stats is not None and stats.hessian is not None, "sparsegpt needs a Hessian"
        p = self.params
        if not math.isfinite(float(stats.hessian.abs().max())):
            raise PruneBenchError(f"sparsegpt: layer {name} has a non-finite Hessian")
        return sparsegpt_prune(weight, stats.hessian, pattern, p.blocksize, p.percdamp,
                               p.max_damp_retries, name)
