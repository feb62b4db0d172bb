"""results/ -> a static, offline leaderboard site (a pure, deterministic function of results/).

Owns: flattening runs into one table (`flat_rows`: runs.json / runs.csv), grouping it into
one table per model x pattern with the dense baseline on top and the delta to it, rendering
site/templates/index.html.j2 (jinja2, autoescaped) with site/static/ and the 2:4 speed records
(results/speed, linked from 2:4 runs: bench/speed_table.py) copied alongside, and
writing the build directory atomically (DIR.tmp, then rename). Same results, same bytes.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from bench.packages import REPO_ROOT
from bench.results import SCHEMA_VERSION, load_all
from bench.speed_table import load_speed, run_speed, speed_sections

log = logging.getLogger(__name__)

SITE_DIR = REPO_ROOT / "site"
PRIMARY = "ppl/wiki"  # the metric the delta to dense is computed on
PATTERN_ORDER = {"dense": 0, "unstructured": 1, "nm": 2, "structured": 3}


def _key(run: dict[str, Any]) -> tuple[str, str, str]:
    return run["model"]["key"], run["method"]["name"], run["pattern"]["slug"]


def _is_dense(run: dict[str, Any]) -> bool:
    return run["pattern"]["kind"] == "dense"


def baseline_note(source: dict[str, Any]) -> str | None:
    """What the dense baseline is, when it is not the original float model."""
    if source.get("kind") == "pypi_gguf":
        return f"dequantized from {source.get('quantization') or 'a GGUF quantization'}"
    return None


def _dense_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """model key -> its dense reference run (a baseline-kind method first, then by name)."""
    dense: dict[str, dict[str, Any]] = {}
    for run in sorted((r for r in runs if _is_dense(r)),
                      key=lambda r: (r["method"]["kind"] != "baseline", r["method"]["name"])):
        dense.setdefault(run["model"]["key"], run)
    return dense


def _delta(value: float | None, ref: float | None) -> tuple[float | None, float | None]:
    if value is None or ref is None:
        return None, None
    return value - ref, (100.0 * (value - ref) / ref if ref else None)


def metric_names(runs: list[dict[str, Any]]) -> list[str]:
    """Every metric key found in the runs, sorted."""
    return sorted({m for r in runs for m in r["metrics"]})


def table_metrics(runs: list[dict[str, Any]]) -> list[str]:
    """Metric columns of the per-pattern tables: zero-shot average first, then each task's acc
    (acc_norm and every stderr stay in the CSV / JSON downloads and the run pages)."""
    names = metric_names(runs)
    avg = [m for m in names if m.startswith("zeroshot/average/")]
    tasks = [m for m in names if m.startswith("zeroshot/") and m.endswith("/acc") and m not in avg]
    other = [m for m in names if not m.startswith("zeroshot/")]
    return other + avg + tasks


def flat_rows(runs: list[dict[str, Any]],
              speed: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One flat dict per run (sorted by model, method, pattern): the downloadable table.

    `speed` (results/speed records by target) supplies 2:4 runs' kernel speedup or "no GPU"."""
    dense, names = _dense_runs(runs), metric_names(runs)
    rows = []
    for run in sorted(runs, key=_key):
        model, method, pattern = run["model"], run["method"], run["pattern"]
        ref = dense.get(model["key"])
        d_abs, d_pct = _delta(run["metrics"].get(PRIMARY), ref["metrics"].get(PRIMARY) if ref else None)
        row: dict[str, Any] = {
            "model": model["key"], "arch": model["arch"], "trained_here": model["trained_here"],
            "model_source": model["source"]["kind"], "baseline_note": baseline_note(model["source"]),
            "method": method["name"], "method_kind": method["kind"],
            "method_params": json.dumps(method["params"], sort_keys=True),
            "pattern": pattern["slug"], "pattern_kind": pattern["kind"],
            "target_sparsity": pattern["sparsity"], "achieved_sparsity": run["sparsity"]["achieved"],
            "params_nonzero": run["params"]["nonzero"], "params_total": run["params"]["total"],
            "prunable_params": run["sparsity"]["prunable_params"],
            **{m: run["metrics"].get(m) for m in names},
            f"delta_{PRIMARY}": d_abs, f"delta_{PRIMARY}_pct": d_pct,
            "prune_seconds": run["cost"]["prune_seconds"], "eval_seconds": run["cost"]["eval_seconds"],
            "peak_rss_mb": run["cost"]["peak_rss_mb"], "device": run["cost"]["device"],
            "git_commit": run["code"]["git_commit"], "created_at": run["created_at"],
            # measured speedup vs dense: structured runs' prefill / decode latency on the same
            # machine; None where nothing was measured (layer-wise runs on CPU)
            "speedup_kind": (run.get("speed") or {}).get("kind"),
            "speedup_prefill": (run.get("speed") or {}).get("prefill_speedup"),
            "speedup_decode": (run.get("speed") or {}).get("decode_speedup"),
            "speed_device": ((run.get("speed") or {}).get("dense") or {}).get("settings", {}).get("device"),
            "speed_file": None, "speed_status": None, "speed_reason": None,
        }
        row.update(run_speed(model["key"], pattern["slug"], speed or {}))
        rows.append(row)
    return rows


