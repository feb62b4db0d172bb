"""One 2:4 speed target (a grid model or a paper-scale config) -> results/speed/{target}.json.

Owns the plan and the record of the 2:4 speed benchmark: which (shape, tokens, dtype, backend,
mode) cells exist and which a kernel cannot take (with PyTorch's reason), the layer cells and the
bare `torch.mm` reference beside each eager cell (`harness_vs_bare` = our speedup / the bare
one, to be within 5 %), and for grid models the end-to-end prefill and decode of the model with
every supported prunable linear swapped for its 2:4 kernel against the same 2:4-pruned model
run dense (same dtype, batch, prompt; logits checked equal first). Speed depends only on shapes
and the pattern, so weights are magnitude-pruned here; every 2:4 run of a model links to its
file. Without a usable GPU the record says "no GPU" with the reason and holds the plan only:
no figure is ever written that was not measured.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bench import outputs, results, speed
from bench.evaluation import latency
from bench.zoo import models
from bench.adapters import adapter_for
from bench.packages import REPO_ROOT
from bench.zoo.shapes import (PAPER_CONFIGS, LinearShape, grid_config, linear_shapes, meta_model,
                                paper_config, random_model)
from bench.zoo import license_problem, spec_for
from methods.base import PruneBenchError

log = logging.getLogger(__name__)
SCHEMA = "prunebench.speed/1"
RECORD_KEYS = ("schema", "target", "status")     # what makes a file a speed record of ours
DEFAULTS: dict[str, Any] = {
    "paper_configs": list(PAPER_CONFIGS), "tokens": [1, 16, 128, 512, 2048, 8192],
    "dtypes": ["float16", "bfloat16"], "backends": list(speed.BACKENDS),
    "modes": list(speed.MODES), "warmup": 5, "repeats": 20, "min_sample_ms": 2.0, "seed": 0,
    "e2e": {"batch_sizes": [1, 16], "prompt_len": 512, "decode_tokens": 64, "warmup": 2,
            "repeats": 7},
}


def settings_of(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config's `speed` section with defaults filled in."""
    raw = dict(cfg.get("speed") or {})
    out = {**DEFAULTS, **raw}
    out["e2e"] = {**DEFAULTS["e2e"], **(raw.get("e2e") or {})}
    return out


def targets(cfg: dict[str, Any]) -> list[str]:
    """Grid models first (those whose license the user accepted, as the planner), then
    paper-scale configs; [] without a `speed` section ({} = defaults)."""
    if cfg.get("speed") is None:
        return []
    models = [m for m in cfg["models"] if license_problem(spec_for(cfg, m)) is None]
    return models + [p for p in settings_of(cfg)["paper_configs"] if p not in cfg["models"]]


WEIGHTS = ("real", "random")


def _target_model(target: str, cfg: dict[str, Any], weights: str = "real"
                  ) -> tuple[nn.Module, str]:
    """A grid model (end to end too) before a paper config of the same name. `weights="random"`
    builds a grid model from its config with seeded random weights: the same shapes, so the same
    kernel speed, without fetching the real weights (the record says which)."""
    if weights not in WEIGHTS:
        raise PruneBenchError(f"unknown weights '{weights}' (one of {', '.join(WEIGHTS)})")
    if target in PAPER_CONFIGS and target not in cfg["models"]:
        return meta_model(paper_config(target)), "paper_config"
    spec = spec_for(cfg, target)
    if weights == "random" and spec.kind != "random":     # a "random" zoo model already is
        local = str(models.prepare(spec)) if spec.kind == "local" else None   # no download
        return random_model(grid_config(target, local), settings_of(cfg)["seed"]), "model"
    model, _ = models.load_model(models.prepare(spec), torch.float32)
    return model, "model"


def plan_cells(shapes: list[LinearShape], s: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                                      list[dict[str, Any]]]:
    """(cells to time, cells no kernel takes with the reason), over the configured grid."""
    cells, skipped = [], []
    for shape in shapes:
        for dtype in s["dtypes"]:
            for backend in s["backends"]:
                why = speed.unsupported_reason(backend, speed.DTYPES[dtype], shape.out_features,
                                               shape.in_features)
                for tokens in s["tokens"]:
                    for mode in s["modes"]:
                        cell = {"out_features": shape.out_features,
                                "in_features": shape.in_features, "tokens": tokens,
                                "dtype": dtype, "backend": backend, "mode": mode}
                        (skipped if why else cells).append({**cell, **({"reason": why} if why else {})})
    return cells, skipped


