"""The dense baseline: no pruning. Every model's reference row on the leaderboard."""
from __future__ import annotations

import torch

from methods.base import Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern
from methods.registry import register


@register
class Dense(LayerwiseMethod):
    name = "dense"
    kind = "baseline"
    capabilities = Capabilities(kinds=frozenset({"dense"}), needs_calibration=False)
    description = "Unpruned model: the reference every other run is compared with."

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        return LayerResult(weight, torch.ones_like(weight, dtype=torch.bool))
