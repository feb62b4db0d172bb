"""Benchmark: zero-shot evaluation time with lm-eval's HFLM vs our shared-context LM.

Owns the measurement behind "make evaluation fast before you make it small". Usage:
    python -m bench.tools.zeroshot_speed --model smollm2-135m --limit 20
It loads the dense zoo model once, runs the same task subset with `share_contexts` off (lm-eval's
HFLM as released) and on (bench/evaluation/zeroshot_lm.py), checks that every accuracy is identical, and
writes results/bench/zeroshot_speed/{model}-limit{N}.json with both wall times and the ratio.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import torch

from bench import results
from bench.evaluation import zeroshot
from bench.zoo import models
from bench.packages import REPO_ROOT
from bench.zoo import get_spec, load_zoo

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tasks", nargs="*", default=list(zeroshot.TASKS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = get_spec(args.model, load_zoo())
    model, tok = models.load_model(models.prepare(spec), torch.float32)
    runs = {}
    for share in (False, True):
        cfg = {"tasks": args.tasks, "limit": args.limit, "batch_size": args.batch_size,
               "share_contexts": share}
        metrics, meta = zeroshot.evaluate(model, tok, cfg)
        runs["shared" if share else "hflm"] = {"seconds": meta["seconds"], "metrics": metrics,
                                               "examples": meta["examples"]["tasks"]}
    same = all(runs["hflm"]["metrics"][k] == runs["shared"]["metrics"][k]
               for k in runs["hflm"]["metrics"])
    per_doc = compare_examples(runs["hflm"]["examples"], runs["shared"]["examples"])
    data = {"model": args.model, "limit": args.limit, "tasks": args.tasks,
            "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "environment": results.environment_info(),
            "seconds_hflm": runs["hflm"]["seconds"], "seconds_shared": runs["shared"]["seconds"],
            "speedup": runs["hflm"]["seconds"] / runs["shared"]["seconds"],
            "identical_metrics": same, "per_document": per_doc, "metrics_hflm": runs["hflm"]["metrics"],
            "metrics_shared": runs["shared"]["metrics"]}
    default = REPO_ROOT / "results" / "bench" / "zeroshot_speed" / f"{args.model}-limit{args.limit}.json"
    path = results.write_bench_json(data, default, args.out)
    log.info("HFLM %.1fs, shared contexts %.1fs: %.2fx, identical metrics: %s, per document: %s -> %s",
             data["seconds_hflm"], data["seconds_shared"], data["speedup"], same, per_doc, path)
    return 0


def compare_examples(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | int]:
    """Per-document agreement of two zero-shot records of the same subset: the largest absolute
    difference of a choice's log-likelihood, and how many documents changed their acc outcome."""
    worst, changed, n = 0.0, 0, 0
    for task, ra in a.items():
        rb = b[task]
        if ra["doc_ids"] != rb["doc_ids"]:
            raise ValueError(f"zero-shot {task}: the two records score different documents")
        for la, lb in zip(ra["loglik"], rb["loglik"]):      # [choices] each
            worst = max(worst, max(abs(x - y) for x, y in zip(la, lb)))
        changed += sum(x != y for x, y in zip(ra["acc"], rb["acc"]))
        n += len(ra["doc_ids"])
    return {"documents": n, "acc_changed": changed, "max_abs_loglik_diff": worst}


if __name__ == "__main__":
    raise SystemExit(main())