def sparsify_model(model: nn.Module, backend: str, make_sparse: speed.SparseMaker
                   ) -> list[str]:
    """Swap every supported prunable linear's (2:4) weight for its kernel format, in place.

    Linears the model never calls as modules (adapter taps: Mamba's dt_proj weight is used
    directly) and shapes the backend refuses stay dense; returns the names swapped."""
    adapter = adapter_for(model)
    done = []
    for name, lin in adapter.prunable(model).items():
        short = name.removeprefix(adapter.blocks_path + ".").split(".", 1)[1]
        out_f, in_f = lin.weight.shape
        if adapter.tap(short) or speed.unsupported_reason(backend, lin.weight.dtype, out_f, in_f):
            continue
        lin.weight = nn.Parameter(make_sparse(lin.weight.data, backend), requires_grad=False)
        done.append(name)
    return done


def e2e_cases(model: nn.Module, s: dict[str, Any], device: torch.device, *,
              make_sparse: speed.SparseMaker = speed.to_semi_structured,
              progress: bool = True) -> list[dict[str, Any]]:
    """Prefill tokens/s and decode ms/token: 2:4 kernels vs the same 2:4 model run dense."""
    adapter, e = adapter_for(model), s["e2e"]
    out = []
    for dtype_name in s["dtypes"]:
        dense = copy.deepcopy(model).to(device, speed.DTYPES[dtype_name]).eval()
        with torch.no_grad():
            for lin in adapter.prunable(dense).values():
                lin.weight.copy_(speed.prune_2of4(lin.weight))
        max_pos = getattr(dense.config, "max_position_embeddings", None) or 10**9
        prompt = min(e["prompt_len"], max_pos - e["decode_tokens"])
        for backend in s["backends"]:
            case = {"dtype": dtype_name, "backend": backend, "prompt_len": prompt,
                    "decode_tokens": e["decode_tokens"]}
            try:
                out.extend(_e2e_backend(dense, backend, case, e, s["seed"], device, make_sparse,
                                        progress))
            except (RuntimeError, NotImplementedError, ValueError) as exc:
                log.warning("end-to-end %s failed: %s", case, exc)
                out.append({**case, "error": " ".join(str(exc).split())[:500]})
        del dense
    return out


