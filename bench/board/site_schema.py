"""The leaderboard's column schema: what each column is, how it is shown and which way is better.

Owns `Column` (key in the flat run rows, display name, description, lower-is-better, format,
group), the fixed columns, the zero-shot columns derived from the metrics present, and `cell`:
one formatted, sortable table cell. Like HELM's schema, it drives every table of the site, the
CSV header order and the tooltips, so a column is defined once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.evaluation.zeroshot import tasks_in

ZS_PREFIX = "zeroshot/"


@dataclass(frozen=True)
class Column:
    key: str                      # key in a flat run row (bench.board.leaderboard.flat_rows)
    name: str                     # header text
    description: str              # header tooltip
    lower_is_better: bool | None  # None: not a score (names, settings)
    fmt: str                      # text | pct | float2 | float4 | acc | params | seconds | speedup
    group: str                    # run | details | sparsity | quality | ranks | zero-shot | tasks | cost
    shown: bool = True            # a key column; the others sit in groups a reader can show


# the column groups a reader can show or hide (key columns are always shown)
GROUPS = {"details": "run details", "sparsity": "sparsity", "ranks": "ranks",
          "tasks": "zero-shot tasks", "cost": "cost"}

FIXED: tuple[Column, ...] = (
    Column("method", "method", "pruning method (methods/); a tag marks methods that train "
           "(they are ranked among themselves, never against one-shot methods)", None, "text", "run"),
    Column("model", "model", "model key of the zoo (config/models.yaml)", None, "text", "run"),
    Column("pattern", "pattern", "sparsity pattern: unstructured-P, N:M, structured-P", None,
           "text", "run"),
    Column("arch", "arch", "architecture family (adapter)", None, "text", "details", False),
    Column("pattern_kind", "kind", "dense / unstructured / N:M / structured", None, "text",
           "details", False),
    Column("training", "training", "one-shot, with recovery training, or search with training "
           "(ranks compare a method only with its own group)", None, "text", "details", False),
    Column("achieved_sparsity", "sparsity", "achieved sparsity measured on the saved weights "
           "(structured: fraction of structured-prunable parameters removed)", None, "pct",
           "sparsity", False),
    Column("params_nonzero", "params", "nonzero parameters of the pruned model (structured: "
           "the smaller model's; total in the tooltip)", True, "params", "sparsity", False),
    Column("ppl/wiki", "ppl", "perplexity on the held-out evaluation text (lower is better)",
           True, "float2", "quality"),
    Column("delta_ppl/wiki_pct", "Δppl %", "perplexity change against the dense model, %; "
           "below it the paired 95% interval of that change over the evaluation windows",
           True, "delta_pct", "quality"),
    Column("rank_ppl", "rank", "rank on perplexity among the methods of the same training group "
           "at this model and pattern: '1=' shares the top (its paired 95% interval against the "
           "best contains 0, or the difference is under the noise floor); `python -m bench "
           "compare`", True, "rank", "quality"),
    Column("kl/wiki", "KL", "mean per-token KL(dense || run) of the next-token distribution on "
           "the perplexity windows (lower is better; 0 for dense)", True, "float4", "quality"),
    Column("zeroshot/average/acc", "0-shot avg", "mean zero-shot accuracy over the tasks "
           "(lm-eval acc); below it the paired 95% interval of the difference to dense, in "
           "points; 'at chance' when the run's own interval contains the chance level, '< chance' "
           "(below chance) when it lies wholly under it", False,
           "acc", "zero-shot"),
    Column("flips/zeroshot", "flips", "fraction of zero-shot documents whose correctness differs "
           "from the dense model's (Dutta et al. 2024): equal accuracy can hide many flips",
           True, "pct", "zero-shot"),
    Column("speedup", "speedup", "measured vs dense, prefill / decode: structured runs on the "
           "CPU, 2:4 runs with sparse GPU kernels ('no GPU' where none was measured)", False,
           "speedup", "cost"),
    Column("rank_ppl_all", "rank ppl (all)", "rank on perplexity among every method at this "
           "model and pattern, training or not", True, "rank", "ranks", False),
    Column("rank_kl", "rank KL", "rank on KL within the training group", True, "rank", "ranks",
           False),
    Column("rank_zeroshot", "rank 0-shot", "rank on the zero-shot average within the training "
           "group ('at chance' and 'below chance' runs are not ranked)", True, "rank", "ranks", False),
    Column("prune_seconds", "prune s", "wall time of the pruning step", True, "seconds", "cost",
           False),
)


def zeroshot_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """One acc column per zero-shot task present in any row, alphabetical."""
    tasks = tasks_in(k for r in rows for k, v in r.items() if v is not None)
    return [Column(f"{ZS_PREFIX}{t}/acc", t, f"{t}: zero-shot accuracy (acc; acc_norm and "
                   "stderr on the run page)", False, "acc", "tasks", False) for t in tasks]


def columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The leaderboard's columns: fixed ones with the per-task zero-shot ones after the average."""
    out: list[Column] = []
    for col in FIXED:
        out.append(col)
        if col.key == "flips/zeroshot":
            out.extend(zeroshot_columns(rows))
    return out


