"""Wanda: prune by |W_ij| * ||X_j||_2, compared within each output row (Sun et al. 2023).

The statistic is the sum of squared inputs per input feature over the calibration tokens;
the score of weight (i, j) is |W_ij| * sqrt(sum_t x_tj^2). Unstructured sparsity removes the
same fraction from every row; N:M keeps the N best-scored weights of every M-group.
"""
from __future__ import annotations

import torch

from methods.base import Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern
from methods.masks import select_keep
from methods.registry import register


def wanda_scores(weight: torch.Tensor, act_sq: torch.Tensor) -> torch.Tensor:
    """weight [out, in], act_sq [in] -> scores [out, in] (fp32)."""
    return weight.abs().float() * act_sq.float().sqrt().unsqueeze(0)


def wanda_prune(weight: torch.Tensor, act_sq: torch.Tensor, pattern: Pattern) -> LayerResult:
    keep = select_keep(wanda_scores(weight, act_sq), pattern, per_row=True)
    return LayerResult(weight * keep, keep)


@register
class Wanda(LayerwiseMethod):
    name = "wanda"
    stat = "act_norm"
    capabilities = Capabilities(kinds=frozenset({"unstructured", "nm"}))
    description = ("Weights and activations: score |W|*||X||_2 per input feature, pruned per "
                   "output row; no weight update.")
    paper = "Sun et al. 2023, A Simple and Effective Pruning Approach for LLMs (arXiv 2306.11695)"
    fidelity = ("One statistics pass per block, the pruned block's outputs feeding the next (the "
                'reference default; `wanda_seq` is the true-sequential variant). Scores and per-'
                "row masks as the reference's stable sort; its N:M path uses topk, whose ties are"
                ' left to the implementation. Ties in the score: the lower index is removed first'
                ' (stable sort), for every pattern.')

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        assert stats is not None and stats.act_sq is not None, "wanda needs activation norms"
        return wanda_prune(weight, stats.act_sq, pattern)


@register
class WandaSeq(Wanda):
    """The true-sequential variant (bench/engine.py): same layer rule, another schedule."""

    name = "wanda_seq"
    sequential = True
    description = Wanda.description + " True-sequential schedule."
