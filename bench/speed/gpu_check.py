"""The one prepared GPU call: CUDA correctness of the pipeline, 2:4 speed, pruning cost at scale.

Owns the orchestration of a short lease on a GPU machine (and its rehearsal on a CPU):
    PRUNEBENCH_COMMIT=SHA python -m bench.speed.gpu_check --out DIR [--device cuda] [--budget-s 420]
(the machine gets a copy of the committed tree without .git: PRUNEBENCH_COMMIT names it)
Parts (each also alone with --part):
- `tests`: the GPU-only tests (tests/speed/test_cuda.py: the method contract on the device for every
  layer-wise method on the tiny Llama, OPT and Mamba; the four real-kernel tests of
  tests/speed/test_speed.py), pass/fail counts and the failures' first lines;
- `smoke`: config/smoke.yaml's prune + evaluate (ppl, KL, sparsity checked on the saved weights)
  of every planned run, on its models and on the two trained here (opt-tiny, mamba-tiny), with
  `engine.device` set to the device, once per dtype, each run's ppl
  against the committed CPU float32 record results/cuda/smoke-cpu-float32.json;
- `profile`: bench/speed/gpu_profile.py, where a 2:4 GEMM's time goes (kernels, host, CUDA graph);
- `block`: bench/speed/gpu_block.py, sparsegpt and apt on one Llama-2-7B-shaped block (timed alone);
- `speed`: bench/speed/gpu_speed.py, the 2:4 records of every target, trimmed to the budget.
`tests` and the smoke runs (one process per model and dtype) run side by side (correctness only); `profile`, `block` and
`speed` run after them, alone, because they are timings. Everything lands in DIR: one JSON per part, check.json
(results/cuda/check.json) and records.tar.gz (the files to commit, in the repo's layout),
rewritten after every part so that a call cut short still brings back what it measured.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench import outputs, results, speed
from bench.speed import gpu_block, gpu_profile, gpu_speed
from bench.data.calibration import load_calibration_for
from bench.config import load_config, plan, read_yaml
from bench.zoo.models import prepare
from bench.zoo import spec_for
from bench.packages import REPO_ROOT
from bench.pipeline import evaluate
from bench.pipeline import prune as prune_run

log = logging.getLogger(__name__)
SCHEMA = "prunebench.cuda-check/1"
PARTS = ("tests", "smoke", "profile", "block", "speed")
NOT_RUN = "not run: the part's time budget was spent"
SMOKE_KEYS = ("device", "dtype", "runs")
REFERENCE = Path("results") / "cuda" / "smoke-cpu-float32.json"
FLOAT32_TOL = 0.01            # the bar: CUDA float32 ppl within 1 % of the CPU's
# the smoke grid's random models predict near-uniformly (ppl ~ 8000, every method within 1 %):
# the two models trained here (zoo/, they travel with the tree) make a wrong kernel visible
TRAINED_TINY = ("opt-tiny", "mamba-tiny")
PROFILE_MAX_S = 60.0
GPU_TESTS = ["tests/speed/test_cuda.py", "tests/speed/test_speed.py::test_real_kernels_equal_dense_on_gpu"]


def _write_json(path: Path, obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Atomically, replacing only a JSON object with `keys` (a file of this tool)."""
    results.write_bench_json(obj, path, keys=keys)


def run_tests(device: str, timeout_s: float, workdir: Path) -> dict[str, Any]:
    """pytest on the GPU-only tests; counts and failures from its JUnit XML."""
    xml = workdir / "junit.xml"
    env = {**os.environ, "PRUNEBENCH_TEST_DEVICE": device}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={xml}", *GPU_TESTS], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout_s)
        rc: int | str = proc.returncode
        tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        rc, tail = "timeout", f"pytest ran past {timeout_s:.0f} s"
    out: dict[str, Any] = {"device": device, "tests": GPU_TESTS, "returncode": rc,
                           "seconds": time.perf_counter() - t0, "failures": [], "output_tail": tail}
    if xml.exists():
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for case in ET.parse(xml).getroot().iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                counts["failed"] += 1
                first = (bad.get("message") or "").splitlines()[:1]
                out["failures"].append(f"{case.get('name')}: {first[0] if first else ''}"[:300])
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
        out.update(counts)
    return out


