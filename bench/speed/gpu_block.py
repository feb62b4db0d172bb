"""Pruning cost at paper scale: wall time and peak GPU memory of one Llama-2-7B-shaped block.

Owns one measurement of the GPU call (bench/speed/gpu_check.py): sparsegpt and apt, with the paper
config's hyperparameters, engine batch size and float16, prune a one-block model with the
Llama-2-7B shapes (hidden 4096, MLP 11008, 32 heads; seeded random weights: cost depends on
shapes, not values) through the shared engine on the paper protocol's 128 x 2048 calibration
tokens (seeded random ids). Each (method, pattern) runs in its own process with a timeout, so a
slow one cannot eat the others' time and peak memory is that case's alone:
    python -m bench.speed.gpu_block --method apt --pattern 2of4 --out block.json [--scale tiny]
`--scale tiny` (hidden 256, 4 x 128 tokens) rehearses the same code on a CPU in seconds.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench import results
from bench.adapters import adapter_for
from bench.config import read_yaml
from bench.engine import prune_layerwise
from bench.evaluation.evaluate import check_finite_weights, check_pattern, measure_sparsity
from bench.packages import REPO_ROOT
from bench.zoo.shapes import paper_config
from methods import registry
from methods.base import parse_pattern

log = logging.getLogger(__name__)
DONE_LINE = re.compile(r"bench\.engine pruned (.+?) in ([0-9.]+) s")
CASES = [("sparsegpt", "2of4"), ("apt", "2of4"), ("sparsegpt", "unstructured-50"),
         ("apt", "unstructured-50")]
SCALES = {"paper": {"n_samples": 128, "seqlen": 2048, "shape": {}},
          "tiny": {"n_samples": 4, "seqlen": 128,
                   "shape": {"hidden_size": 256, "intermediate_size": 688, "num_attention_heads": 4,
                             "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 1024}}}


def block_model(scale: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A one-block LlamaForCausalLM with Llama-2-7B's shapes (or the tiny rehearsal's)."""
    from transformers import AutoModelForCausalLM

    config = paper_config("llama-2-7b")
    for key, value in {"num_hidden_layers": 1, **SCALES[scale]["shape"]}.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def measure(method_name: str, slug: str, scale: str, device: torch.device) -> dict[str, Any]:
    paper = read_yaml(REPO_ROOT / "config" / "paper.yaml", "paper config")
    dtype = getattr(torch, paper["engine"]["dtype"])
    batch = paper["engine"]["batch_size"]
    s = SCALES[scale]
    model = block_model(scale, device, dtype)
    adapter = adapter_for(model)
    ids = torch.randint(0, model.config.vocab_size, (s["n_samples"], s["seqlen"]),
                        generator=torch.Generator().manual_seed(0))              # [n, seq]
    method = registry.create(method_name, paper["methods"][method_name])
    pattern = parse_pattern(slug)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    rep = prune_layerwise(model, adapter, method, pattern, ids, batch, method.sequential,
                          progress=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    check_finite_weights(model, f"{method_name} {slug}")
    sp = measure_sparsity(model, adapter)
    check_pattern(model, adapter, pattern, sp["per_layer"])
    out: dict[str, Any] = {
        "method": method_name, "pattern": slug, "params": method.params_dict(), "scale": scale,
        "shapes": {k: getattr(model.config, k) for k in ("hidden_size", "intermediate_size",
                                                         "num_attention_heads")},
        "calibration_shape": [s["n_samples"], s["seqlen"]], "batch_size": batch,
        "dtype": str(dtype).removeprefix("torch."), "device": str(device),
        "sequential": method.sequential, "seconds": seconds, "sparsity": sp["achieved"],
        "breakdown": {"stats": rep.seconds_stats, "prune": rep.seconds_prune,
                      "propagate": rep.seconds_propagate},
        "group_seconds": rep.group_seconds}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["model_gpu_mib"] = before / 2**20
    return out


def groups_done(stderr: str | bytes | None) -> dict[str, float]:
    """The layer groups a stopped case had pruned, with their seconds, from its engine log."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    return {m.group(1): float(m.group(2)) for m in DONE_LINE.finditer(text)}


def run_all(out: Path, device: str, budget_s: float, scale: str,
            only: list[str] | None = None) -> list[dict[str, Any]]:
    """Every case (or those `only` names, "method:pattern") in its own process, each given what
    is left of `budget_s`; part-block.json."""
    deadline = time.monotonic() + budget_s
    rows: list[dict[str, Any]] = []
    for method, slug in [c for c in CASES if not only or f"{c[0]}:{c[1]}" in only]:
        left = deadline - time.monotonic()
        row: dict[str, Any] = {"method": method, "pattern": slug, "scale": scale}
        if left < 5:
            rows.append({**row, "error": "not run: the part's time budget was spent"})
            continue
        dest = out / f"block-{method}-{slug}.json"
        cmd = [sys.executable, "-m", "bench.speed.gpu_block", "--method", method, "--pattern", slug,
               "--scale", scale, "--device", device, "--out", str(dest)]
        try:
            proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=left)
            if proc.returncode == 0 and dest.exists():
                rows.append(json.loads(dest.read_text()))
                continue
            row["error"] = f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
        except subprocess.TimeoutExpired as exc:
            row["error"] = f"did not finish in the {left:.0f} s left of the part's budget"
            row["groups_done"] = groups_done(exc.stderr)
        log.warning("block %s %s: %s", method, slug, row["error"])
        rows.append(row)
    results.write_bench_json({"cases": rows}, out / "part-block.json", keys=("cases",))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted({m for m, _ in CASES}))
    p.add_argument("--pattern", required=True)
    p.add_argument("--scale", choices=tuple(SCALES), default="paper")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("bench.engine").setLevel(logging.DEBUG)     # one line per pruned group
    rec = measure(args.method, args.pattern, args.scale, torch.device(args.device))
    rec["environment"] = results.environment_info()
    results.write_bench_json(rec, Path(args.out), keys=("method", "pattern", "scale"))
    log.info("%s %s: %.1f s", args.method, args.pattern, rec["seconds"])


if __name__ == "__main__":
    main()
