"""row_magnitude: remove the smallest |W| of every output row (magnitude with Wanda's
per-output comparison group; Sun et al. 2023, section 5, show the group alone matters).

An outside method: it imports PruneBench's public pieces (methods.base, methods.masks) and is
found through the `prunebench.methods` entry point, never by editing PruneBench.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from methods.base import Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern
from methods.masks import select_keep


def row_magnitude_prune(weight: torch.Tensor, pattern: Pattern) -> LayerResult:
    """weight [out, in] -> pruned copy and keep mask; every row loses the same count."""
    keep = select_keep(weight.abs().float(), pattern, per_row=True)   # [out, in] bool
    return LayerResult(weight * keep, keep)


class RowMagnitude(LayerwiseMethod):
    name: ClassVar[str] = "row_magnitude"
    stat: ClassVar[str] = "none"
    capabilities: ClassVar[Capabilities] = Capabilities(kinds=frozenset({"unstructured", "nm"}),
                                                        needs_calibration=False)
    description: ClassVar[str] = "smallest |W| removed within each output row (plugin example)"
    paper: ClassVar[str] = "Sun et al. 2023, arXiv 2306.11695, section 5 (comparison group)"

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        return row_magnitude_prune(weight, pattern)
