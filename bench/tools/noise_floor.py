"""Benchmark: the numerical noise floor of a layer-wise run, and how much the tie rule matters.

Owns two measurements on one (model, method, pattern), each pruning the model several times with
nothing changed but one setting, and reporting perplexity (the protocol's windows) and how many
mask entries (and, for N:M, groups) differ from the first setting:
    python -m bench.tools.noise_floor --model smollm2-135m --method sparsegpt --pattern 2of4 --vary batch
        engine batch sizes (default 64 32 8): float accumulation order is the only difference
    python -m bench.tools.noise_floor --model smollm2-135m --method magnitude --pattern 2of4 --vary tie
        methods.masks' tie rule: lower index removed first (ours) vs higher index first
Writes results/bench/noise_floor/{model}-{method}-{pattern}-{vary}.json. The leaderboard and
`bench compare` read the batch floor: a difference smaller than it is not a finding.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import torch

from bench import data, results
from bench.tools import devbench
from bench.zoo import models
from bench.adapters import adapter_for
from bench.data.calibration import load_calibration_for
from bench.engine import prune_layerwise
from bench.evaluation.evaluate import perplexity
from bench.packages import REPO_ROOT
from methods import masks, registry

log = logging.getLogger(__name__)


def removed_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """name -> bool [out, in], True where the prunable weight is zero."""
    return {n: lin.weight.detach() == 0 for n, lin in adapter_for(model).prunable(model).items()}


def mask_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                    m: int | None) -> dict[str, float]:
    """Fraction of weights (and of M-groups, for N:M) whose removed/kept state differs."""
    diff = total = gdiff = gtotal = 0
    for name, ma in a.items():
        d = ma != b[name]                                             # [out, in]
        diff += int(d.sum())
        total += d.numel()
        if m:
            g = d.reshape(d.shape[0], -1, m).any(-1)                  # [out, in/m]
            gdiff += int(g.sum())
            gtotal += g.numel()
    out = {"weights": diff / total}
    if m:
        out["groups"] = gdiff / gtotal
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = devbench.parser(__doc__)
    p.add_argument("--method", default="sparsegpt")
    p.add_argument("--vary", choices=("batch", "tie"), default="batch")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 32, 8])
    args = p.parse_args(argv)
    cfg, pattern, spec = devbench.setup(args)
    method = registry.create(args.method, cfg["methods"].get(args.method, {}))
    source = models.prepare(spec)
    ids, _ = load_calibration_for(args.model, cfg, None) if method.stat != "none" else (None, None)
    ppl_cfg = cfg["evaluation"]["ppl"]
    settings: list[Any] = args.batch_sizes if args.vary == "batch" else list(masks.TIE_RULES)
    rows: list[dict[str, Any]] = []
    first: dict[str, torch.Tensor] | None = None
    for setting in settings:
        model, tok = models.load_model(source, models.DTYPES[cfg["engine"]["dtype"]])
        bs = setting if args.vary == "batch" else cfg["engine"]["batch_size"]
        rule = masks.tie_rule(setting) if args.vary == "tie" else contextlib.nullcontext()
        t0 = time.perf_counter()
        with rule:
            prune_layerwise(model, adapter_for(model), method, pattern, ids, bs,
                            method.sequential, progress=True)
        seconds = time.perf_counter() - t0
        removed = removed_masks(model)
        first = first or removed
        eval_ids = data.eval_token_ids(tok, data.load_corpus(ppl_cfg["corpus"]), ppl_cfg["max_tokens"])
        ppl = perplexity(model, eval_ids, ppl_cfg["seqlen"], ppl_cfg["batch_size"],
                         bos=data.bos_id(tok))
        rows.append({"setting": setting, "ppl": ppl["ppl"], "prune_seconds": seconds,
                     "mask_differs_from_first": mask_difference(first, removed, pattern.m)})
        log.info("%s=%s: ppl %.4f, masks differ %s", args.vary, setting, ppl["ppl"],
                 rows[-1]["mask_differs_from_first"])
    ppls = [r["ppl"] for r in rows]
    out = {"model": args.model, "method": args.method, "pattern": args.pattern,
           "vary": args.vary, "sequential": method.sequential, "rows": rows,
           "relative_spread": max(ppls) / min(ppls) - 1.0,
           "stats_dtype": "float64 accumulation, float32 statistic",
           "environment": results.environment_info(), "code": results.git_info(REPO_ROOT)}
    path = results.write_bench_json(
        out, REPO_ROOT / "results" / "bench" / "noise_floor" /
        f"{args.model}-{args.method}-{args.pattern}-{args.vary}.json", args.out)
    log.info("relative ppl spread %.4f -> %s", out["relative_spread"], path)
    return out


if __name__ == "__main__":
    main()
