"""Benchmark: per-layer reconstruction error of several layer-wise methods on the SAME inputs.

Owns the comparison behind the APT-vs-SparseGPT claim: the sequential engine runs once; at every
shared-input group each compared method prunes a copy of the layers from the same statistic, and
the layer reconstruction error  ||(W - W') X||^2 / ||W X||^2 = tr(dW H dW^T) / tr(W H W^T)  is
recorded per method (H = 2 X X^T / n, the engine's undamped Hessian). The weights of the first
method listed in --propagate-with are kept, so later blocks see that method's pruned outputs.

    python -m bench.tools.layer_error --model smollm2-135m --pattern 2of4 --methods sparsegpt apt

writes results/bench/layer_error/{model}-{pattern}.json.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import torch

from bench import results
from bench.tools import devbench
from bench.zoo import models
from bench.adapters import adapter_for
from bench.engine import prune_layerwise
from bench.packages import REPO_ROOT
from bench.data.calibration import load_calibration_for
from methods import registry
from methods.base import Capabilities, LayerResult, LayerStats, LayerwiseMethod, Pattern

log = logging.getLogger(__name__)


def relative_error(w: torch.Tensor, new: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr(dW H dW^T) / tr(W H W^T) in float64; w, new [out, in], hessian [in, in]."""
    w64, d64, h64 = w.double(), (w - new).double(), hessian.double()
    return float(((d64 @ h64) * d64).sum() / ((w64 @ h64) * w64).sum())


class Compare(LayerwiseMethod):
    """Runs every method on each group's statistic; keeps the first one's weights."""

    name = "compare"
    stat = "hessian"
    capabilities = Capabilities(kinds=frozenset({"unstructured", "nm"}))

    def __init__(self, methods: list[LayerwiseMethod]) -> None:
        super().__init__()
        self.methods = methods
        self.rows: list[dict[str, Any]] = []

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None, pattern: Pattern,
                    name: str = "layer") -> LayerResult:
        return self.prune_group([weight], stats, pattern, [name])[0]

    def prune_group(self, weights: list[torch.Tensor], stats: LayerStats | None,
                    pattern: Pattern, names: list[str]) -> list[LayerResult]:
        assert stats is not None and stats.hessian is not None
        kept: list[LayerResult] | None = None
        rows = [{"layer": n, "in": w.shape[1], "out": w.shape[0]} for n, w in zip(names, weights)]
        for m in self.methods:
            t0 = time.perf_counter()
            res = m.prune_group([w.clone() for w in weights], stats, pattern, names)
            secs = time.perf_counter() - t0
            for row, w, r in zip(rows, weights, res):
                row[m.name] = relative_error(w, r.weight, stats.hessian)
                row[f"{m.name}_seconds"] = secs / len(weights)
            kept = kept or res
        self.rows.extend(rows)
        assert kept is not None
        return kept


def summarize(rows: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """How many layers `b` beats `a` on (strictly lower error), and the error ratios."""
    ratios = sorted(r[b] / r[a] for r in rows if r[a] > 0)
    return {"layers": len(rows), f"{b}_wins": sum(r[b] < r[a] for r in rows),
            "ties": sum(r[b] == r[a] for r in rows),
            "ratio_median": ratios[len(ratios) // 2] if ratios else None,
            "ratio_min": ratios[0] if ratios else None, "ratio_max": ratios[-1] if ratios else None,
            f"{a}_seconds": sum(r[f"{a}_seconds"] for r in rows),
            f"{b}_seconds": sum(r[f"{b}_seconds"] for r in rows)}


def main(argv: list[str] | None = None) -> dict:
    p = devbench.parser(__doc__)
    p.add_argument("--methods", nargs="+", default=["sparsegpt", "apt"],
                   help="the first one's weights are propagated to later blocks")
    args = p.parse_args(argv)
    cfg, pattern, spec = devbench.setup(args)
    methods = [registry.create(m, cfg["methods"].get(m, {})) for m in args.methods]
    model, _ = models.load_model(models.prepare(spec), models.DTYPES[cfg["engine"]["dtype"]])
    ids, _ = load_calibration_for(args.model, cfg, None)
    cmp = Compare(methods)
    prune_layerwise(model, adapter_for(model), cmp, pattern, ids, cfg["engine"]["batch_size"],
                    methods[0].sequential, progress=True)
    out = {"model": args.model, "pattern": args.pattern, "methods": args.methods,
           "propagated": args.methods[0], "calibration_shape": list(ids.shape),
           "summary": summarize(cmp.rows, args.methods[0], args.methods[1])
           if len(args.methods) > 1 else None,
           "layers": cmp.rows, "environment": results.environment_info(),
           "code": results.git_info(REPO_ROOT)}
    path = results.write_bench_json(out, REPO_ROOT / "results" / "bench" / "layer_error" /
                                    f"{args.model}-{args.pattern}.json", args.out)
    log.info("%s -> %s", json.dumps(out["summary"]), path)
    return out


if __name__ == "__main__":
    main()
