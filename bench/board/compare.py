"""`python -m bench compare`: every method at one model and pattern, with paired intervals.

Owns the comparison table, a pure function of results/: for each run at (model, pattern) its
value of each metric, the paired 95 % bootstrap interval of its difference to the dense model
and to the best method (bench/board/paired.py), a rank with ties, whether an accuracy is at chance,
and, where calibration-seed runs exist (results/seeds/), the mean and spread over seeds and which
uncertainty dominates. The leaderboard calls the same `compare` function.

Metrics (all from the per-example files, bench/evaluation/examples.py):
    ppl       perplexity on the evaluation windows (lower is better)
    kl        mean per-token KL(dense || run) on the same windows (lower)
    zeroshot  zero-shot average accuracy over the tasks (higher)
    acc_norm  zero-shot average acc_norm over the tasks that define it (higher)
    flips     fraction of zero-shot documents whose correctness differs from dense (lower)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np

from bench.board import paired
from bench.evaluation import examples
from bench.evaluation.zeroshot import NORM_TASKS
from methods.base import PruneBenchError

METRICS = ("ppl", "kl", "zeroshot", "acc_norm", "flips")
LOWER_IS_BETTER = {"ppl": True, "kl": True, "zeroshot": False, "acc_norm": False, "flips": True}
ACCURACY = ("zeroshot", "acc_norm")
NOISE_FLOOR_DIR = Path("bench") / "noise_floor"


@dataclass
class Row:
    method: str
    value: float
    vs_dense: paired.Interval | None = None
    vs_best: paired.Interval | None = None
    rank: int | None = None
    tied_with_best: bool = False
    at_chance: bool = False          # not above chance: its own interval holds or lies under it
    below_chance: bool = False       # its own interval lies wholly under chance
    own: paired.Interval | None = None
    seeds: list[float] = field(default_factory=list)


def values(metric: str, rec: dict[str, Any], dense: dict[str, Any]) -> paired.Values | None:
    """The per-unit values of `metric` in run record `rec` (None when the run lacks them);
    paired against `dense` (a pairing mismatch raises)."""
    if metric in ("ppl", "kl"):
        examples.paired_ppl(rec, dense)
        data = rec["ppl"]["nll" if metric == "ppl" else "kl"]
        if data is None:
            return None
        return paired.Values((np.asarray(data, dtype=float),), np.exp if metric == "ppl" else _id)
    zs = rec.get("zeroshot")
    if zs is None or dense.get("zeroshot") is None:
        return None
    tasks = sorted(dense["zeroshot"]["tasks"])
    for task in tasks:
        examples.paired_task(rec, dense, task)
    if metric == "zeroshot":
        return paired.Values(tuple(np.asarray(zs["tasks"][t]["acc"], float) for t in tasks))
    if metric == "acc_norm":
        norm = [t for t in tasks if t in NORM_TASKS]
        return paired.Values(tuple(np.asarray(zs["tasks"][t]["acc_norm"], float) for t in norm)) \
            if norm else None
    if metric == "flips":
        flips = [np.abs(np.asarray(zs["tasks"][t]["acc"], float)
                        - np.asarray(dense["zeroshot"]["tasks"][t]["acc"], float)) for t in tasks]
        return paired.Values((np.concatenate(flips),))
    raise PruneBenchError(f"unknown metric '{metric}'; one of {', '.join(METRICS)}")


def _id(x: np.ndarray) -> np.ndarray:
    return x


def chance(dense: dict[str, Any], metric: str) -> float | None:
    """Chance level of an accuracy metric on the dense run's documents (None otherwise)."""
    if metric not in ACCURACY or dense.get("zeroshot") is None:
        return None
    tasks = sorted(t for t in dense["zeroshot"]["tasks"] if metric == "zeroshot" or t in NORM_TASKS)
    return paired.chance_level([[len(c) for c in dense["zeroshot"]["tasks"][t]["loglik"]]
                                for t in tasks])


