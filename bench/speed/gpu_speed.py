"""The 2:4 speed records of every target inside a fixed time budget (the GPU call's speed part).

Owns the trimming of `bench speed` to a lease: it times two probe cells first (the largest
weight shape at 16 and 2048 tokens, dense, 2:4 and the bare torch.mm beside them), then for each
target picks the richest rung of `LADDER` whose estimated cost fits that target's share of what
is left, updating the per-cell cost from every target measured. The grid models run first (with
their end-to-end prefill and decode), then the paper-scale configs (layer cells only). Each
record is the normal results/speed/{target}.json (bench/speed/speed_run.py) and states the settings it
ran with; a target the budget cannot reach keeps its committed record and is listed as skipped.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import results, speed
from bench.speed import speed_run
from bench.config import load_config
from bench.packages import REPO_ROOT
from bench.zoo.shapes import linear_shapes

log = logging.getLogger(__name__)
# richest first; compiled mode is left out of a 15-minute lease (minutes of compilation per shape)
LADDER: list[dict[str, Any]] = [
    {"tokens": [1, 16, 128, 512, 2048, 8192], "dtypes": ["float16", "bfloat16"], "repeats": 20},
    {"tokens": [1, 16, 128, 2048, 8192], "dtypes": ["float16", "bfloat16"], "repeats": 10},
    {"tokens": [16, 128, 2048], "dtypes": ["float16"], "repeats": 10},
    {"tokens": [16, 2048], "dtypes": ["float16"], "repeats": 5},
]
E2E = {"batch_sizes": [1, 16], "prompt_len": 512, "decode_tokens": 32, "warmup": 1, "repeats": 5}
REHEARSAL_E2E = {"batch_sizes": [1], "prompt_len": 32, "decode_tokens": 4, "warmup": 0, "repeats": 1}
E2E_GUESS_S = 30.0            # per grid model until one is measured
REAL_WEIGHTS_TRAVEL = {"opt-tiny", "mamba-tiny"}     # in zoo/; smollm2's GGUF stays behind
PROBE_REPEATS = 5


def settings(rung: dict[str, Any], rehearsal: bool = False) -> dict[str, Any]:
    return {"tokens": rung["tokens"], "dtypes": rung["dtypes"], "backends": list(speed.BACKENDS),
            "modes": ["eager"], "warmup": 3, "repeats": rung["repeats"], "min_sample_ms": 2.0,
            "seed": 0, "e2e": dict(REHEARSAL_E2E if rehearsal else E2E)}


def probe(shape: tuple[int, int], device: torch.device) -> float:
    """Seconds per eager cell (layer case + bare mm) at PROBE_REPEATS, mean over 16 and 2048 tokens."""
    backend = next((b for b in speed.BACKENDS if not speed.backend_unavailable_reason(b)), None)
    if backend is None:
        return 0.0                  # no kernel here: each record says why, and costs nothing
    speed.layer_case(256, 256, 16, torch.float16, backend, "eager", device=device, warmup=1,
                     repeats=1, min_sample_s=1e-4)         # first use: CUDA and kernel set-up
    spent = []
    for tokens in (16, 2048):
        t0 = time.perf_counter()
        speed.layer_case(*shape, tokens, torch.float16, backend, "eager", device=device,
                         warmup=3, repeats=PROBE_REPEATS, min_sample_s=2e-3)
        speed.bare_mm_case(*shape, tokens, torch.float16, backend, device=device, warmup=3,
                           repeats=PROBE_REPEATS, min_sample_s=2e-3)
        spent.append(time.perf_counter() - t0)
    return sum(spent) / len(spent)


def estimate(n_shapes: int, rung: dict[str, Any], per_cell: float) -> float:
    cells = n_shapes * len(rung["tokens"]) * len(rung["dtypes"]) * len(speed.BACKENDS)
    return cells * per_cell * (rung["repeats"] + 3) / (PROBE_REPEATS + 3)


def run_all(out: Path, device: str, budget_s: float, after_each: Callable[[], Any],
            only: list[str] | None = None) -> dict[str, Any]:
    """Measure every target of config/config.yaml (or those `only` names) into out/speed/;
    part-speed.json says how."""
    deadline = time.monotonic() + budget_s
    dev = torch.device(device)
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    make_sparse = None if dev.type == "cuda" else _stand_in
    # a CPU rehearsal times the stand-in on the tiny models only, at the leanest rung with a short
    # end-to-end case (paper shapes and float16 GEMMs take hours on a CPU)
    names = [t for t in speed_run.targets(cfg) if (make_sparse is None or t in REAL_WEIGHTS_TRAVEL)
             and (not only or t in only)]
    shapes = {t: linear_shapes(speed_run._target_model(t, cfg, _weights(t))[0]) for t in names}
    largest = max((s for ss in shapes.values() for s in ss),
                  key=lambda s: s.out_features * s.in_features)
    per_cell = probe((largest.out_features, largest.in_features), dev) if make_sparse is None \
        else 0.05
    e2e_s = E2E_GUESS_S
    part: dict[str, Any] = {"probe_seconds_per_cell": per_cell, "budget_s": budget_s,
                            "targets": {}, "skipped": {}}
    (out / "speed").mkdir(exist_ok=True)
    for i, target in enumerate(names):
        left = deadline - time.monotonic()
        share = left / (len(names) - i)
        is_model = target in cfg["models"]
        extra = e2e_s if is_model else 0.0
        rung = next((r for r in LADDER if estimate(len(shapes[target]), r, per_cell) + extra <= share
                     and make_sparse is None), LADDER[-1])
        need = estimate(len(shapes[target]), rung, per_cell) + extra
        if need > left:
            part["skipped"][target] = f"needs ~{need:.0f} s, {left:.0f} s left"
            continue
        c = {**cfg, "speed": settings(rung, rehearsal=make_sparse is not None)}
        t0 = time.perf_counter()
        rec = speed_run.run_target(target, c, out / "speed" / f"{target}.json", progress=False,
                                   device=dev if make_sparse else None, make_sparse=make_sparse,
                                   weights=_weights(target))
        spent = time.perf_counter() - t0
        n = len(rec["layers"]) + len(rec["errors"])
        if is_model and rec["e2e"]:
            e2e_s = max(5.0, spent - n * per_cell)
        elif n:
            per_cell = spent / n * (PROBE_REPEATS + 3) / (rung["repeats"] + 3)
        part["targets"][target] = {"rung": LADDER.index(rung), "seconds": spent, "cells": n,
                                   "errors": len(rec["errors"]), "status": rec["status"]}
        log.info("speed %s: rung %d, %d cells in %.0f s", target, LADDER.index(rung), n, spent)
        results.write_bench_json(part, out / "part-speed.json", keys=("targets",))
        after_each()
    results.write_bench_json(part, out / "part-speed.json", keys=("targets",))
    return part


def _weights(target: str) -> str:
    return "real" if target in REAL_WEIGHTS_TRAVEL else "random"


def _stand_in(w: torch.Tensor, backend: str) -> torch.Tensor:
    """CPU rehearsal only: the masked dense weight stands in for the kernel (record says stand_in)."""
    return w.clone()
