"""Budgets of structured pruning: how many units of each kind every block gives up.

Owns the arithmetic shared by the structured methods: which blocks a layer range leaves alone,
the parameters one unit carries, and `allocate`, which turns "remove this fraction of the
structured-prunable parameters" into per-block unit counts. Units are coarse for some kinds
(SmolLM2's attention has 3 KV groups per block), so coarse kinds are rounded first and the
finest kind (MLP / SSM channels) absorbs the rounding, keeping the total on target.
"""
from __future__ import annotations

import math

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
