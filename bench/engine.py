"""The sequential layer-wise engine shared by every layer-wise method.

Owns the loop: (1) run the model on the calibration ids with every block stubbed out and capture
the first block's positional input and EVERY block's keyword arguments (masks, position ids,
rotary embeddings: Gemma3's sliding-window and global layers get different ones), stopping at
the last block with a dedicated exception; (2) for each block, hook its prunable linears,
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import greenlet
import torch
from torch import nn
from tqdm.auto import tqdm

from bench.adapters import ArchAdapter
from bench.stats import StatAccumulator
from methods import registry
from methods.allocation import block_patterns
from methods.base import (LayerResult, LayerStats, LayerwiseMethod, MethodError, Pattern,
                          PruneBenchError)
from methods.masks import check_nm
from methods.permutation import is_permutation, max_group_nonzeros

log = logging.getLogger(__name__)


class StopForward(Exception):
    """Raised by the capture stub of the last block to stop the model there."""


@dataclass
class Captured:
    hidden: list[torch.Tensor]              # per batch: [b, seq, d] input of block 0
    kwargs: list[list[dict[str, Any]]]      # per block, per batch: the block's keyword arguments


@dataclass
class EngineReport:
    layer_keep: dict[str, float] = field(default_factory=dict)   # name -> kept fraction
    seconds_stats: float = 0.0
    seconds_prune: float = 0.0
    seconds_propagate: float = 0.0
    n_tokens: int = 0
    group_seconds: dict[str, float] = field(default_factory=dict)  # "name, name" -> prune seconds
    # name -> [in] long: the input order under which a layer's N:M mask holds (LayerResult.in_perm)
    in_perms: dict[str, torch.Tensor] = field(default_factory=dict)


def first_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def capture_block_inputs(model: nn.Module, adapter: ArchAdapter, input_ids: torch.Tensor,
                         batch_size: int) -> Captured:
    """input_ids [n, seq] -> the first block's inputs, and every block's keyword arguments,
    batch by batch. Blocks of one model may get different ones (Gemma3's sliding-window and
    global layers: masks and rotary embeddings), so each block keeps its own. While capturing,
    every block is a stub that records and returns its input unchanged, so the pass costs the
    embeddings and the model's per-layer set-up, not a forward of the blocks."""
    blocks = adapter.blocks(model)
    device = next(model.parameters()).device
    cap = Captured([], [[] for _ in blocks])

    def stub(i: int) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if i == 0:
                cap.hidden.append(hidden)
            cap.kwargs[i].append(dict(kwargs))
            if i == len(blocks) - 1:
                raise StopForward
            return hidden
        return forward

    # an instance attribute shadows the class's forward; one already there (accelerate's
    # offloading wrapper) is put back afterwards
    saved = [block.__dict__.get("forward") for block in blocks]
    for i, block in enumerate(blocks):
        block.forward = stub(i)
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            batch = input_ids[start:start + batch_size].to(device)
            try:
                model(input_ids=batch, use_cache=False)
            except StopForward:
                pass
    finally:
        for block, own in zip(blocks, saved):
            if own is None:
                del block.forward
            else:
                block.forward = own
    return cap


def validate_layers(model: nn.Module, adapter: ArchAdapter, pattern: Pattern) -> None:
    """Fail before any long work if a layer cannot take the pattern (N:M divisibility)."""
    if pattern.kind != "nm":
        return
    for name, lin in adapter.prunable(model).items():
        check_nm(lin.in_features, pattern, name)


def _finite_stats(method: LayerwiseMethod, stats: LayerStats | None, names: list[str]) -> None:
    """Non-finite statistics are blamed where they start: the activations entering the layer."""
    if stats is None:
        return
    for what, t in (("activation norms", stats.act_sq), ("Hessian", stats.hessian)):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise PruneBenchError(f"{registry.label(method.name)}: the calibration activations "
                                  f"entering {names[0]} hold NaN/Inf (non-finite {what}); the "
                                  f"block's input was finite, so they arise inside this block")


def _checked_perm(method: LayerwiseMethod, name: str, res: LayerResult, pattern: Pattern
                  ) -> torch.Tensor:
    """A layer's input permutation [in] (int64, CPU), checked: a permutation of its inputs, an
    N:M pattern, and the pruned weight N:M under it."""
    perm = res.in_perm.detach().to("cpu").long() if res.in_perm is not None else None
    if (perm is None or pattern.kind != "nm" or res.in_perm.is_floating_point()
            or not is_permutation(perm, res.weight.shape[1])
            or max_group_nonzeros(res.weight.detach(), int(pattern.m), perm) > int(pattern.n)):
        raise MethodError(f"{registry.label(method.name)}: layer {name} returned an input "
                          f"permutation that is not one of its {res.weight.shape[1]} inputs under "
                          f"which its weight is {pattern.slug}")
    return perm


