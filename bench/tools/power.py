"""Benchmark: how many zero-shot documents the grid needs (a power analysis on committed runs).

Owns the measurement behind `evaluation.zeroshot.limit`: the zero-shot subsets are nested (the
first `limit` documents of one seeded permutation, bench.evaluation.zeroshot.subset), so the runs of one
model scored at the grid's limit also hold their scores on every smaller subset. For each run
of the model, the half-width of the paired 95 % interval of its zero-shot average against dense
is measured at each count (default 100, 250 and the grid's limit), and predicted for the larger
counts from the one at the smallest (1/sqrt(n)); the cost per run is the recorded zero-shot
seconds. Usage:
    python -m bench.tools.power --model smollm2-135m
Writes results/bench/power/{model}.json.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from bench import results
from bench.board import paired
from bench.evaluation import examples
from bench.packages import REPO_ROOT
from bench.evaluation.zeroshot import subset
from methods.base import PruneBenchError

log = logging.getLogger(__name__)


def _restrict(rec: dict[str, Any], keep: dict[str, set[int]]) -> paired.Values:
    """A record's zero-shot acc on the documents of `keep` (task -> doc ids), one stratum per task."""
    tasks = sorted(keep)
    strata = []
    for task in tasks:
        t = rec["zeroshot"]["tasks"][task]
        strata.append(np.asarray([a for d, a in zip(t["doc_ids"], t["acc"]) if d in keep[task]],
                                 dtype=float))
    return paired.Values(tuple(strata))


def measure(results_dir: Path, model: str, counts: list[int]) -> dict[str, Any]:
    """Per run: measured half-width at each count, and predicted from the smallest."""
    root = Path(results_dir) / "runs" / model
    dense_json = json.loads((root / "dense" / "dense.json").read_text())
    dense = examples.load(root / "dense" / f"dense{examples.SUFFIX}")
    meta = dense_json["metrics_meta"]["zeroshot"]
    limit, seed = meta["limit"], meta["seed"]
    if max(counts) > limit:
        raise PruneBenchError(f"counts up to {max(counts)} but the runs hold {limit} per task")
    split = {t: v["n_split"] for t, v in meta["tasks"].items()}
    name = {t: v["lm_eval_task"] for t, v in meta["tasks"].items()}
    keeps = {n: {t: set(subset(split[t], n, seed, name[t])) for t in split} for n in counts}
    rows = []
    for path in sorted(root.glob(f"*/*{examples.SUFFIX}")):
        rec = examples.load(path)
        if rec["run"]["method"] == "dense" or rec.get("zeroshot") is None:
            continue
        run_json = json.loads(path.with_name(path.name.replace(examples.SUFFIX, ".json")).read_text())
        measured = {n: paired.interval(_restrict(rec, keeps[n]), _restrict(dense, keeps[n])).half_width
                    for n in counts}
        rows.append({"method": rec["run"]["method"], "pattern": rec["run"]["pattern"],
                     "half_width": measured,
                     "predicted_from_smallest": {n: paired.half_width_at(measured[counts[0]],
                                                                         counts[0], n) for n in counts},
                     "zeroshot_seconds": run_json["metrics_meta"]["zeroshot"]["seconds"]})
    if not rows:
        raise PruneBenchError(f"no pruned run of '{model}' with zero-shot records under {root}")
    hw = {n: float(np.median([r["half_width"][n] for r in rows])) for n in counts}
    secs = [r["zeroshot_seconds"] for r in rows]
    return {"model": model, "limit": limit, "counts": counts, "docs_per_task": {
                t: min(limit, split[t]) for t in split},
            "median_half_width": hw,
            "median_predicted_from_smallest": {n: paired.half_width_at(hw[counts[0]], counts[0], n)
                                               for n in counts},
            "zeroshot_seconds_per_run": {"median": float(np.median(secs)), "min": min(secs),
                                         "max": max(secs), "n_runs": len(secs)},
            "runs": rows, "resamples": paired.N_RESAMPLES,
            "code": results.git_info(REPO_ROOT)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--counts", type=int, nargs="+", default=[100, 250, 500])
    p.add_argument("--results", default=str(REPO_ROOT / "results"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = measure(Path(args.results), args.model, sorted(args.counts))
    path = results.write_bench_json(out, REPO_ROOT / "results" / "bench" / "power" /
                                    f"{args.model}.json", args.out)
    log.info("median paired half-width %s (predicted from %d: %s) -> %s", out["median_half_width"],
             out["counts"][0], out["median_predicted_from_smallest"], path)
    return out


if __name__ == "__main__":
    main()
