"""random: remove weights chosen uniformly at random, the sanity baseline.

Any method worth its compute must beat this. Every output row loses the same number of
weights (N:M: N random survivors in every group of M). The draw is seeded from the `seed`
hyperparameter and the layer's name, so a run is reproducible and layers differ.
Data-free: the weights' values are never looked at.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import (Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern,
                          PruneBenchError)
from methods.masks import select_keep
from methods.registry import register


@dataclass(frozen=True)
class RandomParams:
    """Hyperparameters: the defaults define the method; a grid config overrides them by name."""

    seed: int = 0               # with the layer's name, seeds each layer's draw

    def validate(self) -> None:
        if self.seed < 0:
            raise PruneBenchError("random: seed must be >= 0")


def layer_generator(seed: int, layer: str) -> torch.Generator:
    """A CPU generator for one layer: the run's seed and a stable hash of the layer's name."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(layer.encode()))


def random_prune(weight: torch.Tensor, pattern: Pattern, generator: torch.Generator) -> LayerResult:
    """weight [out, in] -> pruned copy (zeros where pruned) and keep mask [out, in]."""
    scores = torch.rand(weight.shape, generator=generator).to(weight.device)   # [out, in]
    keep = select_keep(scores, pattern, per_row=True)
    return LayerResult(weight * keep, keep)


@register
class Random(LayerwiseMethod):
    name: ClassVar[str] = "random"
    stat: ClassVar[str] = "none"
    capabilities: ClassVar[Capabilities] = Capabilities(kinds=frozenset({"unstructured", "nm"}),
                                                        needs_calibration=False)
    Params: ClassVar[type] = RandomParams
    description: ClassVar[str] = ("Sanity baseline: weights removed uniformly at random (the same "
                                  "count per row; seeded per layer).")
    paper: ClassVar[str] = ""

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        return random_prune(weight, pattern, layer_generator(self.params.seed, name))
