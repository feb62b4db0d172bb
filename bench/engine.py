"""The sequential layer-wise engine shared by every layer-wise method.

Owns the loop: (1) run the modules before the first block on the calibration ids and capture the
first block's positional input and ALL keyword arguments (masks, position ids, rotary
embeddings) with a dedicated stop exception; (2) for each block, hook its prunable linears,
run the calibration data through it, accumulate the statistic the method asked for (one
accumulator per shared-input group), prune each group, and hand the PRUNED block's outputs to
the next block. Only one block's statistics live at a time. Data-free methods skip the data
entirely. Architecture knowledge comes from the adapter; nothing here names a model.

Two schedules, chosen by `sequential`:
- block-parallel (False): one pass collects every group's statistic from the dense block, all
  groups are pruned, a second pass computes the pruned block's outputs (Wanda's and SparseGPT's
  reference code).
- sequential (True, "true sequential"): each group's statistic comes from inputs produced by the
  already-pruned earlier groups of the same block. When the whole calibration set is one batch
  this takes ONE pass per block: a forward pre-hook on the group's linears prunes the group the
  moment its input arrives, before the layer computes, so the pass itself yields the pruned
  block's outputs. With several batches it takes one pass per group plus one for the outputs.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.adapters import ArchAdapter
from bench.stats import StatAccumulator
from methods.base import LayerStats, LayerwiseMethod, Pattern, PruneBenchError
from methods.masks import check_nm

log = logging.getLogger(__name__)


class StopForward(Exception):
    """Raised by the capture hook to stop the model right before its first block."""


@dataclass
class Captured:
    hidden: list[torch.Tensor]           # per batch: [b, seq, d] input of block 0
    kwargs: list[dict[str, Any]]         # per batch: keyword arguments of block 0


@dataclass
class EngineReport:
    layer_keep: dict[str, float] = field(default_factory=dict)   # name -> kept fraction
    seconds_stats: float = 0.0
    seconds_prune: float = 0.0
    seconds_propagate: float = 0.0
    n_tokens: int = 0


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def capture_block_inputs(model: nn.Module, adapter: ArchAdapter, input_ids: torch.Tensor,
                         batch_size: int) -> Captured:
    """input_ids [n, seq] -> the first block's inputs and kwargs, batch by batch."""
    block0 = adapter.blocks(model)[0]
    device = next(model.parameters()).device
    cap = Captured([], [])

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        cap.hidden.append(args[0] if args else kwargs.pop("hidden_states"))
        cap.kwargs.append(dict(kwargs))
        raise StopForward

    handle = block0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            batch = input_ids[start:start + batch_size].to(device)
            try:
                model(input_ids=batch, use_cache=False)
            except StopForward:
                pass
    finally:
        handle.remove()
    return cap


def validate_layers(model: nn.Module, adapter: ArchAdapter, pattern: Pattern) -> None:
    """Fail before any long work if a layer cannot take the pattern (N:M divisibility)."""
    if pattern.kind != "nm":
        return
    for name, lin in adapter.prunable(model).items():
        check_nm(lin.in_features, pattern, name)


def _apply(method: LayerwiseMethod, lins: list[nn.Linear], stats: LayerStats | None,
           pattern: Pattern, names: list[str], report: EngineReport) -> None:
    """Prune layers that share one input statistic with `method.prune_group`, in place."""
    results = method.prune_group([lin.weight.data for lin in lins], stats, pattern, names)
    if len(results) != len(lins):
        raise PruneBenchError(f"{method.name}: prune_group returned {len(results)} results for "
                              f"{len(lins)} layers ({', '.join(names)})")
    for lin, name, res in zip(lins, names, results):
        if res.weight.shape != lin.weight.shape:
            raise PruneBenchError(f"{method.name}: layer {name} changed shape "
                                  f"{tuple(lin.weight.shape)} -> {tuple(res.weight.shape)}")
        if not torch.isfinite(res.weight).all():
            raise PruneBenchError(f"{method.name}: layer {name} has NaN/Inf weights after pruning")
        lin.weight.data.copy_(res.weight)
        report.layer_keep[name] = float(res.keep.float().mean())


