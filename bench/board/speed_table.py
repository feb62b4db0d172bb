"""results/speed/*.json -> what the leaderboard shows of the 2:4 kernel benchmark.

Owns reading the speed records (`load_speed`), the link from a run to its model's record (2:4
runs take the end-to-end speedup of the first configured dtype, backend and batch size, or say
"no GPU" with the reason; `run_speed`), and the per-target summaries the site lists
(`speed_sections`). Pure functions of the records, like the rest of the site.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.results import schema_records
from bench.speed.speed_run import SCHEMA

KERNEL_PATTERNS = ("2of4",)   # the only pattern sparse tensor cores run


def load_speed(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every speed record under results_dir/speed by target; stand-in (test) records refused."""
    out: dict[str, dict[str, Any]] = {}
    for path, rec in schema_records(Path(results_dir) / "speed", "*.json", SCHEMA):
        if rec.get("stand_in"):
            raise ValueError(f"{path}: a CPU stand-in record (a test artefact), not a measurement")
        out[rec["target"]] = rec
    return out


def headline(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The end-to-end row of the first configured dtype, backend and batch size that ran."""
    s = rec["settings"]
    for dtype in s["dtypes"]:
        for backend in s["backends"]:
            for bs in s["e2e"]["batch_sizes"]:
                for row in rec["e2e"]:
                    if (row["dtype"], row["backend"], row.get("batch_size")) == (dtype, backend, bs) \
                            and "error" not in row:
                        return row
    return None


def run_speed(model: str, pattern: str, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Speed fields of a run's table row: measured 2:4 figures, or why there are none."""
    if pattern not in KERNEL_PATTERNS or model not in records:
        return {}
    rec = records[model]
    base = {"speed_file": f"speed/{model}.json", "speed_status": rec["status"]}
    if rec["status"] != "measured":
        return {**base, "speed_reason": rec["reason"]}
    row = headline(rec)
    if row is None:
        return {**base, "speed_reason": "no end-to-end case ran (see the record's errors)"}
    return {**base, "speedup_kind": "2:4 kernel", "speedup_prefill": row["prefill_speedup"],
            "speedup_decode": row["decode_speedup"],
            "speed_device": f"{rec['gpu']['gpu']} ({row['backend']}, {row['dtype']}, "
                            f"batch {row['batch_size']}"
                            + (", random weights of the same shapes" if rec.get("weights") == "random"
                               else "") + ")"}


def _ratio_range(ratios: list[float]) -> str:
    """Median [min, max] of our layer speedup over the bare torch.mm one (goal: 1 within 5 %)."""
    if not ratios:
        return "–"
    s = sorted(ratios)
    mid = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    return f"{mid:.2f} [{s[0]:.2f}, {s[-1]:.2f}]"


def speed_sections(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per target: status, GPU, and the best eager layer speedup per token count."""
    out = []
    for target in sorted(records):
        rec = records[target]
        best: dict[int, float] = {}
        for row in rec["layers"]:
            if row["mode"] == "eager":
                best[row["tokens"]] = max(best.get(row["tokens"], 0.0), row["speedup"])
        out.append({
            "target": target, "status": rec["status"],
            "kind": rec["kind"] + (", random weights" if rec.get("weights") == "random" else ""),
            "reason": rec["reason"] or "", "gpu": (rec.get("gpu") or {}).get("gpu") or "",
            "shapes": ", ".join(f"{s['out_features']}x{s['in_features']}" for s in rec["shapes"]),
            "cells": len(rec["layers"]), "planned": rec["planned_cells"],
            "unsupported": len(rec["unsupported"]),
            "best": [f"{t}: {best[t]:.2f}x" for t in sorted(best)],
            "harness_vs_bare": _ratio_range([r["harness_vs_bare"] for r in rec["layers"]
                                             if "harness_vs_bare" in r]),
            "file": f"speed/{target}.json"})
    return out
