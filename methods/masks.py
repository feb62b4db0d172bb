"""The only mask-selection code: which weights to keep, given a score per weight.

Owns: per-layer and per-row top-k keep masks for unstructured sparsity, per-group keep masks for
N:M sparsity (groups of M consecutive input columns in each output row), `lowest` (the indices
of the k lowest scores, for methods that choose inside their own sweep, SparseGPT and APT), and
the ONE tie rule every selector follows. Scores are "importance": higher means keep. Masks are
bool tensors, True = kept.

Tie rule: among equal scores the weight with the LOWER index (column inside a row or group,
flattened position over a layer) is removed first, i.e. a stable ascending sort, as the Wanda
reference does for its per-row masks. `torch.topk` leaves ties to the implementation, so it is
not used. Ties are common on weights dequantized from 4 bits (smollm2-135m: 15 % of its 2:4
groups tie at the cut); `tie_rule("high-index-first")` reverses them for the measurement in
bench/tie_rule.py, never for a run.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from methods.base import Pattern, PruneBenchError

TIE_RULES = ("low-index-first", "high-index-first")
_TIE = ["low-index-first"]


@contextlib.contextmanager
def tie_rule(rule: str) -> Iterator[None]:
    """Measure another tie rule inside the block (bench/tie_rule.py); runs use the default."""
    if rule not in TIE_RULES:
        raise PruneBenchError(f"tie rule '{rule}': one of {', '.join(TIE_RULES)}")
    before = _TIE[0]
    _TIE[0] = rule
    try:
        yield
    finally:
        _TIE[0] = before


def n_pruned(numel: int, sparsity: float) -> int:
    """How many of `numel` weights a target `sparsity` removes (rounded to nearest)."""
    return int(round(numel * sparsity))


def lowest(scores: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """Indices of the `k` lowest scores along `dim` (ties: the tie rule). [..., n] -> [..., k]."""
    if _TIE[0] == "low-index-first":
        return torch.sort(scores, dim=dim, stable=True).indices.narrow(dim, 0, k)
    size = scores.shape[dim]
    flipped = torch.sort(scores.flip(dim), dim=dim, stable=True).indices.narrow(dim, 0, k)
    return size - 1 - flipped


def keep_per_layer(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the `sparsity` fraction of lowest scores over the whole matrix. [out, in] -> bool."""
    k = n_pruned(scores.numel(), sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        keep.view(-1)[lowest(scores.flatten(), k)] = False       # [k] flat indices
    return keep


def keep_per_row(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the same number of lowest scores from every row. [out, in] -> bool."""
    k = n_pruned(scores.shape[1], sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, lowest(scores, k, dim=1), False)          # [out, k]
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
    keep = torch.ones_like(groups, dtype=torch.bool)
    if m > n:
        keep.scatter_(2, lowest(groups, m - n, dim=2), False)     # [out, in/m, m-n]
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