def _apply(method: LayerwiseMethod, lins: list[nn.Linear], stats: LayerStats | None,
           pattern: Pattern, names: list[str], report: EngineReport) -> None:
    """Prune layers that share one input statistic with `method.prune_group`, in place. Any
    error inside the method (a plugin's too) is re-raised naming the method, its origin and
    the layers."""
    _finite_stats(method, stats, names)
    who = f"{registry.label(method.name)} on layer {', '.join(names)}"
    t0 = time.perf_counter()
    try:
        results = method.prune_group([lin.weight.data for lin in lins], stats, pattern, names)
    except Exception as exc:  # noqa: BLE001 - named and re-raised as one line
        raise MethodError(f"{who} failed: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    if not isinstance(results, (list, tuple)) or len(results) != len(lins):
        raise MethodError(f"{who}: prune_group must return one LayerResult per layer "
                          f"({len(lins)}), got {type(results).__name__}")
    for lin, name, res in zip(lins, names, results):
        if res.weight.shape != lin.weight.shape:
            raise MethodError(f"{registry.label(method.name)}: layer {name} changed shape "
                              f"{tuple(lin.weight.shape)} -> {tuple(res.weight.shape)}")
        if not torch.isfinite(res.weight).all():
            raise MethodError(f"{registry.label(method.name)}: layer {name} has NaN/Inf weights "
                              f"after pruning")
        if res.in_perm is not None:
            report.in_perms[name] = _checked_perm(method, name, res, pattern)
        lin.weight.data.copy_(res.weight)
        report.layer_keep[name] = float(res.keep.float().mean())
    # the finiteness checks above synchronised the device: the time is the group's own
    report.group_seconds[", ".join(names)] = time.perf_counter() - t0
    log.debug("pruned %s in %.2f s", ", ".join(names), report.group_seconds[", ".join(names)])


def _finite_hidden(hidden: list[torch.Tensor], where: str) -> None:
    if not all(bool(torch.isfinite(h).all()) for h in hidden):
        raise PruneBenchError(f"{where} hold NaN/Inf")


def input_hooks(block: nn.Module, adapter: ArchAdapter, group: tuple[str, ...],
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
            lambda module, args, out, s=tap.start, w=width: fn(first_output(out)[..., s:s + w])))
    return handles


class _Lockstep:
    """Forward K calibration batches through one block "in lockstep", pruning on the fly.

    Each batch's forward is a coroutine (a greenlet: same OS thread, so the same BLAS/OpenMP
    pool and grad mode, and no locks). When a batch reaches a group's input, the hook hands
    that input to this coordinator and suspends; the coordinator adds it to the group's
    statistic and resumes the next batch. When all K batches have arrived it prunes the group,
    and every batch continues through the PRUNED layers. So the statistic is accumulated
    batch by batch in the same order as one pass per group would (bit-identical results),
    each block costs one forward, and no forward runs at the full calibration batch size
    (large tensors are slower per element on CPU).
    """

    def __init__(self, block: nn.Module, adapter: ArchAdapter, method: LayerwiseMethod,
                 pattern: Pattern, prefix: str, report: EngineReport) -> None:
        self.block, self.adapter, self.method = block, adapter, method
        self.pattern, self.prefix, self.report = pattern, prefix, report
        self.done: set[tuple[str, ...]] = set()
        self.main: greenlet.greenlet | None = None
        self.t_prune = 0.0

    def _arrive(self, group: tuple[str, ...], x: torch.Tensor) -> None:
        if group not in self.done:                     # later layers of a pruned group: no-op
            assert self.main is not None
            self.main.switch(("input", group, x))      # suspend this batch's forward

    def _chunk(self, hidden: torch.Tensor, kwargs: dict[str, Any]) -> tuple[str, torch.Tensor]:
        return "output", first_output(self.block(hidden, **kwargs))

    def _prune(self, group: tuple[str, ...], acc: StatAccumulator | None) -> None:
        t0 = time.perf_counter()
        stats = acc.finish() if acc is not None else None
        _apply(self.method, [self.block.get_submodule(n) for n in group], stats, self.pattern,
               [self.prefix + n for n in group], self.report)
        self.done.add(group)
        self.t_prune += time.perf_counter() - t0
        self.report.seconds_prune += time.perf_counter() - t0

    def run(self, hiddens: list[torch.Tensor], kwargs: list[dict[str, Any]]) -> list[torch.Tensor]:
        self.main = greenlet.getcurrent()
        chunks = [greenlet.greenlet(self._chunk) for _ in hiddens]
        handles = [h for group in self.adapter.groups for h in input_hooks(
            self.block, self.adapter, group, lambda x, g=group: self._arrive(g, x))]
        t_start, t_stats = time.perf_counter(), 0.0
        started = False
        try:
            while True:
                events, acc = [], None
                for i, chunk in enumerate(chunks):
                    ev = chunk.switch() if started else chunk.switch(hiddens[i], kwargs[i])
                    events.append(ev)
                    if ev[0] == "input" and self.method.stat != "none":
                        t0 = time.perf_counter()
                        if acc is None:
                            lin = self.block.get_submodule(ev[1][0])
                            acc = StatAccumulator(lin.in_features, self.method.stat,
                                                  lin.weight.device)
                        acc.add(ev[2])
                        t_stats += time.perf_counter() - t0
                started = True
                kinds = {(ev[0], ev[1] if ev[0] == "input" else None) for ev in events}
                if len(kinds) != 1:
                    raise PruneBenchError(f"block {self.prefix.rstrip('.')}: calibration "
                                          f"batches took different paths ({sorted(map(str, kinds))})")
                if events[0][0] == "output":
                    break
                self._prune(events[0][1], acc)
        finally:
            for handle in handles:
                handle.remove()
            for chunk in chunks:                       # unwinds any suspended forward
                if not chunk.dead:
                    chunk.throw(greenlet.GreenletExit)
        missing = [g for g in self.adapter.groups if g not in self.done]
        if missing:
            raise PruneBenchError(f"block {self.prefix.rstrip('.')}: layers {missing} never ran "
                                  f"in the forward pass; the adapter's groups do not match the model")
        self.report.seconds_stats += t_stats
        self.report.seconds_propagate += time.perf_counter() - t_start - t_stats - self.t_prune
        return [ev[1] for ev in events]


