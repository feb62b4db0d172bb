"""The only mask-selection code: which weights to keep, given a score per weight.

Owns: per-layer and per-row top-k keep masks for unstructured sparsity and per-group keep masks
for N:M sparsity (groups of M consecutive input columns in each output row). Scores are
"importance": higher means keep. Masks are bool tensors, True = kept.
"""
from __future__ import annotations

import torch

from methods.base import Pattern, PruneBenchError


def n_pruned(numel: int, sparsity: float) -> int:
    """How many of `numel` weights a target `sparsity` removes (rounded to nearest)."""
    return int(round(numel * sparsity))


def keep_per_layer(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the `sparsity` fraction of lowest scores over the whole matrix. [out, in] -> bool."""
    k = n_pruned(scores.numel(), sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(scores.flatten(), k, largest=False).indices  # [k]
        keep.view(-1)[idx] = False
    return keep


def keep_per_row(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the same number of lowest scores from every row. [out, in] -> bool."""
    k = n_pruned(scores.shape[1], sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(scores, k, dim=1, largest=False).indices  # [out, k]
        keep.scatter_(1, idx, False)
    return keep


def check_nm(in_features: int, pattern: Pattern, name: str = "layer") -> None:
    assert pattern.m is not None
    if in_features % pattern.m != 0:
        raise PruneBenchError(f"pattern '{pattern.slug}': {name} has {in_features} input features, "
                              f"not divisible by M={pattern.m}")


def keep_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the `n` highest scores in every group of `m` consecutive columns. [out, in] -> bool."""
    rows, cols = scores.shape
    if cols % m != 0:
        raise PruneBenchError(f"N:M {n}:{m}: {cols} input features not divisible by {m}")
    groups = scores.reshape(rows, cols // m, m)                    # [out, in/m, m]
    idx = torch.topk(groups, n, dim=2).indices                      # [out, in/m, n]
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True)
    return keep.reshape(rows, cols)


def select_keep(scores: torch.Tensor, pattern: Pattern, per_row: bool) -> torch.Tensor:
    """Keep mask for `pattern`: unstructured per row or per layer, or N:M groups."""
    if pattern.kind == "unstructured":
        return keep_per_row(scores, pattern.sparsity) if per_row else keep_per_layer(
            scores, pattern.sparsity)
    if pattern.kind == "nm":
        assert pattern.n is not None and pattern.m is not None
        return keep_nm(scores, pattern.n, pattern.m)
    if pattern.kind == "dense":
        return torch.ones_like(scores, dtype=torch.bool)
    raise PruneBenchError(f"pattern kind '{pattern.kind}' has no element mask")
