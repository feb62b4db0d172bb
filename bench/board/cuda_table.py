"""results/cuda/check-*.json -> what the leaderboard shows of the GPU calls (bench/speed/gpu_check.py).

Owns reading the CUDA check records (`load_checks`, schema checked, oldest first) and one summary
per call (`check_sections`): the machine and software, the GPU-only tests, the smoke grid on
CUDA in each dtype against the committed CPU float32 record (how many runs, which methods
failed, the largest relative ppl difference and whether float32 stayed within 1 %), the
profile of dense against 2:4 GEMMs (wall, kernel and CUDA-graph speedups, host time per call)
and the pruning cost of the Llama-2-7B-shaped block. Pure functions of the records, like the rest of
the site.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.results import schema_records
from bench.speed.gpu_profile import kernel_seconds

SCHEMA = "prunebench.cuda-check/1"     # bench/speed/gpu_check.py writes it


def load_checks(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every results_dir/cuda/check-*.json by file name (sorted); other schemas refused."""
    return {path.name: rec
            for path, rec in schema_records(Path(results_dir) / "cuda", "check-*.json", SCHEMA)}


def _smoke(part: dict[str, Any]) -> dict[str, Any]:
    runs = part["runs"]
    ok = [r for r in runs if "ppl" in r]
    failed = sorted({r["id"].split("/")[1] for r in runs if "error" in r
                     and not r["error"].startswith("not run")})
    diff = part.get("max_abs_rel_diff")
    return {"dtype": part["dtype"], "ran": len(ok), "runs": len(runs), "failed_methods": failed,
            "max_rel_diff": f"{100 * diff:.2f} %" if diff is not None else "–",
            "within": (not part.get("outside_1pct")) if part["dtype"] == "float32" else None}


def _block(case: dict[str, Any]) -> dict[str, Any]:
    return {"case": f"{case['method']} {case['pattern']}",
            "seconds": f"{case['seconds']:.1f} s" if "seconds" in case else "–",
            "peak": f"{case['peak_gpu_mib'] / 1024:.1f} GiB" if "peak_gpu_mib" in case else "–",
            "calibration": " x ".join(map(str, case.get("calibration_shape", []))) or "–",
            "error": case.get("error", "")}


def _ms(x: Any) -> str:
    return f"{1e3 * x:.3f} ms" if isinstance(x, (int, float)) else "–"


def _ratio(x: Any) -> str:
    return f"{x:.2f}x" if isinstance(x, (int, float)) else "–"


def _profile(case: dict[str, Any]) -> dict[str, Any]:
    """One profiled shape; the kernel speedup is recomputed from the stored rows (the records of
    2026-12-04 summed each operator's row with its kernels', twice the device time)."""
    dense, sparse = case["dense"], case["sparse"]
    kd, ks = kernel_seconds(dense["kernels"]), kernel_seconds(sparse["kernels"])
    return {"case": f"[{case['out_features']}, {case['in_features']}] x {case['tokens']} tokens",
            "dtype": case["dtype"], "wall": f"{_ms(dense['wall_s'])} / {_ms(sparse['wall_s'])}",
            "wall_speedup": _ratio(case.get("wall_speedup")),
            "kernel": f"{_ms(kd)} / {_ms(ks)}", "kernel_speedup": _ratio(kd / ks if ks else None),
            "graph_speedup": _ratio(case.get("graph_speedup")),
            "host": f"{_ms(dense.get('host_s'))} / {_ms(sparse.get('host_s'))}",
            "compiled": _compiled(case)}


def _compiled(case: dict[str, Any]) -> str:
    """'mode: speedup' per torch.compile mode the case ran in (why not, where it failed)."""
    cells = []
    for mode, d in (case["dense"].get("compiled") or {}).items():
        sp = case["sparse"]["compiled"][mode]
        err = d.get("error") or sp.get("error")
        cells.append(f"{mode}: " + (f"failed ({err[:80]})" if err else _ratio(d["s"] / sp["s"])))
    if cells and any("weight" not in m for m in case["dense"]["compiled"].values() if "s" in m):
        cells.append("(weight passed per call: CUDA-graph modes copy it each call)")
    return "; ".join(cells)


def check_sections(checks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per GPU call, in file order."""
    out = []
    for name, rec in checks.items():
        gpu, env, parts = rec.get("gpu") or {}, rec["environment"], rec["parts"]
        tests = parts.get("tests") or {}
        out.append({
            "file": f"cuda/{name}", "commit": (rec["code"].get("git_commit") or "?")[:7],
            "machine": f"{gpu.get('gpu') or env['device']} (sm_{str(gpu.get('capability', '?')).replace('.', '')}, "
                       f"driver {gpu.get('driver')}, CUDA {gpu.get('cuda_runtime')}, "
                       f"cuSPARSELt {gpu.get('cusparselt')})",
            "software": f"torch {env['torch']}, transformers {env['transformers']}",
            "tests": (f"{tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
                      f"{tests.get('skipped', 0)} skipped" if tests else "not run"),
            "test_failures": tests.get("failures", []),
            "smoke": [_smoke(parts[k]) for k in sorted(parts) if k.startswith("smoke-")],
            "block": [_block(c) for c in (parts.get("block") or {}).get("cases", [])],
            "profile": [_profile(c) for c in (parts.get("profile") or {}).get("cases", [])],
            "profile_compiled": bool((parts.get("profile") or {}).get("compile_modes")),
        })
    return out
