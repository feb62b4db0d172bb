"""Slicing whole units out of one block: the low-level surgery of structured pruning.

Owns counting a block's units (`layer_units`, from the config; per layer for pruned models),
a parameter's per-unit view (`unit_view`, used by importance scores), the slices of a coupled
unit kind in a block (`slice_params`) and `resize_block`: keep chosen units of one kind in one
block, in place. bench/structure/__init__.py (`shrink`) and the registered per-layer-width classes of
bench/structure/slim_models.py both build on it.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.adapters import ArchAdapter, Coupled
from methods.base import PruneBenchError

LayerUnits = list[dict[str, int]]   # per block: unit kind -> number of units


def param_at(block: nn.Module, path: str) -> tuple[nn.Module, str, torch.Tensor] | None:
    """(owner module, attribute name, tensor) of `path` inside `block`; None where it is absent."""
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
            if (found := param_at(block, path)) is not None]


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
        found = param_at(block, path)
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
