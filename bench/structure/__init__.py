"""Structural surgery: remove whole coupled units from a model and give back a smaller model.

Owns counting the structured-prunable parameters, `describe`, and `shrink`: slice every block
(bench/structure/slicing.py, whose `layer_units`, `unit_view`, `slice_params` and `resize_block` are
re-exported here), write the per-layer widths into
a config of the registered `prunebench_<arch>` type and rebuild the model from it, so the object
a method hands on is exactly what `AutoModelForCausalLM.from_pretrained` later loads.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from bench.structure import slim_models
from bench.adapters import ArchAdapter
from bench.structure.slicing import (  # noqa: F401 (re-exported: methods and plugins import these from here)
    LayerUnits, layer_units, param_at, resize_block, slice_params, unit_view)
from methods.base import PruneBenchError

log = logging.getLogger(__name__)


def structured_params(model: nn.Module, adapter: ArchAdapter) -> dict[str, int]:
    """Parameters that belong to structural units, per block and unit kind ('{i}.{kind}')."""
    out: dict[str, int] = {}
    for i, block in enumerate(adapter.blocks(model)):
        for c in adapter.coupled:
            out[f"{i}.{c.kind}"] = sum(found[2].numel() for path, _, _ in c.slices
                                       if (found := param_at(block, path)) is not None)
    return out


def total_params(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:           # tied embeddings count once
            seen.add(id(p))
            total += p.numel()
    return total


@torch.no_grad()
def shrink(model: nn.Module, adapter: ArchAdapter, keep: list[dict[str, torch.Tensor]],
           inplace: bool = False) -> nn.Module:
    """Remove every unit not in `keep` (per block: kind -> kept unit indices); return the model
    rebuilt as its registered `prunebench_<arch>` class with per-layer widths in the config.
    `model` is left untouched unless `inplace` (then it is consumed: sliced, not rebuilt)."""
    blocks = adapter.blocks(model)
    if len(keep) != len(blocks):
        raise PruneBenchError(f"keep lists {len(keep)} blocks, the model has {len(blocks)}")
    for c in adapter.coupled:
        c.check(model.config)
    before = layer_units(model, adapter)
    work = model if inplace else copy.deepcopy(model)
    for i, block in enumerate(adapter.blocks(work)):
        for c in adapter.coupled:
            if c.kind in keep[i]:
                resize_block(block, c, before[i][c.kind], keep[i][c.kind])
    after = [{c.kind: int(keep[i][c.kind].numel()) if c.kind in keep[i] else before[i][c.kind]
              for c in adapter.coupled} for i in range(len(blocks))]
    config = slim_models.slim_config(model.config, adapter.arch, after)
    return slim_models.rebuild(work, config)


def describe(model: nn.Module, adapter: ArchAdapter) -> dict[str, Any]:
    """Per-layer unit counts and the structured-prunable parameter count, for the run JSON."""
    units = layer_units(model, adapter)
    return {"layer_units": units, "structured_params": sum(structured_params(model, adapter).values()),
            "total_params": total_params(model)}
