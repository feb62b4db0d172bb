"""DSnoT: training-free prune-and-grow refinement of a layer-wise mask (Zhang et al., ICLR 2024).

Owns `dsnot_refine`, the pure refinement of one layer's keep mask, and `with_dsnot`, the
`<name>_dsnot` variant of a layer-wise method that updates no weights (magnitude, Wanda, RIA,
and their `_owl` variants): the method's own mask, then refined; no weight is ever updated.

Each output row i has an expected reconstruction error, the mean change of its output over the
calibration tokens caused by the pruned weights,

    e_i = sum_{j pruned} W_ij * mu_j                (mu_j: mean of input feature j)

Per cycle, every row with |e_i| above the threshold swaps one weight: it regrows the pruned
weight whose contribution c_ij = W_ij mu_j has the sign of e_i and the largest |c_ij| / var_j^p
(var_j: the variance of input j), and prunes the kept weight of opposite sign with the smallest
Wanda score |W_ij| ||X_j||. A swap is kept only when it lowers |e_i| (and, with `same_sign`,
when e_i keeps its sign); a row whose swap is refused stops. Rows keep their weight counts, so
the sparsity of every row and layer is exactly the base method's.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from methods.base import (Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern,
                          PruneBenchError, combine_params)

SUFFIX = "_dsnot"
# the reference's update threshold is 0.1 on errors summed over 2,048-token sequences; ours is
# per token (mu is a per-token mean), hence 0.1 / 2048
THRESHOLD = 0.1 / 2048


@dataclasses.dataclass(frozen=True)
class DSnoTParams:
    dsnot_cycles: int = 50            # the reference's --max_cycle_time
    dsnot_threshold: float = THRESHOLD
    dsnot_var_power: float = 1.0      # the reference's --pow_of_var_regrowing
    dsnot_same_sign: bool = False     # the reference runs without it (--without_same_sign)
    # layer-name fragments left as is: the reference's default `--skip_layer mlp`, which leaves
    # Llama's (and Gemma's) MLP layers unrefined and matches no OPT or Mamba layer
    dsnot_skip: list[str] = dataclasses.field(default_factory=lambda: ["mlp."])

    def validate(self) -> None:
        if self.dsnot_cycles < 0:
            raise PruneBenchError("dsnot: dsnot_cycles must be >= 0")
        if not self.dsnot_threshold >= 0 or not self.dsnot_var_power >= 0:
            raise PruneBenchError("dsnot: dsnot_threshold and dsnot_var_power must be >= 0")


def row_errors(weight: torch.Tensor, keep: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """weight [out, in], keep [out, in] bool, mean [in] -> e [out] (float64)."""
    c = weight.double() * mean.double().unsqueeze(0)                      # [out, in]
    return (c * (~keep)).sum(dim=1)


@torch.no_grad()
def dsnot_refine(weight: torch.Tensor, keep: torch.Tensor, act_sq: torch.Tensor,
                 mean: torch.Tensor, var: torch.Tensor, cycles: int = 50,
                 threshold: float = THRESHOLD, var_power: float = 1.0,
                 same_sign: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Refine a keep mask [out, in]; returns (refined mask, |e| per row after each cycle,
    the first entry before any swap). Every row keeps its number of kept weights."""
    w = weight.double()                                                   # [out, in]
    c = w * mean.double().unsqueeze(0)                                    # contributions
    grow_key = c / var.double().clamp_min(1e-12).pow(var_power).unsqueeze(0)
    wanda = w.abs() * act_sq.double().clamp_min(0).sqrt().unsqueeze(0)
    keep = keep.clone()
    e = (c * (~keep)).sum(dim=1)                                          # [out]
    rows = torch.arange(w.shape[0], device=w.device)
    active = torch.ones_like(e, dtype=torch.bool)
    trace = [e.abs()]
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=w.device)
    for _ in range(cycles):
        active &= e.abs() > threshold
        if not bool(active.any()):
            break
        sgn = e.sign().unsqueeze(1)                                       # [out, 1]
        grow = torch.where(~keep & (c * sgn > 0), grow_key * sgn, -inf)   # pruned, same sign
        prune = torch.where(keep & (c * sgn < 0), wanda, inf)             # kept, opposite sign
        r, q = grow.argmax(dim=1), prune.argmin(dim=1)                    # [out] (lowest index on ties)
        e_new = e + c[rows, q] - c[rows, r]
        ok = active & torch.isfinite(grow[rows, r]) & torch.isfinite(prune[rows, q]) \
            & (e_new.abs() < e.abs())
        if same_sign:
            ok &= e_new.sign() == e.sign()
        keep[rows[ok], r[ok]] = True
        keep[rows[ok], q[ok]] = False
        e = torch.where(ok, e_new, e)
        active = ok
        trace.append(e.abs())
    return keep, trace


_VARIANTS: dict[type, type] = {}


def with_dsnot(base: type[LayerwiseMethod]) -> type[LayerwiseMethod]:
    """The `<base.name>_dsnot` variant (made once, cached)."""
    if not (isinstance(base, type) and issubclass(base, LayerwiseMethod)) \
            or "unstructured" not in base.capabilities.kinds or base.updates_weights:
        raise PruneBenchError(f"DSnoT refines the mask of a layer-wise method that updates no "
                              f"weights; '{getattr(base, 'name', base)}' cannot take it")
    if base in _VARIANTS:
        return _VARIANTS[base]
    params = combine_params(base.Params, DSnoTParams, base.name, "DSnoT")

    def prune_layer(self: Any, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        res = base.prune_layer(self, weight, stats, pattern, name)
        p = self.params
        if any(frag in name for frag in p.dsnot_skip):
            return res
        assert stats is not None and stats.act_mean is not None and stats.act_var is not None
        assert stats.act_sq is not None
        keep, _ = dsnot_refine(weight, res.keep, stats.act_sq, stats.act_mean, stats.act_var,
                               p.dsnot_cycles, p.dsnot_threshold, p.dsnot_var_power,
                               p.dsnot_same_sign)
        return LayerResult(weight * keep, keep)

    variant = type(f"{base.__name__}DSnoT", (base,), {
        "name": base.name + SUFFIX,
        "Params": params,
        "stat": "act_moments",
        "__module__": base.__module__,
        "capabilities": Capabilities(kinds=frozenset({"unstructured"}), archs=base.capabilities.archs,
                                     needs_calibration=True),
        "prune_layer": prune_layer,
        "prune_group": LayerwiseMethod.prune_group,
        "description": base.description + " Mask refined by DSnoT (prune-and-grow, no weight update).",
        "paper": base.paper + ("; refinement: Zhang et al. 2024, Dynamic Sparse No Training "
                               "(arXiv 2310.08915)"),
        "fidelity": base.fidelity + (" DSnoT refinement (Zhang et al. 2024) as documented in "
                                     "docs/methods/dsnot.md."),
    })
    _VARIANTS[base] = variant
    return variant
