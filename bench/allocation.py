"""The dense calibration pass behind non-uniform layer allocation (OWL).

Owns `owl_allocation`: run the calibration data through the DENSE model block by block (one
forward per block, nothing pruned), take every prunable layer's Wanda scores
|W_ij| * ||X_j||_2 from its inputs, and turn each block's outlier ratio into a block sparsity
with the pure functions of methods/allocation.py. The engine then prunes block b at
`block_sparsity[b]` with the method's own rule (bench/engine.py). As in the reference code
(luuyin/OWL, `prune_wanda_outlier`), the ratios come from the dense model and are computed
before any block is pruned; the pruning pass that follows collects its own statistics.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.adapters import ArchAdapter
from bench.engine import capture_block_inputs, first_output, input_hooks
from bench.stats import StatAccumulator
from methods.allocation import outlier_ratio, owl_sparsities
from methods.base import LayerwiseMethod, Pattern, PruneBenchError
from methods.wanda import wanda_scores

log = logging.getLogger(__name__)


@torch.no_grad()
def owl_ratios(model: nn.Module, adapter: ArchAdapter, calib_ids: torch.Tensor,
               batch_size: int, m: float, progress: bool = True) -> tuple[list[float], list[int]]:
    """Per block of the dense model: (outlier ratio of its layers' Wanda scores, prunable
    parameters). calib_ids [n, seq]."""
    model.eval()
    cap = capture_block_inputs(model, adapter, calib_ids, batch_size)
    hidden = cap.hidden
    ratios, sizes = [], []
    for bi, block in enumerate(tqdm(adapter.blocks(model), desc="owl outlier ratios",
                                    disable=not progress)):
        accs: dict[tuple[str, ...], StatAccumulator] = {}
        handles: list[Any] = []
        for group in adapter.groups:
            lin = block.get_submodule(group[0])
            accs[group] = StatAccumulator(lin.in_features, "act_norm", lin.weight.device)
            handles += input_hooks(block, adapter, group[:1], accs[group].add)
        try:
            hidden = [first_output(block(h, **kw)) for h, kw in zip(hidden, cap.kwargs[bi])]
        finally:
            for handle in handles:
                handle.remove()
        scores, size = [], 0
        for group, acc in accs.items():
            act_sq = acc.finish().act_sq                                   # [in]
            assert act_sq is not None
            for name in group:
                weight = block.get_submodule(name).weight                  # [out, in]
                scores.append(wanda_scores(weight, act_sq))
                size += weight.numel()
        ratios.append(outlier_ratio(scores, m))
        sizes.append(size)
    return ratios, sizes


def owl_allocation(model: nn.Module, adapter: ArchAdapter, method: LayerwiseMethod,
                   pattern: Pattern, calib_ids: torch.Tensor | None, batch_size: int,
                   progress: bool = True) -> dict[str, Any]:
    """The OWL block sparsities for `method` (an `_owl` variant) at `pattern`, with what the
    run JSON records: the outlier ratios, the block sizes and the seconds the pass took."""
    if pattern.kind != "unstructured":
        raise PruneBenchError(f"method '{method.name}': OWL allocates unstructured sparsity, "
                              f"not pattern '{pattern.slug}'")
    if calib_ids is None:
        raise PruneBenchError(f"method '{method.name}' needs calibration data (OWL's outlier ratios)")
    t0 = time.perf_counter()
    params = method.params
    ratios, sizes = owl_ratios(model, adapter, calib_ids, batch_size, params.owl_m, progress)
    sparsity = owl_sparsities(ratios, pattern.sparsity, params.owl_lambda, sizes)
    log.info("owl: block sparsities %s (outlier ratios %s)",
             [round(s, 4) for s in sparsity], [round(r, 5) for r in ratios])
    return {"allocation": "owl", "owl_m": params.owl_m, "owl_lambda": params.owl_lambda,
            "outlier_ratio": ratios, "block_params": sizes, "block_sparsity": sparsity,
            "seconds_allocation": time.perf_counter() - t0}
