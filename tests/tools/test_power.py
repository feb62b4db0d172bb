"""The zero-shot power analysis (bench/tools/power.py) on synthetic nested subsets."""
from __future__ import annotations

import numpy as np
import pytest

from bench.evaluation import examples
from bench.tools import power
from bench.results import example_run, run_path, write_run
from bench.evaluation.zeroshot import subset

SPLIT = {"arc_easy": 2000, "boolq": 1500}


def _write(res, method: str, pattern: str, acc_of: dict) -> None:
    run = example_run("m", method, pattern, 10.0)
    run["metrics_meta"]["zeroshot"] = {
        "limit": 400, "seed": 0, "seconds": 123.0,
        "tasks": {t: {"n_split": n, "lm_eval_task": f"pb_{t}"} for t, n in SPLIT.items()}}
    path = run_path(res, "m", method, pattern)
    write_run(path, run)
    tasks = {}
    for t, n in SPLIT.items():
        docs = subset(n, 400, 0, f"pb_{t}")
        tasks[t] = {"doc_ids": docs, "target": [0] * 400, "loglik": [[0.0, 0.0]] * 400,
                    "acc": [int(acc_of[t][d]) for d in docs]}
    rec = {"schema": examples.SCHEMA, "run": {"model": "m", "method": method, "pattern": pattern},
           "ppl": {"corpus": "wiki", "token_ids_sha256": "a" * 64, "seqlen": 8, "window_ids": [0],
                   "nll": [1.0], "kl": [0.0]},
           "zeroshot": {"protocol": {}, "tasks": tasks}}
    examples.path_for(path).write_bytes(examples.dumps(rec))


def test_half_width_falls_as_one_over_sqrt_n(tmp_path) -> None:
    rng = np.random.default_rng(0)
    dense = {t: rng.random(n) < 0.6 for t, n in SPLIT.items()}
    pruned = {t: np.where(rng.random(len(a)) < 0.3, ~a, a) for t, a in dense.items()}   # 30 % flip
    res = tmp_path / "results"
    _write(res, "dense", "dense", dense)
    _write(res, "wanda", "2of4", pruned)
    out = power.measure(res, "m", [100, 400])
    hw = out["median_half_width"]
    assert out["median_predicted_from_smallest"][400] == pytest.approx(hw[100] / 2)
    assert hw[400] == pytest.approx(hw[100] / 2, rel=0.3)           # measured, not assumed
    assert out["zeroshot_seconds_per_run"]["median"] == 123.0
    assert out["docs_per_task"] == {"arc_easy": 400, "boolq": 400}