def smoke_config(device: str, dtype: str, results_dir: Path) -> dict[str, Any]:
    """config/smoke.yaml plus the trained tiny models, the engine on `device` in `dtype`."""
    raw = read_yaml(REPO_ROOT / "config" / "smoke.yaml", "smoke config")
    raw["engine"] = {**raw["engine"], "device": device, "dtype": dtype}
    raw["results_dir"] = str(results_dir)
    raw["models"] = raw["models"] + [m for m in TRAINED_TINY if m not in raw["models"]]
    raw.pop("seeds", None)
    return load_config(raw)


def run_smoke(device: str, dtype: str, budget_s: float, workdir: Path, dest: Path,
              model: str | None = None, methods: list[str] | None = None) -> dict[str, Any]:
    """Prune + evaluate every run of the smoke grid (of `model`, or all) on `device` in `dtype`;
    one row per run (an exception is the row's error: a finding, not a crash), `dest` rewritten
    after each run so that a process stopped at the deadline keeps what it measured."""
    cfg = smoke_config(device, dtype, workdir / "results")
    runs = [r for r in plan(cfg)[0]
            if (model is None or r.model == model) and (not methods or r.method in methods)]
    rows: list[dict[str, Any]] = [{"id": r.id, "error": NOT_RUN} for r in runs]
    t_start = time.perf_counter()
    part = {"device": device, "dtype": dtype, "runs": rows, "seconds": 0.0,
            "environment": results.environment_info(), "code": results.git_info(REPO_ROOT)}
    for i, run in enumerate(tqdm(runs, desc=f"smoke {device} {dtype}")):
        row: dict[str, Any] = {"id": run.id}
        if time.perf_counter() - t_start > budget_s:
            break
        try:
            ckpt = workdir / "ckpt" / run.id
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            info = prune_run(run.model, run.method, run.pattern, ckpt, cfg, progress=False)
            out = workdir / "runs" / f"{run.id}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            _, rec = evaluate(ckpt, out, cfg, progress=False)
            row.update({"ppl": rec["metrics"]["ppl/wiki"], "kl": rec["metrics"]["kl/wiki"],
                        "sparsity": rec["sparsity"]["achieved"],
                        "prune_seconds": info["cost"]["prune_seconds"],
                        "eval_seconds": rec["cost"]["eval_seconds"],
                        "device": rec["cost"]["device"]})
        except Exception as exc:   # noqa: BLE001 (every failure on the device is a finding to record)
            row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
            log.warning("%s on %s %s failed: %s", run.id, device, dtype, row["error"])
        rows[i] = row
        part["seconds"] = time.perf_counter() - t_start
        _write_json(dest, part, SMOKE_KEYS)
    _write_json(dest, part, SMOKE_KEYS)
    return part