def _single_pass(block: nn.Module, method: LayerwiseMethod, groups: tuple[tuple[str, ...], ...],
                 pattern: Pattern, prefix: str, hidden: torch.Tensor, kwargs: dict[str, Any],
                 report: EngineReport) -> torch.Tensor:
    """One forward of `block` on the whole calibration batch, pruning each group on the fly.

    hidden [n, seq, d] -> the pruned block's output [n, seq, d]."""
    done: set[tuple[str, ...]] = set()
    spent = [0.0, 0.0]                                         # stats, prune seconds in hooks

    def make_hook(group: tuple[str, ...]) -> Callable[[nn.Module, tuple], None]:
        def hook(module: nn.Module, args: tuple) -> None:
            if group in done:                                  # a later layer of a pruned group
                return
            t0 = time.perf_counter()
            lins = [block.get_submodule(name) for name in group]
            acc = StatAccumulator(lins[0].in_features, method.stat, lins[0].weight.device)
            acc.add(args[0])
            stats = acc.finish()
            t1 = time.perf_counter()
            _apply(method, lins, stats, pattern, [prefix + name for name in group], report)
            done.add(group)
            spent[0] += t1 - t0
            spent[1] += time.perf_counter() - t1
        return hook

    # every layer of a group carries the hook: whichever runs first prunes the whole group
    handles = [block.get_submodule(name).register_forward_pre_hook(make_hook(group))
               for group in groups for name in group]
    t0 = time.perf_counter()
    try:
        out = _first(block(hidden, **kwargs))
    finally:
        for handle in handles:
            handle.remove()
    missing = [g for g in groups if g not in done]
    if missing:
        raise PruneBenchError(f"block {prefix.rstrip('.')}: layers {missing} never ran in the "
                              f"forward pass; the adapter's groups do not match the model")
    report.seconds_stats += spent[0]
    report.seconds_prune += spent[1]
    report.seconds_propagate += time.perf_counter() - t0 - spent[0] - spent[1]
    return out


@torch.no_grad()
def prune_layerwise(model: nn.Module, adapter: ArchAdapter, method: LayerwiseMethod,
                    pattern: Pattern, calib_ids: torch.Tensor | None, batch_size: int = 8,
                    sequential: bool = False, progress: bool = True,
                    on_block_output: Callable[[int, list[torch.Tensor]], None] | None = None,
                    ) -> EngineReport:
    """Prune every prunable linear of `model` in place with `method`; returns timings and masks.

    sequential=True re-collects statistics after each shared-input group is pruned (SparseGPT's
    "true sequential"); False collects all of a block's statistics in one pass.
    """
    validate_layers(model, adapter, pattern)
    report = EngineReport()
    blocks = adapter.blocks(model)
    if method.stat == "none" and on_block_output is None:
        t0 = time.perf_counter()
        for name, lin in tqdm(adapter.prunable(model).items(), desc=f"{method.name} layers",
                              disable=not progress):
            _apply(method, [lin], None, pattern, [name], report)
        report.seconds_prune = time.perf_counter() - t0
        return report
    if calib_ids is None:
        raise PruneBenchError(f"method '{method.name}' needs calibration data")
    model.eval()
    t0 = time.perf_counter()
    cap = capture_block_inputs(model, adapter, calib_ids, batch_size)
    report.seconds_propagate += time.perf_counter() - t0
    report.n_tokens = int(calib_ids.numel())
    hidden = cap.hidden
    single = sequential and len(hidden) == 1
    phases = ([[g] for g in adapter.groups] if sequential else [list(adapter.groups)])
    for bi, block in enumerate(tqdm(blocks, desc=f"{method.name} blocks", disable=not progress)):
        prefix = f"{adapter.blocks_path}.{bi}."
        if single:
            hidden = [_single_pass(block, method, adapter.groups, pattern, prefix, hidden[0],
                                   cap.kwargs[0], report)]
            if on_block_output is not None:
                on_block_output(bi, hidden)
            continue
        for phase in phases:
            t0 = time.perf_counter()
            accs: dict[tuple[str, ...], StatAccumulator] = {}
            handles = []
            if method.stat != "none":
                for group in phase:
                    lin = block.get_submodule(group[0])
                    acc = StatAccumulator(lin.in_features, method.stat, lin.weight.device)
                    accs[group] = acc
                    handles.append(lin.register_forward_pre_hook(acc.hook))
                try:
                    for h, kw in zip(hidden, cap.kwargs):
                        block(h, **kw)
                finally:
                    for handle in handles:
                        handle.remove()
            t1 = time.perf_counter()
            report.seconds_stats += t1 - t0
            for group in phase:
                stats = accs[group].finish() if group in accs else None
                _apply(method, [block.get_submodule(name) for name in group], stats, pattern,
                       [prefix + name for name in group], report)
            del accs
            report.seconds_prune += time.perf_counter() - t1
        if bi == len(blocks) - 1 and on_block_output is None:
            break                                   # nothing consumes the last block's outputs
        t2 = time.perf_counter()
        hidden = [_first(block(h, **kw)) for h, kw in zip(hidden, cap.kwargs)]
        report.seconds_propagate += time.perf_counter() - t2
        if on_block_output is not None:
            on_block_output(bi, hidden)
    return report
