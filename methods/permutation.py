"""Input-channel permutation for N:M masks (RIA's channel reallocation and linear sum assignment).

Owns: the permutation that gives a layer's N:M mask more kept score, and the mask under it.
An N:M group is M CONSECUTIVE inputs; which inputs share a group is a free choice when the
kernel gathers its input through a permutation (y = W[:, p] x[p]). With `perm` [in] the
permuted weight W[:, perm] has N kept weights in every group of M consecutive columns; in the
original column order the mask is N:M only after that permutation, so a run records it
(bench/engine.py, bench/evaluation/evaluate.py check it on the saved weights).

- `heuristic_order`: the reference's "heuristic channel reallocation" (importance "sum"):
  inputs sorted by their column score sum are dealt out so that every group takes one input
  from each of the M quantiles, alternately in ascending and descending order.
- `lsa_refine`: for each position c of a group in turn, the inputs sitting at position c are
  reassigned to groups by a linear sum assignment that maximises the total kept score with the
  other M-1 inputs of every group fixed (the reference's `--lsa`, one round per position).
  The current assignment is one of the candidates, so no round lowers the kept score.

Kept score of a group per row: the sum of its N highest scores (ties do not change it).
Reference: biomedical-cybernetics/Relative-importance-and-activation-pruning, lib/prune.py
(read at 32bb115; none of it copied). Scores are importances: higher means keep.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from methods.masks import keep_nm

PERMUTES = ("none", "heuristic", "lsa")
_CHUNK = 1 << 24          # elements of one [out, chunk, G] slab of the assignment matrix


def kept_score(scores: torch.Tensor, perm: torch.Tensor | None, n: int, m: int) -> float:
    """Sum over rows and groups of the N highest scores of each group of M consecutive columns
    of scores[:, perm]. scores [out, in], perm [in] or None (identity)."""
    s = scores if perm is None else scores[:, perm]
    groups = s.double().reshape(s.shape[0], -1, m)                            # [out, G, m]
    return float(groups.topk(n, dim=2).values.sum()) if n > 0 else 0.0


def heuristic_order(scores: torch.Tensor, m: int) -> torch.Tensor:
    """scores [out, in] -> perm [in] (long): the reference's channel reallocation. Position
    g*m + i holds the g-th input of quantile i of the column sums (quantiles of odd i reversed)."""
    cols = scores.shape[1]
    g = cols // m
    order = torch.sort(scores.double().sum(0), stable=True).indices          # [in] ascending
    perm = torch.empty(cols, dtype=torch.long)
    for i in range(m):
        chunk = order[i * g:(i + 1) * g]                                      # [G]
        perm[i::m] = chunk.flip(0) if i % 2 == 1 else chunk
    return perm


def _assignment_values(s: torch.Tensor, c: int, n: int, m: int) -> torch.Tensor:
    """V [G, G] (float64): V[a, b] = kept score of group b with its position-c input replaced by
    group a's. s [out, in] are the permuted scores. The N highest of (others + x) sum to
    top_n(others) + max(0, x - nth_largest(others)), so V is one slab of ReLUs per chunk."""
    out = s.shape[0]
    groups = s.double().reshape(out, -1, m)                                   # [out, G, m]
    g = groups.shape[1]
    others = torch.cat([groups[:, :, :c], groups[:, :, c + 1:]], dim=2)       # [out, G, m-1]
    top = others.topk(n, dim=2).values                                        # [out, G, n]
    base = top.sum(dim=(0, 2))                                                # [G]
    nth = top[:, :, -1]                                                       # [out, G]
    x = groups[:, :, c]                                                       # [out, G]
    values = torch.empty(g, g, dtype=torch.float64)
    step = max(1, _CHUNK // max(1, out * g))
    for a0 in range(0, g, step):
        xa = x[:, a0:a0 + step]                                               # [out, k]
        values[a0:a0 + step] = (xa.unsqueeze(2) - nth.unsqueeze(1)).clamp_min(0).sum(0)
    return values + base.unsqueeze(0)


def lsa_refine(scores: torch.Tensor, perm: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """One linear-sum-assignment round per group position, starting from `perm` [in];
    returns the refined perm [in] (long). Each round keeps or raises `kept_score`."""
    if not 0 < n < m:
        return perm
    perm = perm.clone()
    for c in range(m):
        values = _assignment_values(scores[:, perm], c, n, m)                 # [G, G]
        rows, cols = linear_sum_assignment(values.numpy(), maximize=True)
        at_c = perm[c::m]                                  # [G] view: the inputs at position c
        at_c[torch.as_tensor(cols)] = at_c.clone()[torch.as_tensor(rows)]   # group a's -> cols[a]
    return perm


def channel_order(scores: torch.Tensor, n: int, m: int, permute: str) -> torch.Tensor | None:
    """The input order for an N:M mask: None ("none"), the heuristic reallocation
    ("heuristic"), or the heuristic refined by linear sum assignment ("lsa")."""
    if permute == "none":
        return None
    perm = heuristic_order(scores, m)
    return lsa_refine(scores, perm, n, m) if permute == "lsa" else perm


def keep_nm_permuted(scores: torch.Tensor, n: int, m: int, perm: torch.Tensor | None
                     ) -> torch.Tensor:
    """Keep mask [out, in] (original column order) whose columns `perm` form N:M groups."""
    if perm is None:
        return keep_nm(scores, n, m)
    keep = torch.empty_like(scores, dtype=torch.bool)
    keep[:, perm] = keep_nm(scores[:, perm], n, m)
    return keep


def is_permutation(perm: torch.Tensor, size: int) -> bool:
    return (perm.dim() == 1 and perm.numel() == size and not perm.is_floating_point()
            and bool((torch.sort(perm).values == torch.arange(size, device=perm.device)).all()))


def max_group_nonzeros(weight: torch.Tensor, m: int, perm: torch.Tensor | None = None) -> int:
    """The most nonzeros any group of M consecutive columns of weight[:, perm] holds.
    weight [out, in], perm [in] or None (identity)."""
    w = weight if perm is None else weight[:, perm.to(weight.device)]
    return int((w != 0).reshape(w.shape[0], -1, m).sum(-1).max())           # over [out, in/m]