def _params(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def short(value: float) -> str:
    """A perplexity that fits a table cell: 1,829.18, or 1.64e+07 from 10,000 on."""
    return f"{value:,.2f}" if abs(value) < 1e4 else f"{value:.3g}"


def pct_change(value: float | None) -> str:
    """A change in %, or as a factor (x7.8e+05) once it passes +1,000 %."""
    if value is None:
        return ""
    return f"{value:+.1f}%" if value < 1000 else f"x{1 + value / 100:.3g}"


# why a cell shows "–" (its tooltip; the page's legend says the same in words)
MISSING = {"rank": "not ranked: the run has no per-example records, or fewer than two methods "
                   "at this model and pattern have them",
           "acc": "{name}: not measured for this run (no zero-shot record, or the task is not in "
                  "its protocol)",
           "default": "{name}: not recorded for this run (made before the metric existed, or "
                      "not defined for its pattern)"}


def range_text(row: dict[str, Any], phase: str) -> str:
    """"lo-hi": the smallest and largest single-round speedup of a phase (prefill, decode)."""
    return f"{row[f'speedup_{phase}_min']:.2f}-{row[f'speedup_{phase}_max']:.2f}"


def interval_line(col: Column, row: dict[str, Any]) -> str:
    """The second line printed under a cell (visible without hovering): the paired 95 % interval
    of the change against dense of perplexity (in % of the dense ppl) and of the zero-shot
    average (points); for a measured speedup, the range of its single rounds."""
    if col.key == "delta_ppl/wiki_pct" and row.get("ppl_vs_dense_lo") is not None \
            and row.get("dense_ppl/wiki"):
        ref = row["dense_ppl/wiki"]
        return f"{100 * row['ppl_vs_dense_lo'] / ref:+.1f} to {100 * row['ppl_vs_dense_hi'] / ref:+.1f}%"
    if col.key == "zeroshot/average/acc" and row.get("zeroshot_vs_dense_lo") is not None:
        return f"{100 * row['zeroshot_vs_dense_lo']:+.1f} to {100 * row['zeroshot_vs_dense_hi']:+.1f}"
    if col.fmt == "speedup" and row.get("speedup_rounds"):
        return f"rounds {range_text(row, 'prefill')} / {range_text(row, 'decode')}"
    return ""


def cell(col: Column, row: dict[str, Any]) -> dict[str, Any]:
    """{"text": shown, "sort": sortable value ("" for text), "title": tooltip, "href": link,
    optionally "sub": a second, smaller line (the paired interval) and "cls": a CSS class}."""
    out = _cell(col, row)
    if out["text"] != "–" and (sub := interval_line(col, row)):
        out["sub"] = sub
    return out


def _cell(col: Column, row: dict[str, Any]) -> dict[str, Any]:
    value = row.get(col.key)
    if col.fmt == "speedup":
        text = row.get("speedup_text") or "–"
        return {"text": text, "sort": row.get("speedup_prefill") or "",
                "title": row.get("speedup_note") or "", "href": row.get("speed_file")}
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return {"text": "–", "sort": "", "title": MISSING.get(col.fmt, MISSING["default"])
                .format(name=col.name), "href": None}
    title = ""
    if col.fmt == "text":
        text = str(value)
    elif col.fmt == "pct":
        text = f"{100 * value:.1f}%"
    elif col.fmt == "delta_pct":
        text = pct_change(value)
    elif col.fmt == "acc":
        text = f"{100 * value:.1f}"
        err = row.get(col.key + "_stderr")
        title = f"± {100 * err:.1f} (stderr)" if err is not None else ""
        if col.key == "zeroshot/average/acc" and row.get("zeroshot_vs_dense_lo") is not None:
            title += (f"; vs dense {100 * row['zeroshot_vs_dense_lo']:+.1f} to "
                      f"{100 * row['zeroshot_vs_dense_hi']:+.1f} (paired 95%); chance "
                      f"{100 * row['zeroshot_chance']:.1f}")
        if row.get("zeroshot_at_chance") and col.key == "zeroshot/average/acc":
            below = row.get("zeroshot_below_chance")         # "<" keeps the column narrow
            title += "; below chance: its own interval lies under the chance level" if below else ""
            return {"text": f"{text} ({'< chance' if below else 'at chance'})", "sort": value,
                    "title": title,
                    "href": None, "cls": "at-chance"}
    elif col.fmt == "rank":
        return {"text": str(value), "sort": row.get(col.key + "_sort") or "", "title":
                "paired bootstrap, 2,000 resamples", "href": None}
    elif col.fmt == "params":
        text = _params(value)
        title = f"{value:,} nonzero of {row.get('params_total', value):,}"
    elif col.fmt == "seconds":
        text = f"{value:,.1f}"
    elif col.fmt == "float4":
        text = f"{value:,.4f}"
    else:
        text = f"{value:,.2f}"          # the table keeps every digit; the overview is `short`
        if col.key == "ppl/wiki" and row.get("ppl_vs_dense_lo") is not None:
            title = (f"vs dense {row['ppl_vs_dense_lo']:+,.2f} to {row['ppl_vs_dense_hi']:+,.2f} "
                     f"(paired 95% interval over the windows)")
    return {"text": text, "sort": value if col.fmt != "text" else "", "title": title, "href": None}
