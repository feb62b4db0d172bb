"""Magnitude pruning: remove the smallest |W|.

Unstructured: one threshold per layer (the global-within-layer k smallest magnitudes).
N:M: keep the N largest |W| in every group of M consecutive inputs of each row. Data-free.
"""
from __future__ import annotations

import torch

from methods.base import Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern
from methods.masks import select_keep
from methods.registry import register


def magnitude_prune(weight: torch.Tensor, pattern: Pattern) -> LayerResult:
    """weight [out, in] -> pruned copy and keep mask."""
    keep = select_keep(weight.abs().float(), pattern, per_row=False)
    return LayerResult(weight * keep, keep)


@register
class Magnitude(LayerwiseMethod):
    name = "magnitude"
    stat = "none"
    capabilities = Capabilities(kinds=frozenset({"unstructured", "nm"}), needs_calibration=False)
    description = "Remove the weights of smallest absolute value (per-layer threshold; per-row N:M)."
    paper = "Han et al. 2015, Learning both Weights and Connections (arXiv 1506.02626)"
    fidelity = ('As the magnitude baseline of the Wanda and SparseGPT repositories: unstructured '
                'removes the smallest |W| of each layer, N:M the smallest in each group. Their '
                'code cuts at a threshold (every weight equal to it goes, so ties can overshoot '
                'the target); ours removes exactly the target count. Ties in the score: the lower'
                ' index is removed first (stable sort), for every pattern.')

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        return magnitude_prune(weight, pattern)
