"""RIA: relative importance and activations (Zhang et al., ICLR 2024).

The score of weight (i, j) is its relative importance within its output row and its input
column, times the input feature's activation norm to the power `a`:

    RI_ij = |W_ij| / sum_k |W_ik|  +  |W_ij| / sum_k |W_kj|
    S_ij  = RI_ij * (||X_j||_2) ** a                    (a = 0.5 in the paper and its code)

Unstructured: one cut per layer (the reference's default; `per_row: true` is its
`--per_outneuron`, Wanda's per-row comparison). N:M: the N best-scored weights of every group of
M consecutive inputs of each row. No weight update. `permute` (N:M only) first reorders the
inputs as the reference's channel reallocation (`heuristic`) and linear sum assignment (`lsa`)
do (methods/permutation.py); `ria_cp` is RIA with `permute: lsa`, its own row.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base import (Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern,
                          PruneBenchError)
from methods.masks import select_keep
from methods.permutation import PERMUTES, channel_order, keep_nm_permuted
from methods.registry import register


@dataclass(frozen=True)
class RIAParams:
    a: float = 0.5           # exponent of the activation norm ||X_j||_2
    per_row: bool = False    # compare within each output row (the reference's --per_outneuron)
    # N:M input-channel permutation: none | heuristic (--reallocation) | lsa (--reallocation --lsa)
    permute: str = "none"

    def validate(self) -> None:
        if not self.a >= 0:
            raise PruneBenchError("ria: a must be >= 0")
        if self.permute not in PERMUTES:
            raise PruneBenchError(f"ria: permute must be one of {', '.join(PERMUTES)}, "
                                  f"got '{self.permute}'")


def relative_importance(weight: torch.Tensor) -> torch.Tensor:
    """weight [out, in] -> RI [out, in] (fp32): |W| over its row sum plus |W| over its column sum.
    An all-zero row or column contributes 0 (not NaN)."""
    w = weight.abs().float()                                   # [out, in]
    row = w.sum(dim=1, keepdim=True)                           # [out, 1]
    col = w.sum(dim=0, keepdim=True)                           # [1, in]
    return (torch.where(row > 0, w / row.clamp_min(torch.finfo(w.dtype).tiny), 0.0)
            + torch.where(col > 0, w / col.clamp_min(torch.finfo(w.dtype).tiny), 0.0))


def ria_scores(weight: torch.Tensor, act_sq: torch.Tensor, a: float) -> torch.Tensor:
    """weight [out, in], act_sq [in] (sum of squared inputs) -> scores [out, in] (fp32)."""
    return relative_importance(weight) * act_sq.float().sqrt().pow(a).unsqueeze(0)


def ria_prune(weight: torch.Tensor, act_sq: torch.Tensor, pattern: Pattern, a: float = 0.5,
              per_row: bool = False, permute: str = "none") -> LayerResult:
    scores = ria_scores(weight, act_sq, a)                                   # [out, in]
    if pattern.kind != "nm" or permute == "none":
        keep = select_keep(scores, pattern, per_row=per_row)
        return LayerResult(weight * keep, keep)
    assert pattern.n is not None and pattern.m is not None
    perm = channel_order(scores, pattern.n, pattern.m, permute)              # [in]
    keep = keep_nm_permuted(scores, pattern.n, pattern.m, perm)
    return LayerResult(weight * keep, keep, in_perm=perm)


@register
class RIA(LayerwiseMethod):
    name = "ria"
    stat = "act_norm"
    Params = RIAParams
    capabilities = Capabilities(kinds=frozenset({"unstructured", "nm"}))
    description = ("Relative importance and activations: |W| relative to its row and column "
                   "sums, times ||X||_2^a; one cut per layer; no weight update.")
    paper = ("Zhang et al. 2024, Plug-and-Play: An Efficient Post-training Pruning Method for "
             "Large Language Models (ICLR 2024)")
    fidelity = ("Score and a = 0.5 as the reference code (biomedical-cybernetics/Relative-"
                "importance-and-activation-pruning): one statistics pass per block, the pruned "
                "block's outputs feeding the next. Its unstructured cut prunes every score <= the "
                "k-th smallest (ties and one extra weight can go); ours removes exactly the "
                "target count, ties broken towards the lower index (stable sort). N:M without "
                "channel permutation, the reference's default (`ria_cp` adds it).")

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        assert stats is not None and stats.act_sq is not None, "ria needs activation norms"
        return ria_prune(weight, stats.act_sq, pattern, self.params.a, self.params.per_row,
                         self.params.permute)


@dataclass(frozen=True)
class RIACPParams(RIAParams):
    permute: str = "lsa"


@register
class RIAChannelPermuted(RIA):
    """RIA at N:M with the reference's channel permutation (`--reallocation --lsa`)."""

    name = "ria_cp"
    Params = RIACPParams
    capabilities = Capabilities(kinds=frozenset({"nm"}))
    description = ("RIA at N:M after permuting each layer's inputs (heuristic reallocation, then "
                   "one linear-sum-assignment round per group position) so that the N:M groups "
                   "keep more score; the kernel gathers its input through the permutation.")
    fidelity = ("As the reference's `--reallocation --lsa` (importance 'sum', one LSA round per "
                "group position, over the whole layer: its non-`--fast` path). The permutation "
                "of every layer is saved with the checkpoint and the N:M check on the saved "
                "weights applies it; the 2:4 speed kernels here do not gather inputs.")