@torch.no_grad()
def prune_layerwise(model: nn.Module, adapter: ArchAdapter, method: LayerwiseMethod,
                    pattern: Pattern, calib_ids: torch.Tensor | None, batch_size: int = 8,
                    sequential: bool = False, progress: bool = True,
                    on_block_output: Callable[[int, list[torch.Tensor]], None] | None = None,
                    lockstep: bool = True, block_sparsity: list[float] | None = None
                    ) -> EngineReport:
    """Prune every prunable linear of `model` in place with `method`; returns timings and masks.

    sequential=True re-collects statistics after each shared-input group is pruned (SparseGPT's
    "true sequential"); False collects all of a block's statistics in one pass. With
    sequential=True, `lockstep` (default) does it in one forward per block over all batches;
    lockstep=False runs one pass per group plus one for the outputs (same result: the reference
    schedule the tests compare against).
    `block_sparsity` (unstructured patterns only: a non-uniform allocation such as OWL's,
    bench/allocation.py) prunes block b at sparsity block_sparsity[b] instead of the pattern's.
    """
    validate_layers(model, adapter, pattern)
    report = EngineReport()
    blocks = adapter.blocks(model)
    per_block = block_patterns(pattern, len(blocks), block_sparsity)
    if method.stat == "none" and on_block_output is None:
        t0 = time.perf_counter()
        for name, lin in tqdm(adapter.prunable(model).items(), desc=f"{method.name} layers",
                              disable=not progress):
            bi = int(name[len(adapter.blocks_path) + 1:].split(".", 1)[0])
            _apply(method, [lin], None, per_block[bi], [name], report)
        report.seconds_prune = time.perf_counter() - t0
        return report
    if calib_ids is None:
        raise PruneBenchError(f"method '{method.name}' needs calibration data")
    model.eval()
    t0 = time.perf_counter()
    cap = capture_block_inputs(model, adapter, calib_ids, batch_size)
    _finite_hidden(cap.hidden, "the calibration inputs of the first block (the input model's "
                               "embeddings of the calibration ids)")
    report.seconds_propagate += time.perf_counter() - t0
    report.n_tokens = int(calib_ids.numel())
    hidden = cap.hidden
    phases = ([[g] for g in adapter.groups] if sequential else [list(adapter.groups)])
    for bi, block in enumerate(tqdm(blocks, desc=f"{method.name} blocks", disable=not progress)):
        prefix = f"{adapter.blocks_path}.{bi}."
        if sequential and lockstep:
            hidden = _Lockstep(block, adapter, method, per_block[bi], prefix, report).run(
                hidden, cap.kwargs[bi])
            _finite_hidden(hidden, f"the outputs of block {bi} after pruning it with "
                                   f"{registry.label(method.name)}")
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
                    handles += input_hooks(block, adapter, group[:1], acc.add)
                try:
                    for h, kw in zip(hidden, cap.kwargs[bi]):
                        block(h, **kw)
                finally:
                    for handle in handles:
                        handle.remove()
            t1 = time.perf_counter()
            report.seconds_stats += t1 - t0
            for group in phase:
                stats = accs[group].finish() if group in accs else None
                _apply(method, [block.get_submodule(name) for name in group], stats,
                       per_block[bi], [prefix + name for name in group], report)
            del accs
            report.seconds_prune += time.perf_counter() - t1
        if bi == len(blocks) - 1 and on_block_output is None:
            break                                   # nothing consumes the last block's outputs
        t2 = time.perf_counter()
        hidden = [first_output(block(h, **kw)) for h, kw in zip(hidden, cap.kwargs[bi])]
        _finite_hidden(hidden, f"the outputs of block {bi} after pruning it with "
                               f"{registry.label(method.name)}")
        report.seconds_propagate += time.perf_counter() - t2
        if on_block_output is not None:
            on_block_output(bi, hidden)
    return report
