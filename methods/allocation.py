"""Non-uniform layer allocation: how a target sparsity is spread over a model's blocks.

Owns the allocation axis of layer-wise methods. `uniform` (every block at the target, the
default of every method) and `owl` (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity",
arXiv 2310.05175). OWL measures, per block of the DENSE model, the share of Wanda scores
|W_ij| * ||X_j||_2 (over all the block's prunable layers together) above `m` times their mean:
the block's outlier ratio D_b. Blocks with more outliers are pruned less:

    r_b   = 2 * lambda * (D_b - min D) / (max D - min D)       (in [0, 2 lambda])
    s_b   = target - (r_b - mean_w(r))

so the block sparsities span exactly 2 lambda (the block with the most outliers is pruned 2
lambda less than the one with the fewest) and, mean_w weighing each block by its prunable
parameters, their parameter-weighted mean is exactly the target (for blocks of equal size, as
in the reference code, mean_w is the plain mean). Pure functions here; the dense pass that measures D_b lives in bench/allocation.py.

`with_allocation(cls, "owl")` makes the `<name>_owl` variant of any layer-wise method (shipped or
plugin) that can do unstructured sparsity: the same layer rule, the block sparsities above, and
the OWL hyperparameters `owl_m` and `owl_lambda` next to the method's own.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from methods.base import Capabilities, LayerwiseMethod, Pattern, PruneBenchError, combine_params

ALLOCATIONS = ("uniform", "owl")
SUFFIX = {"owl": "_owl"}
OWL_M = 5.0           # outlier threshold: a score above m x the block's mean score (reference: 5)
OWL_LAMBDA = 0.08     # half-width of the sparsity band around the target (reference: 0.08)


def outlier_ratio(scores: Sequence[torch.Tensor], m: float) -> float:
    """The share of all `scores` (one block's layers, any shapes) above m x their common mean."""
    flat = torch.cat([s.detach().flatten().double() for s in scores])     # [n]
    return float((flat > m * flat.mean()).double().mean())


def owl_sparsities(ratios: Sequence[float], target: float, lam: float,
                   sizes: Sequence[int] | None = None) -> list[float]:
    """Outlier ratios per block -> sparsity per block, spanning 2 lam, higher ratio -> lower
    sparsity, parameter-weighted mean exactly `target`. Equal ratios: uniform."""
    if not lam >= 0.0 or not 0.0 < target < 1.0:
        raise PruneBenchError(f"owl: need lambda >= 0 and a target in (0, 1), got {lam}, {target}")
    d = torch.tensor(list(ratios), dtype=torch.float64)                     # [blocks]
    w = torch.tensor(list(sizes) if sizes is not None else [1] * len(d), dtype=torch.float64)
    if len(d) == 0 or len(w) != len(d) or bool((w <= 0).any()):
        raise PruneBenchError("owl: need one positive size per block")
    span = float(d.max() - d.min())
    r = (d - d.min()) * (2 * lam / span) if span > 0 else torch.zeros_like(d)
    s = target - (r - (w * r).sum() / w.sum())
    if float(s.min()) < 0.0 or float(s.max()) >= 1.0:
        raise PruneBenchError(f"owl: target {target} with lambda {lam} gives block sparsities "
                              f"{float(s.min()):.3f}..{float(s.max()):.3f}, outside [0, 1)")
    return [float(x) for x in s]


def block_patterns(pattern: Pattern, n_blocks: int, block_sparsity: list[float] | None
                   ) -> list[Pattern]:
    """The pattern each block is pruned at: `pattern` everywhere, or an unstructured pattern at
    each block's own sparsity."""
    if block_sparsity is None:
        return [pattern] * n_blocks
    if pattern.kind != "unstructured" or len(block_sparsity) != n_blocks:
        raise PruneBenchError(f"a per-block allocation needs an unstructured pattern and one "
                              f"sparsity per block ({n_blocks}); got '{pattern.slug}' and "
                              f"{len(block_sparsity)}")
    if not all(0.0 <= s < 1.0 for s in block_sparsity):
        raise PruneBenchError(f"block sparsities must lie in [0, 1): {block_sparsity}")
    return [dataclasses.replace(pattern, sparsity=float(s)) for s in block_sparsity]


@dataclasses.dataclass(frozen=True)
class OWLParams:
    owl_m: float = OWL_M
    owl_lambda: float = OWL_LAMBDA

    def validate(self) -> None:
        if not self.owl_m > 0:
            raise PruneBenchError("owl: owl_m must be > 0")
        if not 0 <= self.owl_lambda < 0.5:
            raise PruneBenchError("owl: owl_lambda must be in [0, 0.5)")


_VARIANTS: dict[tuple[type, str], type] = {}


def with_allocation(base: type[LayerwiseMethod], allocation: str) -> type[LayerwiseMethod]:
    """The `<base.name>_<allocation>` variant of a layer-wise method (made once, cached)."""
    if allocation not in SUFFIX:
        raise PruneBenchError(f"unknown allocation '{allocation}'; known: {', '.join(ALLOCATIONS)}")
    if not (isinstance(base, type) and issubclass(base, LayerwiseMethod)) \
            or "unstructured" not in base.capabilities.kinds:
        raise PruneBenchError(f"allocation '{allocation}' needs a layer-wise method that can do "
                              f"unstructured sparsity; '{getattr(base, 'name', base)}' cannot")
    key = (base, allocation)
    if key in _VARIANTS:
        return _VARIANTS[key]
    params = combine_params(base.Params, OWLParams, base.name, "OWL")
    caps = base.capabilities
    variant = type(f"{base.__name__}OWL", (base,), {
        "name": base.name + SUFFIX[allocation],
        "allocation": allocation,
        "Params": params,
        "__module__": base.__module__,
        # OWL measures activations, so even a data-free rule needs calibration data here
        "capabilities": Capabilities(kinds=frozenset({"unstructured"}), archs=caps.archs,
                                     needs_calibration=True),
        "description": base.description + " OWL layer allocation (outlier-weighted).",
        "paper": base.paper + ("; layer allocation: Yin et al. 2024, Outlier Weighed Layerwise "
                               "Sparsity (OWL) (arXiv 2310.05175)"),
        "fidelity": base.fidelity + (" Block sparsities from OWL (Yin et al. 2024): outlier "
                                     "ratios of the dense model's Wanda scores, methods/allocation.py."),
    })
    _VARIANTS[key] = variant
    return variant
