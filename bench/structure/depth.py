"""Depth surgery: remove whole blocks and give back a physically shallower model.

Owns `drop_blocks`. The kept blocks stay the same objects in the same order; every submodule's
`layer_idx` (the attention or SSM cache slot) is renumbered, the config's `num_hidden_layers`
and any per-layer list (`layer_types`: Gemma3's sliding-window and global layers) follow, and
the config records `prunebench_kept_layers` (original index of every kept block) and
`prunebench_dense_layers` (the dense depth). The model stays its stock transformers class, so
`AutoModelForCausalLM.from_pretrained` reloads it with no registration; `kept_layers` tells
the structure record and the zoo check what was there before.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from bench.adapters import ArchAdapter
from methods.base import PruneBenchError


def kept_layers(config: Any, n_blocks: int) -> list[int]:
    """The dense index of each block of a model (all of them when none was removed)."""
    kept = getattr(config, "prunebench_kept_layers", None)
    return list(kept) if kept is not None else list(range(n_blocks))


def dense_layers(config: Any) -> int | None:
    """The depth the model had before any block was removed (its own when none was)."""
    return getattr(config, "prunebench_dense_layers", None) or getattr(config, "num_hidden_layers", None)


def drop_blocks(model: nn.Module, adapter: ArchAdapter, remove: list[int]) -> nn.Module:
    """Remove the blocks at (current) indices `remove` in place; returns `model`."""
    blocks = adapter.blocks(model)
    n = len(blocks)
    if len(set(remove)) != len(remove) or not all(0 <= i < n for i in remove):
        raise PruneBenchError(f"blocks to remove {sorted(remove)} must be distinct indices below {n}")
    if len(remove) >= n:
        raise PruneBenchError(f"cannot remove all {n} blocks")
    config = model.config
    before = kept_layers(config, n)
    keep = [i for i in range(n) if i not in set(remove)]
    parent_path, _, attr = adapter.blocks_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, nn.ModuleList([blocks[i] for i in keep]))
    for new_index, block in enumerate(adapter.blocks(model)):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index                  # its cache slot
    layer_types = getattr(config, "layer_types", None)
    derived = isinstance(getattr(type(config), "layer_types", None), property)   # Mamba's: computed
    if not derived and isinstance(layer_types, list) and len(layer_types) == n:
        config.layer_types = [layer_types[i] for i in keep]
    config.prunebench_dense_layers = dense_layers(config)
    config.num_hidden_layers = len(keep)
    config.prunebench_kept_layers = [before[i] for i in keep]
    return model
