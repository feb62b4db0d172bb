"""LLM-Pruner (Ma et al., arXiv 2305.11627): gradient-based importance of coupled structures.

Owns the method: a few calibration sequences give the loss gradient of every parameter; each
coupled unit (an attention KV group / head, an MLP channel, a Mamba inner channel, as the
adapter declares) is scored by a Taylor estimate of the loss change when its parameters go,
summed over all the tensors it spans; within every block of the layer range the least
important units go (the first and last blocks stay whole). `llm_pruner_lora` then recovers
with LoRA on text of the calibration corpus and merges the adapters back into a plain model.

Importance of the elements w (gradient g, per-sample gradients g_n) of one unit, per tensor:
  taylor   (element-wise, first order; the reference repo's default)  sum |w g|
  taylor2  (element-wise, second order, diagonal Fisher)              sum |w g - 1/2 w^2 sum_n g_n^2|
  vector   (vector-wise, first order)                                 |sum w g|
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.recovery import LoraSettings, lora_recover
from bench.structure import layer_units, shrink, slice_params, unit_view
from methods.base import (Capabilities, ModelData, ModelMethod, ModelResult, Pattern,
                          PruneBenchError)
from methods.registry import register
from methods.units import allocate, keep_top, layer_range, removed_fraction, unit_param_counts

log = logging.getLogger(__name__)
IMPORTANCE = ("taylor", "taylor2", "vector")
AGGREGATE = ("sum", "mean", "max")


@dataclass(frozen=True)
class LLMPrunerParams:
    importance: str = "taylor"     # taylor | taylor2 | vector
    aggregate: str = "sum"         # how a unit's tensors combine: sum | mean | max
    n_samples: int = 10            # calibration sequences for the gradients (the repo uses 10)
    seqlen: int = 128
    layer_start: float = 0.125     # blocks [start, end) of the depth are pruned: the repo's
    layer_end: float = 0.9375      # 4..30 of Llama-7B's 32 (first 4 and last 2 kept)
    recovery: bool = False         # LoRA recovery on calibration-corpus text, merged back
    lora_steps: int = 60
    lora_batch_size: int = 4
    lora_seqlen: int = 256
    lora_lr: float = 3e-4
    lora_rank: int = 8
    lora_alpha: int = 16
    seed: int = 0

    def validate(self) -> None:
        if self.importance not in IMPORTANCE:
            raise PruneBenchError(f"llm_pruner: importance must be one of {IMPORTANCE}, got '{self.importance}'")
        if self.aggregate not in AGGREGATE:
            raise PruneBenchError(f"llm_pruner: aggregate must be one of {AGGREGATE}, got '{self.aggregate}'")
        if self.n_samples < 1 or self.seqlen < 2:
            raise PruneBenchError("llm_pruner: n_samples >= 1 and seqlen >= 2 required")
        if (self.lora_steps < 0 or self.lora_batch_size < 1 or self.lora_seqlen < 2
                or self.lora_rank < 1 or self.lora_alpha < 1 or self.lora_lr < 0):
            raise PruneBenchError("llm_pruner: lora_steps >= 0, lora_batch_size >= 1, "
                                  "lora_seqlen >= 2, lora_rank >= 1, lora_alpha >= 1 and "
                                  "lora_lr >= 0 required")
        layer_range(100, self.layer_start, self.layer_end)


def _unit_scores(pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], importance: str,
                 aggregate: str) -> torch.Tensor:
    """(w, g, fisher) views [units, elems] per tensor -> importance per unit [units]."""
    per_tensor = []
    for w, g, fisher in pairs:
        wg = (w * g).double()
        if importance == "taylor":
            s = wg.abs().sum(1)
        elif importance == "taylor2":
            s = (wg - 0.5 * w.double() ** 2 * fisher.double()).abs().sum(1)
        else:
            s = wg.sum(1).abs()
        per_tensor.append(s)
    stacked = torch.stack(per_tensor)                   # [tensors, units]
    return {"sum": stacked.sum(0), "mean": stacked.mean(0), "max": stacked.max(0).values}[aggregate]


def gradient_importance(model: nn.Module, adapter: Any, ids: torch.Tensor, importance: str,
                        aggregate: str, progress: bool = True) -> list[dict[str, torch.Tensor]]:
    """ids [n, seq] -> per block: unit kind -> importance per unit. Grads are cleared after."""
    units = layer_units(model, adapter)
    blocks = adapter.blocks(model)
    params = [p for p in model.parameters()]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    tracked = [p for b in blocks for p in b.parameters()]
    for p in tracked:
        p.requires_grad_(True)
        p.grad = None
    fisher = {id(p): torch.zeros_like(p) for p in tracked} if importance == "taylor2" else {}
    grad_sum = {id(p): torch.zeros_like(p) for p in tracked}
    device = next(model.parameters()).device
    try:
        for row in tqdm(ids, desc="llm_pruner gradients", disable=not progress):
            batch = row[None].to(device)                                  # [1, seq]
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
            for p in tracked:
                if p.grad is not None:
                    grad_sum[id(p)] += p.grad
                    if fisher:
                        fisher[id(p)] += p.grad ** 2
                    p.grad = None
        for p in tracked:
            p.grad = grad_sum[id(p)] / ids.shape[0]                       # mean gradient
        scores: list[dict[str, torch.Tensor]] = []
        for i, block in enumerate(blocks):
            per_kind = {}
            for c in adapter.coupled:
                n = units[i][c.kind]
                views = []
                for t, dim, copies in slice_params(block, c):
                    f = fisher[id(t)] if fisher else torch.zeros_like(t)
                    views.append(tuple(unit_view(x, dim, copies, n) for x in (t.detach(), t.grad, f)))
                per_kind[c.kind] = _unit_scores(views, importance, aggregate)
                if not bool(torch.isfinite(per_kind[c.kind]).all()):    # NaN would sort anywhere
                    raise PruneBenchError(f"llm_pruner: non-finite {importance} importance of the "
                                          f"'{c.kind}' units of block {i} (NaN/Inf gradients of "
                                          f"the calibration loss)")
            scores.append(per_kind)
    finally:
        for p, flag in zip(params, was):
            p.grad = None
            p.requires_grad_(flag)
    return scores


@register
class LLMPruner(ModelMethod):
    name: ClassVar[str] = "llm_pruner"
    capabilities: ClassVar[Capabilities] = Capabilities(kinds=frozenset({"structured"}))
    Params: ClassVar[type] = LLMPrunerParams
    description: ClassVar[str] = "gradient (Taylor) importance of coupled heads/channels, layer range"
    paper: ClassVar[str] = "arXiv:2305.11627"
    progress: bool = True

    def prune_model(self, model: nn.Module, adapter: Any, data: ModelData,
                    pattern: Pattern) -> ModelResult:
        p = self.params
        if p.seqlen > data.calib_ids.shape[1] or p.n_samples > data.calib_ids.shape[0]:
            raise PruneBenchError(f"{self.name}: needs {p.n_samples} x {p.seqlen} calibration "
                                  f"tokens, the calibration set is {tuple(data.calib_ids.shape)}")
        units, unit_params = unit_param_counts(model, adapter)
        blocks = layer_range(len(units), p.layer_start, p.layer_end)
        remove = allocate(units, unit_params, blocks, pattern.sparsity)
        t0 = time.perf_counter()
        scores = gradient_importance(model, adapter, data.calib_ids[:p.n_samples, :p.seqlen],
                                     p.importance, p.aggregate, self.progress)
        t_importance = time.perf_counter() - t0
        small = shrink(model, adapter, keep_top(scores, units, remove))
        report: dict[str, Any] = {
            "pruned_blocks": blocks, "removed_units": remove,
            "planned_fraction": removed_fraction(units, unit_params, remove),
            "seconds_importance": t_importance}
        if p.recovery:
            report["recovery"] = self._recover(small, adapter, data)
        return ModelResult(small, report)

    def _recover(self, model: nn.Module, adapter: Any, data: ModelData) -> dict[str, Any]:
        p = self.params
        n_rows = p.lora_steps * p.lora_batch_size
        text = data.text_ids(n_rows, p.lora_seqlen, p.seed + 1)            # [n_rows, seqlen]
        targets = sorted({name.rsplit(".", 1)[-1] for name in adapter.layer_names()
                          if adapter.tap(name) is None})
        settings = LoraSettings(steps=p.lora_steps, batch_size=p.lora_batch_size, lr=p.lora_lr,
                                rank=p.lora_rank, alpha=p.lora_alpha, seed=p.seed)
        return lora_recover(model, targets, text, settings, progress=self.progress)


@dataclass(frozen=True)
class LLMPrunerLoRAParams(LLMPrunerParams):
    recovery: bool = True


@register
class LLMPrunerLoRA(LLMPruner):
    name: ClassVar[str] = "llm_pruner_lora"
    Params: ClassVar[type] = LLMPrunerLoRAParams
    description: ClassVar[str] = "LLM-Pruner followed by LoRA recovery, merged back"
    training: ClassVar[str] = "recovery training"