def load_records(results_dir: Path, model: str, pattern: str
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(dense record, method -> record) of every run at (model, pattern) that has examples."""
    root = Path(results_dir) / "runs" / model
    dense_path = root / "dense" / f"dense{examples.SUFFIX}"
    if not dense_path.is_file():
        raise PruneBenchError(f"no per-example records of the dense run of '{model}' "
                              f"({dense_path}); evaluate it first")
    dense = examples.load(dense_path)
    runs = {p.parent.name: examples.load(p)
            for p in sorted(root.glob(f"*/{pattern}{examples.SUFFIX}"))}
    if not runs and pattern != "dense":
        raise PruneBenchError(f"no run of '{model}' at pattern '{pattern}' has per-example "
                              f"records under {root}")
    return dense, runs


def seed_records(results_dir: Path, model: str, method: str, pattern: str) -> list[dict[str, Any]]:
    """The calibration-seed runs (results/seeds/M/METHOD/PATTERN/seed-S.examples.json.gz)."""
    folder = Path(results_dir) / "seeds" / model / method / pattern
    return [examples.load(p) for p in sorted(folder.glob(f"seed-*{examples.SUFFIX}"))]


def noise_floor(results_dir: Path, model: str) -> float:
    """The largest relative ppl spread measured across engine batch sizes for `model` under the
    grid's schedule (results/bench/noise_floor/*-batch.json, one-pass methods; the `_seq`
    variants' floor is measured and reported, not applied), 0 when none was measured."""
    spreads = []
    for path in sorted((Path(results_dir) / NOISE_FLOOR_DIR).glob(f"{model}-*-batch.json")):
        record = json.loads(path.read_text())
        if not record.get("sequential", False):
            spreads.append(float(record["relative_spread"]))
    return max(spreads, default=0.0)


def compare(results_dir: Path, model: str, pattern: str, metric: str,
            methods: Collection[str] | None = None,
            records: tuple[dict[str, Any], dict[str, dict[str, Any]]] | None = None
            ) -> dict[str, Any]:
    """The comparison of one metric at (model, pattern): rows sorted by rank then value.
    `methods` restricts it (ranks included) to those methods, e.g. one training group;
    `records`: `load_records`' result when the caller already read it."""
    if metric not in METRICS:
        raise PruneBenchError(f"unknown metric '{metric}'; one of {', '.join(METRICS)}")
    dense, runs = records or load_records(results_dir, model, pattern)
    if methods is not None:
        runs = {m: r for m, r in runs.items() if m in methods}
    floor = noise_floor(results_dir, model) if metric == "ppl" else 0.0
    level = chance(dense, metric)
    dense_vals = values(metric, dense, dense)
    vals = {m: v for m, r in runs.items() if m != "dense"
            and (v := values(metric, r, dense)) is not None}
    rows: dict[str, Row] = {}
    for m, v in vals.items():
        row = Row(m, v.value(), vs_dense=paired.interval(v, dense_vals) if dense_vals else None)
        if level is not None:
            row.own = paired.own_interval(v)
            row.at_chance = row.own.lo <= level
            row.below_chance = row.own.hi < level
        seeds = [x for r in seed_records(results_dir, model, m, pattern)
                 if (x := values(metric, r, dense)) is not None]
        row.seeds = [row.value] + [s.value() for s in seeds] if seeds else []
        rows[m] = row
    ranked = paired.rank({m: v for m, v in vals.items() if not rows[m].at_chance},
                         LOWER_IS_BETTER[metric], floor)
    for m, r in ranked.items():
        rows[m].rank, rows[m].vs_best = int(r["rank"]), r["vs_best"]      # type: ignore[arg-type]
        rows[m].tied_with_best = bool(r["tied_with_best"])
    sign = 1 if LOWER_IS_BETTER[metric] else -1
    order = sorted(rows.values(), key=lambda r: (r.rank is None, r.rank or 0, sign * r.value))
    return {"model": model, "pattern": pattern, "metric": metric,
            "lower_is_better": LOWER_IS_BETTER[metric],
            "dense": dense_vals.value() if dense_vals else None, "chance": level,
            "noise_floor": floor, "resamples": paired.N_RESAMPLES, "seed": paired.SEED,
            "rows": order}


def seed_summary(row: Row) -> tuple[float, float] | None:
    """(mean, sample standard deviation) over calibration seeds, None without seed runs."""
    if len(row.seeds) < 2:
        return None
    return float(np.mean(row.seeds)), float(np.std(row.seeds, ddof=1))


def chance_label(row: Row | dict[str, Any]) -> str:
    """'below chance' for an accuracy whose own interval lies under the chance level, 'at
    chance' for one whose interval holds it: neither is ranked on accuracy."""
    below = row.get("below_chance") if isinstance(row, dict) else row.below_chance
    return "below chance" if below else "at chance"


def dominant(row: Row) -> str | None:
    """Which uncertainty is larger for this run: the calibration draw (spread over seeds) or the
    evaluation sample (bootstrap standard error of the paired difference to the best method, or
    to dense for the best method itself)."""
    summary = seed_summary(row)
    iv = row.vs_best if row.vs_best is not None and row.vs_best.half_width > 0 else row.vs_dense
    if summary is None or iv is None:
        return None
    eval_se = iv.half_width / 1.96
    return "calibration draw" if summary[1] > eval_se else "evaluation sample"


def _fmt(x: float | None, metric: str) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    if metric in ACCURACY or metric == "flips":
        return f"{100 * x:+.1f}" if x < 0 else f"{100 * x:.1f}"
    return f"{x:.5g}"


def _iv(iv: paired.Interval | None, metric: str) -> str:
    if iv is None:
        return "–"
    return f"{_fmt(iv.diff, metric)} [{_fmt(iv.lo, metric)}, {_fmt(iv.hi, metric)}]"


def table(result: dict[str, Any]) -> str:
    """The comparison as a plain-text table (accuracies and flips in percent)."""
    metric = result["metric"]
    head = (f"{result['model']} @ {result['pattern']}: {metric} "
            f"({'lower' if result['lower_is_better'] else 'higher'} is better); dense "
            f"{_fmt(result['dense'], metric)}")
    if result["chance"] is not None:
        head += f"; chance {_fmt(result['chance'], metric)}"
    if result["noise_floor"]:
        head += f"; noise floor {100 * result['noise_floor']:.2f} % of the best"
    lines = [head, f"{'rank':<8}{'method':<18}{'value':>10}  {'vs dense [95% CI]':<33} "
                   f"{'vs best [95% CI]':<33} {'seeds mean ± sd':<21} note"]
    for r in result["rows"]:
        rank = ("below" if r.below_chance else "chance") if r.at_chance else (f"{r.rank}=" if r.tied_with_best and r.rank == 1
                                             else str(r.rank))
        summary = seed_summary(r)
        seeds = (f"{_fmt(summary[0], metric)} ± {_fmt(summary[1], metric)}" if summary else "–")
        note = dominant(r) or ""
        if r.at_chance and r.own is not None:
            note = (f"{chance_label(r)}: its own 95% interval [{_fmt(r.own.lo, metric)}, "
                    f"{_fmt(r.own.hi, metric)}] {'lies under' if r.below_chance else 'holds'} "
                    f"{_fmt(result['chance'], metric)}; not ranked")
        lines.append(f"{rank:<8}{r.method:<18}{_fmt(r.value, metric):>10}  "
                     f"{_iv(r.vs_dense, metric):<33} {_iv(r.vs_best, metric):<33} {seeds:<21} {note}")
    lines.append(f"paired percentile bootstrap, {result['resamples']} resamples, seed "
                 f"{result['seed']}; rank 1= : tied with the best (interval contains 0"
                 f"{' or the difference is under the noise floor' if result['noise_floor'] else ''})")
    return "\n".join(lines)


def _stat(row: Row, result: dict[str, Any]) -> dict[str, Any]:
    return {"value": row.value, "rank": row.rank, "tied_with_best": row.tied_with_best,
            "at_chance": row.at_chance, "below_chance": row.below_chance,
            "chance": result["chance"],
            "vs_dense": None if row.vs_dense is None else
            [row.vs_dense.diff, row.vs_dense.lo, row.vs_dense.hi],
            "vs_best": None if row.vs_best is None else
            [row.vs_best.diff, row.vs_best.lo, row.vs_best.hi],
            "seeds": row.seeds}


def run_stats(results_dir: Path, groups: Mapping[str, str] | None = None
              ) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(model, method, pattern) -> the leaderboard's statistics of every run with per-example
    records: per metric its rank ("1=" when tied with the best), the paired interval to dense
    and, for accuracy, chance and whether the run is at chance. Models without a dense record
    are skipped (their runs show no intervals).

    `groups` (method -> group, e.g. its training tag) ranks each method among its own group
    only (`rank`, `tied_with_best`, `vs_best`, `group`), so a one-shot method is never "best"
    or "tied" against one that trains; `rank_all` / `tied_all` keep the rank among every
    method. Without `groups` every method is in one group "all"."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    root = Path(results_dir) / "runs"
    for model_dir in sorted(p for p in root.glob("*") if p.is_dir()):
        model = model_dir.name
        if not (model_dir / "dense" / f"dense{examples.SUFFIX}").is_file():
            continue
        patterns = sorted({p.name[: -len(examples.SUFFIX)]
                           for p in model_dir.glob(f"*/*{examples.SUFFIX}")} - {"dense"})
        for pattern in patterns:
            records = load_records(results_dir, model, pattern)     # read once per cell
            for metric in METRICS:
                result = compare(results_dir, model, pattern, metric, records=records)
                members: dict[str, set[str]] = {}
                for row in result["rows"]:
                    stat = _stat(row, result)
                    stat.update(rank_all=row.rank, tied_all=row.tied_with_best,
                                group=(groups or {}).get(row.method, "unknown") if groups else "all")
                    members.setdefault(stat["group"], set()).add(row.method)
                    out.setdefault((model, row.method, pattern), {})[metric] = stat
                for group, names in sorted(members.items()):
                    if groups is None or len(names) == len(result["rows"]):
                        continue                      # one group: its ranks are the overall ones
                    for row in compare(results_dir, model, pattern, metric, names,
                                       records)["rows"]:
                        out[(model, row.method, pattern)][metric].update(
                            rank=row.rank, tied_with_best=row.tied_with_best,
                            vs_best=None if row.vs_best is None else
                            [row.vs_best.diff, row.vs_best.lo, row.vs_best.hi])
    return out
