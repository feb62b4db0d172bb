"""What each page of the leaderboard site shows, as plain data for the jinja2 templates.

Owns the landing page (per model: the leader or tie of every pattern within each training
group, and a methods x patterns matrix of perplexity and zero-shot average with the change
against dense, bucketed by how much was lost), the leaderboard table (rows in reading order,
cells driven by bench/board/site_schema.py, the filter values, the column groups a reader can show,
chance levels), and the methods page (each method's paper, description, training tag and
capabilities from its card in results/methods, with docs/protocol.md rendered). Safe file names
for pages of runs whose names come from results (`slug`); run pages are bench/board/site_run.py. Pure
functions of their inputs.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from bench.packages import REPO_ROOT
from bench.board.site_schema import GROUPS, Column, cell, pct_change, range_text, short

PATTERN_ORDER = {"dense": 0, "unstructured": 1, "nm": 2, "structured": 3}
ACC = "zeroshot/average/acc"
PPL = "ppl/wiki"


def slug(name: str) -> str:
    """A file-name-safe form of a name from results; changed names get a short digest."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "_"
    return safe if safe == name else f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def run_page(row: dict[str, Any]) -> str:
    """Relative path of a run's page (its raw JSON sits beside it with .json)."""
    return f"runs/{slug(row['model'])}/{slug(row['method'])}/{slug(row['pattern'])}.html"


def loss_bucket(delta_pct: float | None) -> str:
    """CSS class for how much perplexity was lost against dense: l0 (<= 5 %) .. l4 (> 400 %)."""
    if delta_pct is None:
        return "lna"
    for bucket, limit in (("l0", 5.0), ("l1", 20.0), ("l2", 100.0), ("l3", 400.0)):
        if delta_pct <= limit:
            return bucket
    return "l4"


def patterns_of(rows: list[dict[str, Any]]) -> list[str]:
    keys = {(PATTERN_ORDER.get(r["pattern_kind"], 9), r["target_sparsity"] or 0.0, r["pattern"])
            for r in rows if r["pattern_kind"] != "dense"}
    return [k[2] for k in sorted(keys)]


def _acc_delta(row: dict[str, Any], dense: dict[str, Any] | None) -> float | None:
    if dense is None or row.get(ACC) is None or dense.get(ACC) is None:
        return None
    return 100.0 * (row[ACC] - dense[ACC])


def _stderr_title(row: dict[str, Any]) -> str:
    err = row.get(ACC + "_stderr")
    return "" if err is None else f"zero-shot average ± {100 * err:.1f} points (stderr)"


def _best(scored: list[dict[str, Any]]) -> dict[str, Any]:
    """Who leads a (model, pattern) on ppl, from the paired ranks only (never the raw minimum):
    one method separated from the rest, several tied at 1=, or no ranks (no per-example records)."""
    first = sorted((r for r in scored if r.get("rank_ppl") in ("1", "1=")), key=lambda r: r["method"])
    if not first:
        return {"kind": "unranked", "runs": []}
    return {"kind": "best" if len(first) == 1 and first[0]["rank_ppl"] == "1" else "tied",
            "runs": first}


def landing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model (pretrained models first, models trained here last): dense reference, the
    leader or the tie per pattern, and the methods x patterns matrix."""
    out = []
    trained = {r["model"]: bool(r["trained_here"]) for r in rows}
    for model in sorted(trained, key=lambda m: (trained[m], m)):
        mine = [r for r in rows if r["model"] == model]
        dense = next((r for r in mine if r["pattern_kind"] == "dense"), None)
        patterns = patterns_of(mine)
        methods = sorted({r["method"] for r in mine if r["pattern_kind"] != "dense"})
        by = {(r["method"], r["pattern"]): r for r in mine}
        best = []
        for p in patterns:
            scored = [r for r in mine if r["pattern"] == p and r.get(PPL) is not None
                      and r["pattern_kind"] != "dense"]
            for group in sorted({r["training"] for r in scored}, key=_group_order):
                lead = _best([r for r in scored if r["training"] == group])
                best.append({"pattern": p, "group": group, "kind": lead["kind"], "methods": [
                    {"method": b["method"], "ppl": short(b[PPL]), "href": run_page(b),
                     "delta": pct_change(b.get(f"delta_{PPL}_pct"))} for b in lead["runs"]],
                    "bucket": loss_bucket(lead["runs"][0].get(f"delta_{PPL}_pct"))
                    if lead["runs"] else ""})
        matrix = []
        for m in methods:
            cells = []
            for p in patterns:
                r = by.get((m, p))
                if r is None:
                    cells.append(None)
                    continue
                d_acc = _acc_delta(r, dense)
                cells.append({
                    "ppl": "–" if r.get(PPL) is None else short(r[PPL]),
                    "ppl_title": "" if r.get(PPL) is not None else f"{PPL} not recorded for this run",
                    "delta": pct_change(r.get(f"delta_{PPL}_pct")),
                    "acc": "–" if r.get(ACC) is None else f"{100 * r[ACC]:.1f}",
                    "acc_title": _stderr_title(r) if r.get(ACC) is not None
                    else "zero-shot not measured for this run",
                    "acc_delta": "" if d_acc is None else f"{d_acc:+.1f}",
                    "at_chance": bool(r.get("zeroshot_at_chance")),
                    "chance_label": ("below chance" if r.get("zeroshot_below_chance")
                                     else "at chance"),
                    "bucket": loss_bucket(r.get(f"delta_{PPL}_pct")), "href": run_page(r)})
            matrix.append({"method": m, "cells": cells, "training": next(
                (r["training"] for r in mine if r["method"] == m), "unknown")})
        first = mine[0]
        out.append({"key": model, "arch": first["arch"], "trained_here": first["trained_here"],
                    "baseline_note": first["baseline_note"], "n_runs": len(mine),
                    "dense_ppl": "–" if not dense or dense.get(PPL) is None else f"{dense[PPL]:,.2f}",
                    "dense_acc": "–" if not dense or dense.get(ACC) is None else f"{100 * dense[ACC]:.1f}",
                    "chance": dict(chance_levels(mine)).get(model),
                    "dense_acc_title": _stderr_title(dense) if dense else "",
                    "dense_href": run_page(dense) if dense else None,
                    "patterns": patterns, "best": best, "matrix": matrix})
    return out


def _group_order(group: str) -> tuple[bool, str]:
    return group != "one-shot", group


def row_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reading order: pretrained models first, then model, pattern (dense first), training
    group, rank within it (unranked last), method."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        rank = r.get("rank_ppl_sort")
        return (bool(r["trained_here"]), r["model"], PATTERN_ORDER.get(r["pattern_kind"], 9),
                r["target_sparsity"] or 0.0, r["pattern"], r["training"] != "one-shot",
                r["training"], rank is None, rank or 0, r["method"])
    return sorted(rows, key=key)


def chance_levels(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(model, chance of its zero-shot average in points) for the table's legend."""
    seen: dict[str, float] = {}
    for r in row_order(rows):
        if r.get("zeroshot_chance") is not None:
            seen.setdefault(r["model"], r["zeroshot_chance"])
    return [(m, f"{100 * c:.1f}") for m, c in seen.items()]


