"""A plugin method that imports fine but has a bug: it fails on MLP down-projections, as a
plugin with an indexing error would. PruneBench must name it, its distribution and the layer."""
from __future__ import annotations

from typing import ClassVar

import torch

from methods.base import Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern


class Faulty(LayerwiseMethod):
    name: ClassVar[str] = "faulty_method"
    stat: ClassVar[str] = "none"
    capabilities: ClassVar[Capabilities] = Capabilities(kinds=frozenset({"unstructured", "nm"}),
                                                        needs_calibration=False)
    description: ClassVar[str] = "fails on MLP down-projections (a plugin with a bug; tests)"

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        if name.endswith("down_proj"):
            return [][0]                     # the bug: IndexError
        keep = torch.ones_like(weight, dtype=torch.bool)
        return LayerResult(weight.clone(), keep)
