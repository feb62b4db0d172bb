"""Equal-speed comparisons: runs of different methods that are measurably as fast, and how their
quality differs.

A structured run's latency comparison keeps every round (bench/evaluation/latency.py); the leaderboard
turns them into per-round speedup ranges (`speedup_{prefill,decode}_{min,max}`). Two runs of
one model whose ranges overlap in both phases cannot be told apart in speed on the machine that
timed them, whatever sparsity each was pruned to, so the reader's question becomes "which is
better at that speed". Owns `matches` (the pairs, a pure function of the flat rows) and
`comparisons` (each pair's perplexity difference with the paired 95 % bootstrap interval over
the evaluation windows, from the per-example files: both runs are scored on the same windows
whatever their pattern). A difference counts only when its interval excludes zero and it exceeds
the model's noise floor (bench.board.compare), otherwise it is reported as a tie.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from bench.board import paired
from bench.evaluation import examples
from bench.board.compare import noise_floor, values

PHASES = ("prefill", "decode")


def _range(row: dict[str, Any], phase: str) -> tuple[float, float] | None:
    lo, hi = row.get(f"speedup_{phase}_min"), row.get(f"speedup_{phase}_max")
    return None if lo is None or hi is None else (lo, hi)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def matches(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of runs (same model, different methods, not dense) whose per-round speedup ranges
    overlap in prefill and in decode; sorted by model, then the runs' names."""
    timed = sorted((r for r in rows if r["pattern_kind"] != "dense"
                    and all(_range(r, p) for p in PHASES)),
                   key=lambda r: (r["model"], r["method"], r["pattern"]))
    out = []
    for a, b in itertools.combinations(timed, 2):
        if a["model"] == b["model"] and a["method"] != b["method"] and all(
                _overlap(_range(a, p), _range(b, p)) for p in PHASES):     # type: ignore[arg-type]
            out.append((a, b))
    return out


def _record(results_dir: Path, row: dict[str, Any]) -> dict[str, Any] | None:
    path = (Path(results_dir) / "runs" / row["model"] / row["method"]
            / f"{row['pattern']}{examples.SUFFIX}")
    return examples.load(path) if path.is_file() else None


def _verdict(a: dict[str, Any], b: dict[str, Any], iv: paired.Interval | None, floor: float) -> str:
    if iv is None:
        return "not paired (no per-example records)"
    if not paired.separated(iv, floor, min(a["ppl/wiki"], b["ppl/wiki"])):
        return "tie"
    return f"{a['method'] if iv.diff < 0 else b['method']} better"


def comparisons(results_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per equal-speed pair: both runs' names, speedups and ranges, ppl, and the
    paired interval of ppl(a) - ppl(b) with its verdict (None where a record is missing)."""
    pairs = matches(rows)
    models = sorted({a["model"] for a, _ in pairs})
    dense = {m: _record(results_dir, {"model": m, "method": "dense", "pattern": "dense"})
             for m in models}
    floor = {m: noise_floor(Path(results_dir), m) for m in models}
    ppl: dict[tuple[str, str, str], paired.Values | None] = {}   # each run's record read once

    def ppl_of(row: dict[str, Any]) -> paired.Values | None:
        key = (row["model"], row["method"], row["pattern"])
        if key not in ppl:
            rec, ref = _record(results_dir, row), dense[row["model"]]
            ppl[key] = values("ppl", rec, ref) if rec is not None and ref is not None else None
        return ppl[key]

    out = []
    for a, b in pairs:
        va, vb = ppl_of(a), ppl_of(b)
        iv = paired.interval(va, vb) if va is not None and vb is not None else None
        out.append({"model": a["model"], "runs": [a, b],
                    "interval": None if iv is None else [iv.diff, iv.lo, iv.hi],
                    "verdict": _verdict(a, b, iv, floor[a["model"]])})
    return out