def _fmt_num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _fmt_params(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _cell_row(row: dict[str, Any], metrics: list[str], is_ref: bool) -> dict[str, Any]:
    d_abs, d_pct = row[f"delta_{PRIMARY}"], row[f"delta_{PRIMARY}_pct"]
    return {
        "method": row["method"], "method_kind": row["method_kind"], "params_json": row["method_params"],
        "is_ref": is_ref,
        "achieved": f"{100 * row['achieved_sparsity']:.1f}%",
        "params": f"{_fmt_params(row['params_nonzero'])} / {_fmt_params(row['params_total'])}",
        "params_exact": f"{row['params_nonzero']:,} / {row['params_total']:,}",
        "primary": _fmt_num(row.get(PRIMARY)),
        "delta": "–" if d_abs is None or is_ref else
                 f"{d_abs:+,.2f}" + ("" if d_pct is None else f" ({d_pct:+.1f}%)"),
        "worse": bool(d_abs and d_abs > 0 and not is_ref),
        "extra": [_fmt_num(row.get(m), 4) for m in metrics],
        "prune_seconds": _fmt_num(row["prune_seconds"], 1),
        "speedup": (f"{row['speedup_prefill']:.2f}x / {row['speedup_decode']:.2f}x"
                    if row["speedup_prefill"] is not None else
                    "no GPU" if row["speed_status"] == "no GPU" else "–"),
        "speedup_note": (f"prefill tokens/s and decode ms/token vs dense on {row['speed_device']}"
                         if row["speedup_prefill"] is not None else row["speed_reason"] or ""),
        "speed_file": row["speed_file"],
    }


def _rank(row: dict[str, Any]) -> tuple[bool, float, str]:
    value = row.get(PRIMARY)
    return value is None, value if value is not None else 0.0, row["method"]


def build_tables(rows: list[dict[str, Any]], metric_cols: list[str]) -> list[dict[str, Any]]:
    """Group flat rows into models, each with one table per pattern (dense reference on top)."""
    models = []
    for key in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == key]
        dense = sorted((r for r in mine if r["pattern_kind"] == "dense"), key=_rank)
        patterns = sorted({(PATTERN_ORDER[r["pattern_kind"]], r["target_sparsity"], r["pattern"])
                           for r in mine if r["pattern_kind"] != "dense"}) or [(0, 0.0, "dense")]
        tables = []
        for _, target, slug in patterns:
            body = sorted((r for r in mine if r["pattern"] == slug and r["pattern_kind"] != "dense"), key=_rank)
            metrics = [m for m in metric_cols if m != PRIMARY and any(r.get(m) is not None for r in dense + body)]
            cells = [_cell_row(r, metrics, True) for r in dense] + [_cell_row(r, metrics, False) for r in body]
            tables.append({"slug": slug, "target": f"{100 * target:.0f}%", "metrics": metrics, "rows": cells})
        first = mine[0]
        models.append({"key": key, "arch": first["arch"], "trained_here": first["trained_here"],
                       "baseline_note": first["baseline_note"], "n_runs": len(mine), "tables": tables})
    return models


def _render(models: list[dict[str, Any]], rows: list[dict[str, Any]],
            speed: list[dict[str, Any]]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SITE_DIR / "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    newest = max((r["created_at"] for r in rows), default=None)
    return env.get_template("index.html.j2").render(
        models=models, n_runs=len(rows), newest=newest, primary=PRIMARY,
        schema_version=SCHEMA_VERSION, speed=speed)


def _write_tree(out_dir: Path, files: dict[str, str]) -> None:
    """Write files (relative path -> text) plus site/static/ into out_dir via out_dir.tmp."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shutil.copytree(SITE_DIR / "static", tmp / "static")
        for rel, text in sorted(files.items()):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_site(results_dir: Path, out_dir: Path) -> Path:
    """Read every run under results_dir and write out_dir/{index.html,runs.json,runs.csv,static/}."""
    import pandas as pd

    runs = load_all(Path(results_dir))
    if not runs:
        log.warning("no runs under %s/runs: the leaderboard will be empty", results_dir)
    speed = load_speed(Path(results_dir))
    rows = flat_rows(runs, speed)
    csv = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["model", "method", "pattern"])
    files = {
        "index.html": _render(build_tables(rows, table_metrics(runs)), rows, speed_sections(speed)),
        **{f"speed/{t}.json": json.dumps(r, indent=1, sort_keys=True) + "\n" for t, r in speed.items()},
        "runs.json": json.dumps(rows, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n",
        "runs.csv": csv.to_csv(index=False, lineterminator="\n"),
    }
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _write_tree(out_dir, files)
    log.info("leaderboard of %d runs written to %s", len(rows), out_dir / "index.html")
    return out_dir / "index.html"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench leaderboard --results results --out site/_build`."""
    parser = argparse.ArgumentParser(prog="bench leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results", help="results directory")
    parser.add_argument("--out", type=Path, default=SITE_DIR / "_build", help="site build directory")
    args = parser.parse_args(argv)
    build_site(args.results, args.out)
    return 0