def table(rows: list[dict[str, Any]], cols: list[Column]) -> dict[str, Any]:
    """The leaderboard table: header, rows of cells, the values each filter offers, the column
    groups a reader can show, and the chance level of each model's zero-shot average."""
    body = []
    for r in row_order(rows):
        body.append({"href": run_page(r), "cells": [cell(c, r) for c in cols],
                     "training": r["training"],
                     "filters": {"model": r["model"], "arch": r["arch"], "kind": r["pattern_kind"],
                                 "pattern": r["pattern"], "method": r["method"],
                                 "training": r["training"]}})
    filters = {k: sorted({b["filters"][k] for b in body}, key=natural)
               for k in ("model", "arch", "kind", "pattern", "method", "training")}
    groups = [(g, GROUPS[g]) for g in GROUPS if any(c.group == g and not c.shown for c in cols)]
    return {"columns": cols, "rows": body, "filters": filters, "groups": groups,
            "chance": chance_levels(rows)}


def natural(name: str) -> list[Any]:
    """Sort key putting layers.2 before layers.10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _speed_text(row: dict[str, Any]) -> str:
    return (f"{row['speedup_prefill']:.2f}x ({range_text(row, 'prefill')}) / "
            f"{row['speedup_decode']:.2f}x ({range_text(row, 'decode')})")


def equal_speed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The equal-speed comparisons (bench/board/equal_speed.py) as table rows, pretrained models
    first: both runs with their speedups (per-round range), ppl, the paired 95 % interval of
    the ppl difference and the verdict."""
    out = []
    for e in sorted(entries, key=lambda e: (bool(e["runs"][0]["trained_here"]), e["model"])):
        a, b = e["runs"]
        iv = e["interval"]
        out.append({"model": e["model"], "verdict": e["verdict"],
                    "diff": "–" if iv is None else f"{iv[0]:+,.2f} [{iv[1]:+,.2f}, {iv[2]:+,.2f}]",
                    "runs": [{"name": f"{r['method']} {r['pattern']}", "href": run_page(r),
                              "training": r["training"],
                              "speed": _speed_text(r), "ppl": short(r[PPL])} for r in (a, b)]})
    return out


def methods_context(rows: list[dict[str, Any]], cards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Methods in the results with their card (results/methods: paper, description, training,
    capabilities, defaults) and the protocol document rendered from markdown (raw HTML off)."""
    from markdown_it import MarkdownIt

    items = []
    for name in sorted({r["method"] for r in rows}):
        n_runs = sum(r["method"] == name for r in rows)
        origins = sorted({r.get("method_origin") or "" for r in rows if r["method"] == name} - {""})
        c = cards.get(name)
        if c is None:
            items.append({"name": name, "n_runs": n_runs, "installed": False, "origins": origins})
            continue
        items.append({"name": name, "n_runs": n_runs, "installed": True, "kind": c["kind"],
                      "origins": origins, "paper": c["paper"], "description": c["description"],
                      "fidelity": c["fidelity"], "training": c["training"],
                      "capabilities": c["capabilities"],
                      "params": json.dumps(c["defaults"], sort_keys=True)})
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    protocol = (REPO_ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    return {"methods": items, "protocol_html": md.render(protocol)}
