"""DarwinLM (Tang et al., arXiv 2502.07780): evolutionary search over per-layer structured levels.

Owns the method. Every block and unit kind has a ladder of levels (methods/level_db.py: the greedy
second-order removal order over whole heads / channels, with OBS weight updates of the
consumers). A candidate gives each block a level per kind; the search starts from the uniform
allocation, mutates by moving one level between blocks of the same kind (the total per kind,
hence the compression, stays fixed: methods.evolution), and selects in stages on more and more
held-out calibration tokens. Fitness is training-aware: each candidate is stitched (sliced and
re-solved from the dense model), trained for a few steps on calibration-corpus text, then scored
by the KL divergence of its next-token distribution from the dense model's. The result is the
stitched (untrained) model of the selected layout; the layout and the search history go to the
run JSON.
"""
from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from methods import level_db
from bench.structure import layer_units, shrink
from methods.base import (Capabilities, ModelData, ModelMethod, ModelResult, Pattern,
                          PruneBenchError)
from methods.evolution import Candidate, evolve, uniform_start
from methods.registry import register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DarwinLMParams:
    levels: int = 20                    # ladder steps per kind (capped at the unit count)
    percdamp: float = 0.01
    generations: int = 8
    offspring: int = 6
    survivors: list[int] = field(default_factory=lambda: [4, 2, 1])      # kept after each stage
    stage_tokens: list[int] = field(default_factory=lambda: [512, 1024, 2048])   # fitness text
    train_tokens: list[int] = field(default_factory=lambda: [256, 512, 1024])    # before fitness
    train_lr: float = 1e-5
    train_batch: int = 2                # sequences per training step
    seqlen: int = 256
    seed: int = 0

    def validate(self) -> None:
        lists = (self.survivors, self.stage_tokens, self.train_tokens)
        if len({len(x) for x in lists}) != 1 or not self.survivors:
            raise PruneBenchError("darwinlm: survivors, stage_tokens and train_tokens need one "
                                  "entry per selection stage")
        if any(not isinstance(v, int) or v < 0 for x in lists for v in x):
            raise PruneBenchError("darwinlm: stage lists hold non-negative integers")
        if any(t < self.seqlen for t in self.stage_tokens):
            raise PruneBenchError("darwinlm: every stage needs at least seqlen fitness tokens")
        if self.levels < 2 or self.offspring < 1 or self.generations < 0 or self.train_batch < 1:
            raise PruneBenchError("darwinlm: levels >= 2, offspring >= 1, generations >= 0, "
                                  "train_batch >= 1 required")
        if not self.percdamp > 0 or self.train_lr < 0 or self.seqlen < 2:
            raise PruneBenchError("darwinlm: percdamp > 0, train_lr >= 0 and seqlen >= 2 required")
        if (any(s < 1 for s in self.survivors) or self.survivors[-1] != 1
                or any(b > a for a, b in zip(self.survivors, self.survivors[1:]))):
            raise PruneBenchError("darwinlm: survivors must be positive, non-increasing and end "
                                  "with 1")


def _kl(logp_dense: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(dense || candidate); both [tokens, vocab]."""
    logq = F.log_softmax(logits.float(), dim=-1)
    return (logp_dense.exp() * (logp_dense - logq)).sum(-1).mean()


class _Search:
    """Stitching, short training and fitness of candidates for one pruning run (memoised)."""

    def __init__(self, dense: nn.Module, adapter: Any, db: level_db.LevelDB, p: DarwinLMParams,
                 fit_ids: torch.Tensor, train_ids: torch.Tensor) -> None:
        self.dense, self.adapter, self.db, self.p = dense, adapter, db, p
        self.units = layer_units(dense, adapter)
        self.steps = {k: min(p.levels, self.units[0][k]) for k in self.units[0]}
        device = next(dense.parameters()).device               # ids go where the model is
        self.fit_ids, self.train_ids = fit_ids.to(device), train_ids.to(device)   # [rows, seqlen]
        with torch.no_grad():
            self.logp = [F.log_softmax(dense(input_ids=row[None]).logits[0].float(), -1)
                         for row in self.fit_ids]                # per row [seqlen, vocab]
        self.memo: dict[tuple[str, int], float] = {}

    def removed(self, kind: str, i: int, level: int) -> int:
        return round(level * self.units[i][kind] / self.steps[kind])

    @torch.no_grad()
    def stitch(self, cand: Candidate) -> nn.Module:
        work = copy.deepcopy(self.dense)
        blocks = self.adapter.blocks(work)
        keep: list[dict[str, torch.Tensor]] = [{} for _ in blocks]
        for kind, levels in cand.items():
            for i, level in enumerate(levels):
                n_removed = self.removed(kind, i, level)
                keep[i][kind] = self.db.keep(i, kind, n_removed)
                if n_removed:
                    new = self.db.consumer_weights(self.dense, self.adapter, i, kind, n_removed)
                    for name, w in new.items():
                        blocks[i].get_submodule(name).weight.copy_(w)
        return shrink(work, self.adapter, keep, inplace=True)

    def _train(self, model: nn.Module, n_tokens: int) -> None:
        """A few AdamW steps in float32 master weights (a float16 model's AdamW underflows its
        eps and gives NaN: seen on an H200 and on CPU), then back to the run's dtype."""
        rows = n_tokens // self.p.seqlen
        if rows == 0:
            return
        tensors = [*model.named_parameters(), *model.named_buffers()]
        dtypes = {name: t.dtype for name, t in tensors}         # restored one by one below
        model.float()
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad],
                                lr=self.p.train_lr, weight_decay=0.0)
        model.train()
        for start in range(0, rows, self.p.train_batch):
            batch = self.train_ids[start % len(self.train_ids):][:self.p.train_batch]
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            t.data = t.data.to(dtypes[name])
        model.eval()

    def fitness(self, cand: Candidate, stage: int) -> float:
        key = (repr(sorted(cand.items())), stage)
        if key not in self.memo:
            model = self.stitch(cand)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.p.seed)
                self._train(model, self.p.train_tokens[stage])
            rows = self.p.stage_tokens[stage] // self.p.seqlen
            with torch.no_grad():
                kls = [_kl(self.logp[r], model(input_ids=self.fit_ids[r][None]).logits[0])
                       for r in range(rows)]
            self.memo[key] = float(torch.stack(kls).mean())
            if not math.isfinite(self.memo[key]):
                raise PruneBenchError(f"darwinlm: a candidate's fitness (KL) is "
                                      f"{self.memo[key]} at stage {stage}; its layout: {cand}")
        return self.memo[key]

    def stage(self, s: int):
        return lambda cands: [self.fitness(c, s) for c in cands]


