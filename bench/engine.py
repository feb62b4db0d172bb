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
  already-pruned earlier groups of the same block, in ONE forward per block: hooks on the
  group's inputs prune the group the moment its input arrives, before the layer computes, so
  the pass itself yields the pruned block's outputs. With several batches the batches' forwards
  run in lockstep (`_Lockstep`): every batch stops at the group, the last one prunes it.
"""
from __future__ import annotations

import logging
import threading
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


def _input_hooks(block: nn.Module, adapter: ArchAdapter, group: tuple[str, ...],
                 fn: Callable[[torch.Tensor], None]) -> list[Any]:
    """Call fn(x [..., in]) with the input of every layer of `group` as it arrives."""
    handles = []
    for name in group:
        tap = adapter.tap(name)
        if tap is None:
            handles.append(block.get_submodule(name).register_forward_pre_hook(
                lambda module, args: fn(args[0])))
            continue
        width = block.get_submodule(name).in_features
        handles.append(block.get_submodule(tap.source).register_forward_hook(
            lambda module, args, out, s=tap.start, w=width: fn(_first(out)[..., s:s + w])))
    return handles


class _Abort(Exception):
    """Unwinds a waiting chunk's forward after another chunk failed."""


class _Lockstep:
    """Forward K calibration chunks through one block "in lockstep", pruning on the fly.

    Each chunk's forward runs in its own thread, but a condition variable lets exactly one
    thread compute at a time, in a fixed turn order 0..K-1. When a chunk reaches a group's
    input it adds that input to the group's statistic and hands the turn to the next chunk;
    the last chunk prunes the group, and all chunks continue with the PRUNED layers. So the
    statistic is accumulated batch by batch in the same order as one pass per group would,
    each block costs one forward, and no forward ever runs at the full calibration batch size
    (large tensors are slower per element on CPU).
    """

    def __init__(self, block: nn.Module, adapter: ArchAdapter, method: LayerwiseMethod,
                 pattern: Pattern, prefix: str, report: EngineReport, k: int) -> None:
        self.block, self.adapter, self.method = block, adapter, method
        self.pattern, self.prefix, self.report, self.k = pattern, prefix, report, k
        self.cond = threading.Condition()
        self.turn = 0
        self.arrived: dict[tuple[str, ...], int] = {}
        self.accs: dict[tuple[str, ...], StatAccumulator] = {}
        self.done: set[tuple[str, ...]] = set()
        self.error: BaseException | None = None
        self.local = threading.local()
        self.spent = [0.0, 0.0]                                # stats, prune seconds

    def on_input(self, group: tuple[str, ...], x: torch.Tensor) -> None:
        if group in self.done:                                 # a later layer of a pruned group
            return
        i = self.local.index
        t0 = time.perf_counter()
        if self.method.stat != "none":
            if group not in self.accs:
                lin = self.block.get_submodule(group[0])
                self.accs[group] = StatAccumulator(lin.in_features, self.method.stat,
                                                   lin.weight.device)
            self.accs[group].add(x)
        self.arrived[group] = self.arrived.get(group, 0) + 1
        t1 = time.perf_counter()
        self.spent[0] += t1 - t0
        if i == self.k - 1:                                    # last chunk in: prune the group
            stats = self.accs.pop(group).finish() if group in self.accs else None
            _apply(self.method, [self.block.get_submodule(n) for n in group], stats,
                   self.pattern, [self.prefix + n for n in group], self.report)
            self.done.add(group)
            self.spent[1] += time.perf_counter() - t1
        self.turn = (i + 1) % self.k
        self.cond.notify_all()
        self.cond.wait_for(lambda: self.error is not None or (group in self.done
                                                               and self.turn == i))
        if self.error is not None:
            raise _Abort

    def run_chunk(self, i: int, hidden: torch.Tensor, kwargs: dict[str, Any],
                  outs: list[torch.Tensor | None]) -> None:
        self.local.index = i
        with torch.no_grad(), self.cond:                       # grad mode is per thread
            try:
                self.cond.wait_for(lambda: self.error is not None or self.turn == i)
                if self.error is not None:
                    return
                outs[i] = _first(self.block(hidden, **kwargs))
                pending = [g for g, n in self.arrived.items() if g not in self.done]
                if pending:
                    raise PruneBenchError(f"block {self.prefix.rstrip('.')}: chunk {i} finished "
                                          f"without reaching {pending}; chunks took different paths")
                self.turn = (i + 1) % self.k
            except _Abort:
                return
            except BaseException as exc:                       # hand it to the main thread
                self.error = exc
            finally:
                self.cond.notify_all()

    def run(self, hiddens: list[torch.Tensor], kwargs: list[dict[str, Any]]) -> list[torch.Tensor]:
        outs: list[torch.Tensor | None] = [None] * self.k
        handles = [h for group in self.adapter.groups for h in _input_hooks(
            self.block, self.adapter, group, lambda x, g=group: self.on_input(g, x))]
        t0 = time.perf_counter()
        try:
            if self.k == 1:                                    # no threads needed
                self.run_chunk(0, hiddens[0], kwargs[0], outs)
            else:
                threads = [threading.Thread(target=self.run_chunk, args=(i, h, kw, outs),
                                            name=f"prunebench-chunk-{i}", daemon=True)
                           for i, (h, kw) in enumerate(zip(hiddens, kwargs))]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        finally:
            for handle in handles:
                handle.remove()
        if self.error is not None:
            raise self.error
        missing = [g for g in self.adapter.groups if g not in self.done]
        if missing:
            raise PruneBenchError(f"block {self.prefix.rstrip('.')}: layers {missing} never ran "
                                  f"in the forward pass; the adapter's groups do not match the model")
        self.report.seconds_stats += self.spent[0]
        self.report.seconds_prune += self.spent[1]
        self.report.seconds_propagate += time.perf_counter() - t0 - sum(self.spent)
        return [o for o in outs if o is not None]


@torch.no_grad()
def prune_layerwise(model: nn.Module, adapter: ArchAdapter, method: LayerwiseMethod,
                    pattern: Pattern, calib_ids: torch.Tensor | None, batch_size: int = 8,
                    sequential: bool = False, progress: bool = True,
                    on_block_output: Callable[[int, list[torch.Tensor]], None] | None = None,
                    lockstep: bool = True) -> EngineReport:
    """Prune every prunable linear of `model` in place with `method`; returns timings and masks.

    sequential=True re-collects statistics after each shared-input group is pruned (SparseGPT's
    "true sequential"); False collects all of a block's statistics in one pass. With
    sequential=True, `lockstep` (default) does it in one forward per block over all batches;
    lockstep=False runs one pass per group plus one for the outputs (same result: the reference
    schedule the tests compare against).
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
    phases = ([[g] for g in adapter.groups] if sequential else [list(adapter.groups)])
    for bi, block in enumerate(tqdm(blocks, desc=f"{method.name} blocks", disable=not progress)):
        prefix = f"{adapter.blocks_path}.{bi}."
        if sequential and lockstep:
            hidden = _Lockstep(block, adapter, method, pattern, prefix, report,
                               len(hidden)).run(hidden, cap.kwargs)
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
                    handles += _input_hooks(block, adapter, group[:1], acc.add)
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
