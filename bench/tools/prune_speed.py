"""Benchmark: pruning wall time relative to one forward pass of the calibration set.

Owns the measurement behind our speed goal (SparseGPT on smollm2-135m at most 1.5x one forward
pass of the calibration set). Usage:
    python -m bench.tools.prune_speed --model smollm2-135m --method sparsegpt --pattern 2of4
It loads the model once, times a full forward of the calibration ids through the whole model
(batches of --forward-batch sequences, after a warm-up batch; a batch of all 64 sequences would
spend its time materialising a 6 GB logits tensor), then times the engine, and writes
results/bench/prune_speed/{model}-{method}-{pattern}.json with the ratio and the engine's breakdown.
"""
from __future__ import annotations

import logging
import os
import time

import torch

from bench import results
from bench.tools import devbench
from bench.zoo import models
from bench.adapters import adapter_for
from bench.engine import prune_layerwise
from bench.packages import REPO_ROOT
from bench.data.calibration import load_calibration_for
from methods import registry

log = logging.getLogger(__name__)


@torch.no_grad()
def forward_seconds(model: torch.nn.Module, ids: torch.Tensor, batch_size: int) -> float:
    """Wall time of one forward pass of ids [n, seq] through the whole model, batch by batch."""
    model(input_ids=ids[:1], use_cache=False)          # warm-up
    t0 = time.perf_counter()
    for start in range(0, ids.shape[0], batch_size):
        model(input_ids=ids[start:start + batch_size], use_cache=False)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = devbench.parser(__doc__)
    p.add_argument("--method", default="sparsegpt")
    p.add_argument("--forward-batch", type=int, default=8, help="sequences per forward batch")
    p.add_argument("--engine-batch", type=int, default=None,
                   help="engine batch size (default: the config's engine.batch_size)")
    args = p.parse_args(argv)
    cfg, pattern, spec = devbench.setup(args)
    model, _ = models.load_model(models.prepare(spec), models.DTYPES[cfg["engine"]["dtype"]])
    ids, _ = load_calibration_for(args.model, cfg, None)
    bs = args.engine_batch or cfg["engine"]["batch_size"]
    fwd = forward_seconds(model, ids, args.forward_batch)
    method = registry.create(args.method, cfg["methods"].get(args.method, {}))
    t0 = time.perf_counter()
    rep = prune_layerwise(model, adapter_for(model), method, pattern, ids, bs,
                          method.sequential, progress=True)
    prune = time.perf_counter() - t0
    out = {
        "model": args.model, "method": args.method, "pattern": args.pattern,
        "calibration_shape": list(ids.shape), "batch_size": bs,
        "forward_batch_size": args.forward_batch, "sequential": method.sequential,
        "forward_seconds": fwd, "prune_seconds": prune, "ratio": prune / fwd,
        "breakdown": {"stats": rep.seconds_stats, "prune": rep.seconds_prune,
                      "propagate": rep.seconds_propagate},
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "environment": results.environment_info(), "code": results.git_info(REPO_ROOT),
    }
    path = results.write_bench_json(out, REPO_ROOT / "results" / "bench" / "prune_speed" /
                                    f"{args.model}-{args.method}-{args.pattern}.json", args.out)
    log.info("forward %.1fs, prune %.1fs, ratio %.2fx -> %s", fwd, prune, prune / fwd, path)
    return out


if __name__ == "__main__":
    main()