@register
class DarwinLM(ModelMethod):
    name: ClassVar[str] = "darwinlm"
    capabilities: ClassVar[Capabilities] = Capabilities(kinds=frozenset({"structured"}))
    Params: ClassVar[type] = DarwinLMParams
    description: ClassVar[str] = "evolutionary search of per-layer levels over an OBS ladder, training-aware"
    paper: ClassVar[str] = "arXiv:2502.07780"
    training: ClassVar[str] = "search with training"     # candidates are trained while searched
    progress: bool = True
    # the Snakemake rule `level_db` builds this once per model before any darwinlm job
    cache_inputs: ClassVar[tuple[str, ...]] = ("work/darwinlm/{model}.safetensors",)

    def prune_model(self, model: nn.Module, adapter: Any, data: ModelData,
                    pattern: Pattern) -> ModelResult:
        p = self.params
        if data.calib_ids.numel() == 0:
            raise PruneBenchError("darwinlm needs calibration data")
        t0 = time.perf_counter()
        path = (data.work_dir or Path("work")) / "darwinlm" / f"{data.model_key}.safetensors"
        db = level_db.load_or_build(path, model, adapter, data.calib_ids, p.percdamp, self.progress)
        t_db = time.perf_counter() - t0
        n_rows = max(p.stage_tokens) // p.seqlen
        fit_ids = data.text_ids(n_rows, p.seqlen, p.seed + 101)              # held-out text
        train_ids = data.text_ids(max(1, max(p.train_tokens) // p.seqlen), p.seqlen, p.seed + 202)
        search = _Search(model, adapter, db, p, fit_ids, train_ids)
        n_layers = len(search.units)
        totals = {k: round(pattern.sparsity * n_layers * s) for k, s in search.steps.items()}
        max_level = {k: s - 1 for k, s in search.steps.items()}
        for k in totals:
            if totals[k] > n_layers * max_level[k]:
                raise PruneBenchError(f"darwinlm: {pattern.slug} removes more '{k}' units than "
                                      f"the ladder allows (every block keeps one)")
        start = uniform_start({k: n_layers for k in totals}, totals, max_level)
        stages = [search.stage(s) for s in range(len(p.survivors))]
        t1 = time.perf_counter()
        best, history = evolve(start, stages, list(p.survivors), p.generations, p.offspring,
                               random.Random(p.seed), max_level, progress=self.progress)
        last = len(p.survivors) - 1
        fit_start, fit_best = search.fitness(start, last), search.fitness(best, last)
        t_search = time.perf_counter() - t1
        pruned = search.stitch(best)
        log.info("darwinlm: final-stage fitness (KL) uniform %.5f -> searched %.5f",
                 fit_start, fit_best)
        report = {
            "layout": best, "uniform_start": start,
            "removed_units": [{k: search.removed(k, i, best[k][i]) for k in best}
                              for i in range(n_layers)],
            "ladder_steps": search.steps, "fitness_uniform": fit_start, "fitness_selected": fit_best,
            "history": [{"generation": h["generation"], "best_fitness": h["best_fitness"]}
                        for h in history],
            "candidates_evaluated": len(search.memo),
            "seconds_level_db": t_db, "seconds_search": t_search, "level_db": str(path)}
        return ModelResult(pruned, report)