def compare_smoke(smoke: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """Each run's ppl relative to the CPU float32 reference; float32 within FLOAT32_TOL passes."""
    ref = {r["id"]: r for r in (reference or {}).get("runs", []) if "ppl" in r}
    rows = []
    for r in smoke["runs"]:
        row = dict(r)
        if "ppl" in r and r["id"] in ref:
            row["cpu_float32_ppl"] = ref[r["id"]]["ppl"]
            row["rel_diff"] = r["ppl"] / ref[r["id"]]["ppl"] - 1.0
            if smoke["dtype"] == "float32":
                row["within_1pct"] = abs(row["rel_diff"]) <= FLOAT32_TOL
        rows.append(row)
    diffs = [abs(r["rel_diff"]) for r in rows if "rel_diff" in r]
    return {**smoke, "runs": rows, "not_run": sum(r.get("error") == NOT_RUN for r in rows),
            "failed": sum("error" in r and r["error"] != NOT_RUN for r in rows),
            "max_abs_rel_diff": max(diffs) if diffs else None,
            "outside_1pct": [r["id"] for r in rows if r.get("within_1pct") is False]}


def _run_part(argv: list[str], timeout_s: float, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "bench.speed.gpu_check", *argv], cwd=REPO_ROOT,
                                stdout=f, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, deadline: float) -> None:
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def assemble(work: Path, out: Path, device: str, started: float) -> dict[str, Any]:
    """check.json and records.tar.gz in `out` from the part files present in `work` (called
    after every part). The archive holds results/cuda/check.json and results/speed/*.json in the
    repo's layout, and every part file and log under raw/."""
    parts: dict[str, Any] = {}
    for f in sorted(work.glob("part-*.json")):
        parts[f.stem.removeprefix("part-")] = json.loads(f.read_text())
    ref_path = REPO_ROOT / REFERENCE
    reference = json.loads(ref_path.read_text()) if ref_path.exists() else None
    for dtype in sorted({v["dtype"] for k, v in parts.items() if k.startswith("smoke-")}):
        pieces = [parts.pop(k) for k in sorted(parts) if k.startswith(f"smoke-{dtype}")]
        merged = {**pieces[0], "runs": [r for piece in pieces for r in piece["runs"]],
                  "seconds": max(piece["seconds"] for piece in pieces), "processes": len(pieces)}
        parts[f"smoke-{dtype}"] = compare_smoke(merged, reference)
    check = {"schema": SCHEMA, "device": device, "environment": results.environment_info(),
             "gpu": speed.gpu_environment(), "code": results.git_info(REPO_ROOT),
             "seconds": time.monotonic() - started,
             "reference": str(REFERENCE) if reference else None, "parts": parts}
    _write_json(out / "check.json", check, ("schema", "parts"))
    name = "check.json" if device != "cpu" else "check-cpu-rehearsal.json"
    with outputs.claim(out / "records.tar.gz", "--out", "file", tarfile.is_tarfile) as claim, \
            tarfile.open(claim.tmp, "w:gz") as tar:
        tar.add(out / "check.json", arcname=f"results/cuda/{name}")
        for f in sorted((work / "speed").glob("*.json")) if (work / "speed").is_dir() else []:
            tar.add(f, arcname=f"results/speed/{f.name}")
        for f in sorted(work.glob("*.json")) + sorted(work.glob("*.log")):
            tar.add(f, arcname=f"raw/{f.name}")
    return check


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + args.budget_s
    out, work = Path(args.out), Path(args.work)
    common = ["--out", str(out), "--work", str(work), "--device", args.device]
    phase_a = min(args.budget_s * args.shares[0], deadline - time.monotonic())
    procs = [_run_part(["--part", "tests", *common, "--budget-s", str(phase_a)], phase_a,
                       work / "tests.log")]
    cfg = smoke_config(args.device, "float32", work)
    models = cfg["models"]
    for model in models:        # prepared once here, not raced by the processes below
        prepare(spec_for(cfg, model))
        load_calibration_for(model, cfg, None)
    for dtype in args.dtypes:      # one process per model and dtype: the runs are launch-bound
        for model in models:
            procs.append(_run_part(["--part", "smoke", "--dtype", dtype, "--model", model, *common,
                                    *(["--smoke-methods", *args.smoke_methods]
                                      if args.smoke_methods else []),
                                    "--budget-s", str(phase_a * 0.85)], phase_a,
                                   work / f"smoke-{dtype}-{model}.log"))
    for p in procs:
        _wait(p, started + phase_a + 30)
    assemble(work, out, args.device, started)
    if "profile" not in args.skip:
        gpu_profile.run_all(work, args.device, min(args.profile_s, deadline - time.monotonic()),
                            args.block_scale, tuple(args.profile_compile))
        assemble(work, out, args.device, started)
    if "block" not in args.skip:
        block_budget = (deadline - time.monotonic()) * args.shares[1]
        gpu_block.run_all(work, args.device, block_budget, args.block_scale, args.block_cases)
        assemble(work, out, args.device, started)
    if "speed" not in args.skip:
        gpu_speed.run_all(work, args.device, deadline - time.monotonic() - 10,
                          lambda: assemble(work, out, args.device, started), args.speed_targets)
    return assemble(work, out, args.device, started)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True,
                   help="a folder (created): check.json and records.tar.gz, replaced after each part")
    p.add_argument("--work", default=None, help="the part files and logs (default: a new folder "
                   "under the system's temporary folder)")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--part", choices=("all", *PARTS), default="all")
    p.add_argument("--dtype", default="float32", help="smoke part: the engine dtype")
    p.add_argument("--model", default=None, help="smoke part: only this model's runs")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget of the call")
    p.add_argument("--block-scale", choices=("paper", "tiny"), default="paper",
                   help="block and profile parts: paper shapes, or tiny ones to rehearse on a CPU")
    p.add_argument("--shares", type=float, nargs=2, default=[0.45, 0.35], metavar=("TESTS", "BLOCK"),
                   help="budget fractions: tests+smoke of the whole, block of what is left after")
    p.add_argument("--smoke-methods", nargs="+", default=None, help="only these methods' smoke runs")
    p.add_argument("--block-cases", nargs="+", default=None, metavar="METHOD:PATTERN",
                   help="only these block cases (default: every case of bench/speed/gpu_block.py)")
    p.add_argument("--speed-targets", nargs="+", default=None, help="only these speed targets")
    p.add_argument("--skip", nargs="+", default=[], choices=("profile", "block", "speed"),
                   help="with --part all: leave out these timing parts")
    p.add_argument("--profile-s", type=float, default=PROFILE_MAX_S,
                   help="profile part's budget within --part all")
    p.add_argument("--profile-compile", nargs="+", default=[], choices=gpu_profile.COMPILE_MODES,
                   help="profile part: also time each case compiled in these torch.compile modes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or tempfile.mkdtemp(prefix="gpu_check.")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    try:                          # before any work: the two files this call will replace
        outputs.check_target(out / "check.json", "--out", "file",
                             lambda f: outputs.json_object_with(f, ("schema", "parts")))
        outputs.check_target(out / "records.tar.gz", "--out", "file", tarfile.is_tarfile)
    except outputs.OutputError as exc:
        sys.stderr.write(f"gpu_check: {exc}\n")
        raise SystemExit(2) from None
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.stderr.write("gpu_check: --device cuda but no CUDA device is visible\n")
        raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="gpu_check_run.") as tmp:
        scratch = Path(tmp)
        if args.part == "tests":
            _write_json(work / "part-tests.json", run_tests(args.device, args.budget_s, scratch),
                        ("device", "tests"))
        elif args.part == "smoke":
            suffix = f"-{args.model}" if args.model else ""
            run_smoke(args.device, args.dtype, args.budget_s, scratch,
                      work / f"part-smoke-{args.dtype}{suffix}.json", args.model, args.smoke_methods)
        elif args.part == "all":
            check = orchestrate(args)
            log.info("done in %.0f s: %s", check["seconds"], sorted(check["parts"]))
        else:
            if args.part == "profile":
                gpu_profile.run_all(work, args.device, args.budget_s, args.block_scale,
                                    tuple(args.profile_compile))
            elif args.part == "block":
                gpu_block.run_all(work, args.device, args.budget_s, args.block_scale,
                                  args.block_cases)
            else:
                gpu_speed.run_all(work, args.device, args.budget_s, lambda: None, args.speed_targets)
            assemble(work, out, args.device, time.monotonic())


if __name__ == "__main__":
    main()
