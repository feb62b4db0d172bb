"""Structural surgery: remove whole coupled units from a model and give back a smaller model.

Owns: counting a block's units (`units_of`), gathering a parameter's per-unit view
(`unit_view`, used by importance scores), slicing a block down to chosen units (`resize_block`,
which also serves the registered per-layer-width classes in bench.slim_models), counting the
structured-prunable parameters, and `shrink`: slice every block, write the per-layer widths into
a config of the registered `prunebench_<arch>` type and rebuild the model from it, so the object
a method hands on is exactly what `AutoModelForCausalLM.from_pretrained` later loads.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from bench.adapters import ArchAdapter, Coupled
from methods.base import PruneBenchError

log = logging.getLogger(__name__)
LayerUnits = list[dict[str, int]]   # per block: unit kind -> number of units


def _param(block: nn.Module, path: str) -> tuple[nn.Module, str, torch.Tensor] | None:
    owner_path, _, name = path.rpartition(".")
    owner = block.get_submodule(owner_path) if owner_path else block
    tensor = getattr(owner, name, None)
    return None if tensor is None else (owner, name, tensor)


def layer_units(model: nn.Module, adapter: ArchAdapter) -> LayerUnits:
    """Units of every kind in every block, read from the config (per-layer for pruned models)."""
    per_layer = getattr(model.config, "layer_units", None)
    if per_layer:
        return [dict(u) for u in per_layer]
    n = len(adapter.blocks(model))
    return [{c.kind: int(getattr(model.config, c.config_attrs[0])) for c in adapter.coupled}
            for _ in range(n)]


def unit_view(tensor: torch.Tensor, dim: int, copies: int, n_units: int) -> torch.Tensor:
    """tensor -> [n_units, rest]: every element of one unit in one row (copies folded in)."""
    t = tensor.movedim(dim, 0)                                  # [copies*n_units*width, ...]
    width = t.shape[0] // (copies * n_units)
    if width * copies * n_units != t.shape[0]:
        raise PruneBenchError(f"dim {dim} of size {t.shape[0]} does not split into "
                              f"{copies} x {n_units} units")
    t = t.reshape(copies, n_units, width, -1)                   # [copies, units, width, rest]
    return t.transpose(0, 1).reshape(n_units, -1)


def slice_params(block: nn.Module, coupled: Coupled) -> list[tuple[torch.Tensor, int, int]]:
    """(parameter, dim, copies) of every slice of `coupled` that exists in this block."""
    return [(found[2], dim, copies) for path, dim, copies in coupled.slices
            if (found := _param(block, path)) is not None]


def _element_index(keep: torch.Tensor, size: int, copies: int, n_units: int) -> torch.Tensor:
    width = size // (copies * n_units)
    per_unit = (keep[:, None] * width
                + torch.arange(width, device=keep.device)[None, :]).reshape(-1)     # [k*width]
    return torch.cat([per_unit + c * n_units * width for c in range(copies)])


@torch.no_grad()
def resize_block(block: nn.Module, coupled: Coupled, n_units: int, keep: torch.Tensor) -> None:
    """Keep only units `keep` (ascending indices < n_units) of one kind in one block, in place."""
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    if keep.numel() == 0:
        raise PruneBenchError(f"cannot remove every '{coupled.kind}' unit of a block")
    for path, dim, copies in coupled.slices:
        found = _param(block, path)
        if found is None:
            continue
        owner, name, tensor = found
        idx = _element_index(keep, tensor.shape[dim], copies, n_units).to(tensor.device)
        new = tensor.index_select(dim, idx)
        setattr(owner, name, nn.Parameter(new, requires_grad=tensor.requires_grad)
                if isinstance(tensor, nn.Parameter) else new)
        if isinstance(owner, nn.Linear):
            owner.out_features, owner.in_features = owner.weight.shape
    for path, attr in coupled.module_attrs:
        module = block.get_submodule(path)
        old = int(getattr(module, attr))
        setattr(module, attr, old * int(keep.numel()) // n_units)


def structured_params(model: nn.Module, adapter: ArchAdapter) -> dict[str, int]:
    """Parameters that belong to structural units, per block and unit kind ('{i}.{kind}')."""
    out: dict[str, int] = {}
    for i, block in enumerate(adapter.blocks(model)):
        for c in adapter.coupled:
            out[f"{i}.{c.kind}"] = sum(found[2].numel() for path, _, _ in c.slices
                                       if (found := _param(block, path)) is not None)
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
    from bench import slim_models

    blocks = adapter.blocks(model)
    if len(keep) != len(blocks):
        raise PruneBenchError(f"keep lists {len(keep)} blocks, the model has {len(blocks)}")
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