def _e2e_backend(dense: nn.Module, backend: str, case: dict[str, Any], e: dict[str, Any],
                 seed: int, device: torch.device, make_sparse: speed.SparseMaker,
                 progress: bool) -> list[dict[str, Any]]:
    sparse = copy.deepcopy(dense)
    swapped = sparsify_model(sparse, backend, make_sparse)
    ids = torch.randint(0, dense.config.vocab_size, (1, case["prompt_len"]),
                        generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.inference_mode():
        err = speed.check_close(sparse(ids).logits, dense(ids).logits,
                                f"end-to-end {case['dtype']} {backend}", speed.E2E_REL_TOL)
    rows = []
    for bs in e["batch_sizes"]:
        res = latency.compare(dense, sparse, batch_size=bs, prompt_len=case["prompt_len"],
                              decode_tokens=e["decode_tokens"], warmup=e["warmup"],
                              repeats=e["repeats"], seed=seed, progress=progress)
        rows.append({**case, "batch_size": bs, "swapped_linears": len(swapped),
                     "logits_max_abs_err": err, "prefill_speedup": res["prefill_speedup"],
                     "decode_speedup": res["decode_speedup"],
                     "dense": _strip(res["dense"]), "sparse": _strip(res["pruned"])})
    return rows


def _strip(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("prefill_tokens_per_s", "decode_ms_per_token", "prefill_seconds",
                              "decode_seconds", "settings")}


def measure_layers(cells: list[dict[str, Any]], s: dict[str, Any], device: torch.device, *,
                   make_sparse: speed.SparseMaker = speed.to_semi_structured,
                   progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Time every cell; beside each eager cell the bare torch.mm reference of the same case."""
    if "compile" in s["modes"]:
        speed.raise_compile_limits()
    timing = {"warmup": s["warmup"], "repeats": s["repeats"],
              "min_sample_s": s["min_sample_ms"] / 1000.0, "seed": s["seed"]}
    layers, errors = [], []
    for c in tqdm(cells, desc="2:4 layer cells", disable=not progress):
        dtype = speed.DTYPES[c["dtype"]]
        try:
            row = speed.layer_case(c["out_features"], c["in_features"], c["tokens"], dtype,
                                   c["backend"], c["mode"], device=device,
                                   make_sparse=make_sparse, **timing)
            if c["mode"] == "eager":
                bare = speed.bare_mm_case(c["out_features"], c["in_features"], c["tokens"], dtype,
                                          c["backend"], device=device, make_sparse=make_sparse,
                                          **timing)
                row["bare_mm"] = bare
                row["harness_vs_bare"] = row["speedup"] / bare["speedup"]
            layers.append(row)
        except (RuntimeError, NotImplementedError, ValueError) as exc:   # a kernel refusing a case
            log.warning("cell %s failed: %s", c, exc)
            errors.append({**c, "error": " ".join(str(exc).split())[:500]})
    return layers, errors


def run_target(target: str, cfg: dict[str, Any], out: Path | None = None, *,
               progress: bool = True, device: torch.device | None = None,
               make_sparse: speed.SparseMaker | None = None, weights: str = "real"
               ) -> dict[str, Any]:
    """Plan and (on a GPU) measure one target; write its record atomically and return it.

    `device` and `make_sparse` exist for testing the harness on CPU with a stand-in converter;
    such a record is marked `stand_in` and is never a result."""
    path = Path(out) if out else REPO_ROOT / "results" / "speed" / f"{target}.json"
    kept = _measured(path) if make_sparse is None else None
    if kept is not None and speed.gpu_unavailable_reason() is not None:
        log.warning("%s: %s, so the measured record %s (%s) is kept, not replaced by a plan",
                    target, speed.gpu_unavailable_reason(), path, (kept.get("gpu") or {}).get("gpu"))
        return kept
    with outputs.claim(path, "--out", "file", lambda p: outputs.json_object_with(p, RECORD_KEYS),
                       create_parent=out is None) as claim:
        record = _run(target, cfg, progress, device, make_sparse, weights)
        claim.tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def _measured(path: Path) -> dict[str, Any] | None:
    """The speed record at `path` when it holds GPU figures (never overwritten by a plan)."""
    rec = outputs.json_object(path)
    ours = rec is not None and all(k in rec for k in RECORD_KEYS)
    return rec if ours and rec["status"] == "measured" and not rec.get("stand_in") else None


def _run(target: str, cfg: dict[str, Any], progress: bool, device: torch.device | None,
         make_sparse: speed.SparseMaker | None, weights: str) -> dict[str, Any]:
    s = settings_of(cfg)
    model, kind = _target_model(target, cfg, weights)
    shapes = linear_shapes(model)
    cells, skipped = plan_cells(shapes, s)
    stand_in = make_sparse is not None
    reason = None if stand_in else speed.gpu_unavailable_reason()
    record: dict[str, Any] = {
        "schema": SCHEMA, "target": target, "kind": kind,
        "weights": "none (shapes only)" if kind == "paper_config" else weights,
        "status": "measured" if reason is None else "no GPU", "reason": reason,
        "stand_in": stand_in, "settings": s, "environment": results.environment_info(),
        "gpu": speed.gpu_environment(), "code": results.git_info(REPO_ROOT),
        "shapes": [sh.as_dict() for sh in shapes], "planned_cells": len(cells),
        "unsupported": skipped, "layers": [], "errors": [], "e2e": []}
    if reason is None:
        dev = device or torch.device("cuda")
        backends = [b for b in s["backends"]
                    if stand_in or not speed.backend_unavailable_reason(b)]
        record["backends_unavailable"] = {b: speed.backend_unavailable_reason(b)
                                          for b in s["backends"] if b not in backends}
        run_cells = [c for c in cells if c["backend"] in backends]
        maker = make_sparse or speed.to_semi_structured
        record["layers"], record["errors"] = measure_layers(run_cells, s, dev, make_sparse=maker,
                                                            progress=progress)
        if kind == "model":
            record["e2e"] = e2e_cases(model, {**s, "backends": backends}, dev, make_sparse=maker,
                                      progress=progress)
    else:
        log.warning("%s: %s; recording the plan (%d cells) and no figures", target, reason,
                    len(cells))
    return record
