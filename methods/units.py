"""Budgets of structured pruning: how many units of each kind every block gives up.

Owns the arithmetic shared by the structured methods: which blocks a layer range leaves alone,
the parameters one unit carries, and `allocate`, which turns "remove this fraction of the
structured-prunable parameters" into per-block unit counts. Units are coarse for some kinds
(SmolLM2's attention has 3 KV groups per block), so coarse kinds are rounded first and the
finest kind (MLP / SSM channels) absorbs the rounding, keeping the total on target.

A structured method needs three calls beyond its own scoring: `budget` (how many units of each
kind every block loses), `unit_weights` (each unit's weights, one row per unit, to score) and
`keep_top` (the best-scored units that stay); `bench.structure.shrink` then cuts the model.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bench.structure import layer_units, slice_params, structured_params, unit_view
from methods.base import PruneBenchError

Units = list[dict[str, int]]        # per block: unit kind -> count


def layer_range(n_layers: int, start: float, end: float) -> list[int]:
    """Blocks pruned under LLM-Pruner's layer range, given as fractions of the depth."""
    if not 0.0 <= start < end <= 1.0:
        raise PruneBenchError(f"layer range [{start}, {end}) must satisfy 0 <= start < end <= 1")
    first, last = round(start * n_layers), round(end * n_layers)
    blocks = list(range(first, max(last, first + 1)))
    return [b for b in blocks if b < n_layers]


def allocate(units: Units, unit_params: list[dict[str, int]], blocks: list[int],
             sparsity: float, min_keep: int = 1) -> Units:
    """Units to REMOVE per block (kind -> count) so that about `sparsity` of all structured
    parameters (every block, pruned or not) go, taken from `blocks` only.

    unit_params[i][kind]: parameters one unit of that kind carries in block i.
    """
    total = sum(units[i][k] * unit_params[i][k] for i in range(len(units)) for k in units[i])
    pool = sum(units[i][k] * unit_params[i][k] for i in blocks for k in units[i])
    target = sparsity * total
    if target > pool * (1 - 1e-9):
        raise PruneBenchError(f"removing {sparsity:.0%} of the structured parameters needs more "
                              f"than the {len(blocks)} blocks in the layer range hold")
    ratio = target / pool
    remove: Units = [{k: 0 for k in u} for u in units]
    kinds = sorted(units[blocks[0]], key=lambda k: units[blocks[0]][k])   # coarsest first
    finest, coarse = kinds[-1], kinds[:-1]
    for i in blocks:
        for k in coarse:
            remove[i][k] = min(round(ratio * units[i][k]), units[i][k] - min_keep)
    left = target - sum(remove[i][k] * unit_params[i][k] for i in blocks for k in coarse)
    per_unit = sum(unit_params[i][finest] for i in blocks) / len(blocks)
    n_fine = max(0, left / per_unit)                    # finest units to remove in total
    base, extra = divmod(round(n_fine), len(blocks))
    for j, i in enumerate(blocks):                      # spread the remainder evenly
        want = base + (1 if j * extra // len(blocks) != (j + 1) * extra // len(blocks) else 0)
        remove[i][finest] = min(want, units[i][finest] - min_keep)
    return remove


def removed_fraction(units: Units, unit_params: list[dict[str, int]], remove: Units) -> float:
    total = sum(units[i][k] * unit_params[i][k] for i in range(len(units)) for k in units[i])
    gone = sum(remove[i][k] * unit_params[i][k] for i in range(len(units)) for k in remove[i])
    return gone / total if total else math.nan


def unit_param_counts(model: nn.Module, adapter: Any) -> tuple[Units, list[dict[str, int]]]:
    """Units per block and kind, and the parameters one unit of each kind carries per block."""
    units = layer_units(model, adapter)
    sizes = structured_params(model, adapter)
    return units, [{k: sizes[f"{i}.{k}"] // n for k, n in u.items()} for i, u in enumerate(units)]


def budget(model: nn.Module, adapter: Any, sparsity: float, layer_start: float = 0.0,
           layer_end: float = 1.0) -> tuple[Units, Units]:
    """(units, remove): per block, kind -> unit count now and how many to remove, so that about
    `sparsity` of the structured parameters go, taken from the blocks of the layer range."""
    units, per_unit = unit_param_counts(model, adapter)
    blocks = layer_range(len(units), layer_start, layer_end)
    return units, allocate(units, per_unit, blocks, sparsity)


@torch.no_grad()
def unit_weights(model: nn.Module, adapter: Any) -> list[dict[str, list[torch.Tensor]]]:
    """Per block: unit kind -> one [units, elements] view per tensor the kind spans (every weight
    and bias that goes when a unit goes, e.g. a head's q/k/v rows and its o_proj columns)."""
    units = layer_units(model, adapter)
    return [{c.kind: [unit_view(t.detach(), dim, copies, units[i][c.kind])
                      for t, dim, copies in slice_params(block, c)]
             for c in adapter.coupled}
            for i, block in enumerate(adapter.blocks(model))]


def keep_top(scores: list[dict[str, torch.Tensor]], units: Units,
             remove: Units) -> list[dict[str, torch.Tensor]]:
    """Per block: kind -> ascending indices of the units that stay (the highest scores).
    scores[i][kind]: [units] importance, higher = keep."""
    keep = []
    for i, per_kind in enumerate(scores):
        keep.append({k: s.argsort(descending=True)[: units[i][k] - remove[i][k]].sort().values
                     for k, s in per_kind.items()})
    return keep
