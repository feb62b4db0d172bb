"""results/ -> a static, offline leaderboard site (a pure, deterministic function of results/).

Owns the build: flattening runs into one table (`flat_rows`: runs.json / runs.csv, the speedup
cell of structured and 2:4 runs, the paired statistics with ranks within each method's training
group from bench/board/compare.py), rendering every page through the jinja2 templates in
site/templates (autoescaped; page content from bench/board/site_pages.py, columns from
bench/board/site_schema.py, run pages from bench/board/site_run.py, plots from bench/board/site_plots.py),
copying site/static/, plotly.js from the plotly package, the 2:4 speed records, CUDA check
records and per-example files alongside, and writing the build directory atomically through
bench.outputs (a unique temporary, then a rename; a folder that is not a build of this site is
never replaced). Same results, same bytes. Beyond results/ it reads only docs/protocol.md (the
methods page) and the name of the grid config (run pages' reproduce commands); method
descriptions come from the cards in results/methods, never the registry.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

from bench import outputs
from bench.board import agreement, equal_speed, site_pages, site_plots, site_run, site_schema
from bench.packages import REPO_ROOT
from bench.results import SCHEMA_VERSION, load_all
from bench.board.compare import chance_label, run_stats
from bench.board.cuda_table import check_sections, load_checks
from bench.board.method_cards import load_cards
from bench.board.speed_table import load_speed, run_speed, speed_sections
from bench.evaluation.zeroshot import average_metrics, tasks_in

log = logging.getLogger(__name__)

SITE_DIR = REPO_ROOT / "site"
PRIMARY = "ppl/wiki"  # the metric the delta to dense is computed on


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


def _zeroshot_average(metrics: dict[str, Any]) -> dict[str, Any]:
    """The zero-shot average and its stderr from the run's tasks (runs written before the stderr
    of the average was recorded get it here; recorded values are kept as they are)."""
    tasks = tasks_in(metrics)
    if not tasks:
        return {}
    derived = average_metrics(metrics, tasks)
    return {k: metrics[k] if metrics.get(k) is not None else v for k, v in derived.items()}


def flat_rows(runs: list[dict[str, Any]],
              speed: dict[str, dict[str, Any]] | None = None,
              stats: dict[tuple[str, str, str], dict[str, Any]] | None = None,
              cards: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One flat dict per run (sorted by model, method, pattern): the downloadable table.
    `cards` (results/methods) supply each method's training tag ("unknown" without a card).

    `speed` (results/speed records by target) supplies 2:4 runs' kernel speedup or "no GPU";
    `stats` (bench.board.compare.run_stats) the paired intervals, ranks, flips and chance levels."""
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
            "training": (cards or {}).get(method["name"], {}).get("training", "unknown"),
            "method_origin": method.get("origin"),
            "method_params": json.dumps(method["params"], sort_keys=True),
            "pattern": pattern["slug"], "pattern_kind": pattern["kind"],
            "target_sparsity": pattern["sparsity"], "achieved_sparsity": run["sparsity"]["achieved"],
            "params_nonzero": run["params"]["nonzero"], "params_total": run["params"]["total"],
            "prunable_params": run["sparsity"]["prunable_params"],
            **{m: run["metrics"].get(m) for m in names},
            **_zeroshot_average(run["metrics"]),
            f"delta_{PRIMARY}": d_abs, f"delta_{PRIMARY}_pct": d_pct,
            f"dense_{PRIMARY}": ref["metrics"].get(PRIMARY) if ref else None,
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
            **round_range(run.get("speed")),
        }
        row.update(paired_columns((stats or {}).get(_key(run))))
        row.update(run_speed(model["key"], pattern["slug"], speed or {}))
        row["speedup_text"], row["speedup_note"] = _speed_text(row)
        rows.append(row)
    return rows


def _rank_text(stat: dict[str, Any] | None, rank: str = "rank", tied: str = "tied_with_best"
               ) -> str | None:
    if stat is None:
        return None
    if stat.get("at_chance"):
        return chance_label(stat)
    if stat.get(rank) is None:
        return None
    return f"{stat[rank]}=" if stat.get(tied) and stat[rank] == 1 else str(stat[rank])


def paired_columns(stats: dict[str, Any] | None) -> dict[str, Any]:
    """A run's paired statistics as flat columns (None where it has no per-example records):
    flips, rank per metric within the run's training group (`rank_*`) and among every method
    (`rank_*_all`), the 95 % interval of the difference to dense, chance."""
    out: dict[str, Any] = {"flips/zeroshot": None, "zeroshot_chance": None,
                           "zeroshot_at_chance": None, "zeroshot_below_chance": None,
                           "rank_group": ((stats or {}).get("ppl") or {}).get("group")}
    for metric in ("ppl", "kl", "zeroshot", "flips"):
        stat = (stats or {}).get(metric)
        out[f"rank_{metric}"] = _rank_text(stat)
        out[f"rank_{metric}_sort"] = None if stat is None else stat.get("rank")
        out[f"rank_{metric}_all"] = _rank_text(stat, "rank_all", "tied_all")
        out[f"rank_{metric}_all_sort"] = None if stat is None else stat.get("rank_all")
        iv = None if stat is None else stat.get("vs_dense")
        out[f"{metric}_vs_dense_lo"] = iv[1] if iv else None
        out[f"{metric}_vs_dense_hi"] = iv[2] if iv else None
    if stats and "flips" in stats:
        out["flips/zeroshot"] = stats["flips"]["value"]
    if stats and "zeroshot" in stats:
        out["zeroshot_chance"] = stats["zeroshot"]["chance"]
        out["zeroshot_at_chance"] = stats["zeroshot"]["at_chance"]
        out["zeroshot_below_chance"] = stats["zeroshot"].get("below_chance", False)
    return out


def round_range(speed: dict[str, Any] | None) -> dict[str, float | int | None]:
    """Spread of a latency comparison: the smallest and largest per-round speedup.

    `latency.compare` interleaves dense and pruned runs and keeps every round's seconds; round i's
    speedup is dense_seconds[i] / pruned_seconds[i] (same tokens, so the tokens/s ratio for
    prefill and the ms/token ratio for decode). The headline figure is the ratio of medians; this
    range says how far single rounds strayed from it. All None where no rounds were recorded."""
    none: dict[str, float | int | None] = {"speedup_rounds": None, **{
        f"speedup_{phase}_{end}": None for phase in ("prefill", "decode") for end in ("min", "max")}}
    out: dict[str, float | int | None] = {}
    dense, pruned = (speed or {}).get("dense") or {}, (speed or {}).get("pruned") or {}
    for phase in ("prefill", "decode"):
        d, p = dense.get(f"{phase}_seconds") or [], pruned.get(f"{phase}_seconds") or []
        ratios = [a / b for a, b in zip(d, p) if b > 0]
        if not ratios or len(ratios) != len(d) or len(d) != len(p):
            return none
        out[f"speedup_{phase}_min"], out[f"speedup_{phase}_max"] = min(ratios), max(ratios)
        out["speedup_rounds"] = len(ratios)
    return {**none, **out}


def _speed_text(row: dict[str, Any]) -> tuple[str | None, str]:
    """The speedup cell: measured prefill / decode, "no GPU" for an unmeasured 2:4 run."""
    if row["speedup_prefill"] is not None:
        note = f"prefill tokens/s and decode ms/token vs dense on {row['speed_device']}"
        if row.get("speedup_rounds"):
            note += (f"; single rounds ranged {site_schema.range_text(row, 'prefill')}x prefill, "
                     f"{site_schema.range_text(row, 'decode')}x decode over "
                     f"{row['speedup_rounds']} rounds")
        return f"{row['speedup_prefill']:.2f}x / {row['speedup_decode']:.2f}x", note
    if row["speed_status"] == "no GPU":
        return "no GPU", (f"{row['speed_reason'] or ''}; on a GPU machine, "
                          f"`snakemake -R speed` measures it (docs/protocol.md)")
    kind = row["pattern_kind"]
    if kind == "dense":
        return "reference", "the dense model is what every speedup is measured against"
    if kind == "unstructured":
        return "no kernel", ("unstructured sparsity: no sparse kernel is timed (none in PyTorch "
                             "runs faster than the dense GEMM at these sparsities)")
    if kind == "nm":
        return "no kernel", "sparse tensor cores run 2:4 only; other N:M patterns have no kernel"
    return "not measured", "this run's record holds no latency comparison"


def _env() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(SITE_DIR / "templates")),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def render_pages(runs: list[dict[str, Any]], rows: list[dict[str, Any]],
                 speed: dict[str, dict[str, Any]],
                 checks: dict[str, dict[str, Any]] | None = None,
                 cards: dict[str, dict[str, Any]] | None = None,
                 grid: dict[str, str] | None = None,
                 equal: list[dict[str, Any]] | None = None,
                 agree: dict[str, Any] | None = None) -> dict[str, str]:
    """Every page of the site (relative path -> text) from the runs, their rows, the speed
    records and the CUDA check records; `grid` (configfile, results) goes into the run pages'
    reproduce commands; `equal`: the equal-speed comparisons (bench/board/equal_speed.py)."""
    env = _env()
    common = {"n_runs": len(rows), "primary": PRIMARY, "schema_version": SCHEMA_VERSION,
              "newest": max((r["created_at"] for r in rows), default=None)}

    def page(template: str, rel: str, **ctx: Any) -> str:
        depth = "../" * rel.count("/")
        return env.get_template(template).render(root=depth, page=rel, **common, **ctx)

    cols = site_schema.columns(rows)
    files = {
        "index.html": page("index.html.j2", "index.html", models=site_pages.landing(rows),
                           equal_speed=site_pages.equal_speed(equal or []),
                           agreement=agree or {"models": [], "rows": []},
                           speed=speed_sections(speed), checks=check_sections(checks or {})),
        "leaderboard.html": page("leaderboard.html.j2", "leaderboard.html",
                                 table=site_pages.table(rows, cols)),
        "plots.html": page("plots.html.j2", "plots.html",
                           plots=[{**p, "spec": _script_json(p["spec"])}
                                  for p in site_plots.all_plots(rows, speed)]),
        "methods.html": page("methods.html.j2", "methods.html", **site_pages.methods_context(rows, cards or {})),
    }
    by_key = {_key(r): r for r in runs}
    for row in rows:
        rel = site_pages.run_page(row)
        run = by_key[(row["model"], row["method"], row["pattern"])]
        files[rel] = page("run.html.j2", rel, **site_run.run_context(run, row, grid))
        files[rel[:-len(".html")] + ".json"] = json.dumps(run, indent=2, sort_keys=True) + "\n"
    return files


def _script_json(spec: str) -> str:
    """JSON safe inside <script type="application/json">: every '<' (only ever inside JSON
    strings) becomes \\u003c, so no '</script>' or '<!--' from a name can end the element."""
    return spec.replace("<", "\\u003c")


def plotly_js() -> Path:
    """plotly.js as shipped inside the plotly Python package (same version as the specs)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package ({path})")
    return path


_SITE_ENTRIES = frozenset({"static", "runs", "speed", "cuda", "runs.json", "runs.csv"})


def is_site(path: Path) -> bool:
    """A folder that holds nothing but a build of this site (so a rebuild may replace it)."""
    return all(p.name in _SITE_ENTRIES or (p.is_file() and p.suffix == ".html")
               for p in Path(path).iterdir())


def _write_tree(out_dir: Path, files: dict[str, str | bytes]) -> None:
    """Write files (relative path -> text or bytes) plus site/static/ into the claimed folder."""
    shutil.copytree(SITE_DIR / "static", out_dir / "static")
    shutil.copyfile(plotly_js(), out_dir / "static" / "plotly.min.js")   # offline: no CDN
    for rel, text in sorted(files.items()):
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            (out_dir / rel).write_bytes(text)
        else:
            (out_dir / rel).write_text(text, encoding="utf-8")


def _examples_files(results_dir: Path, runs: list[dict[str, Any]]) -> dict[str, bytes]:
    """Each run's per-example record, copied beside its page (linked from it)."""
    out = {}
    for run in runs:
        if run.get("examples"):
            rel = Path("runs") / run["model"]["key"] / run["method"]["name"] / run["examples"]
            src = results_dir / rel
            if src.is_file():
                out[rel.as_posix()] = src.read_bytes()
    return out


def build_site(results_dir: Path, out_dir: Path, configfile: str = site_run.DEFAULT_CONFIG
               ) -> Path:
    """Read results_dir (runs/, speed/) and write out_dir: index.html (overview),
    leaderboard.html, plots.html, methods.html, one page + raw JSON per run under runs/,
    runs.json, runs.csv, speed/*.json and static/ (with plotly.min.js). `configfile` names the
    grid config the results came from, for the run pages' commands (the results folder is
    named as given)."""
    import pandas as pd

    if not Path(results_dir).is_dir():
        raise FileNotFoundError(f"--results: folder {results_dir} does not exist")
    grid = {"configfile": configfile, "results": Path(results_dir).as_posix()}
    with outputs.claim(Path(out_dir), "--out", "dir", is_site) as claim:
        _build(Path(results_dir), claim.tmp, pd, grid)
    log.info("leaderboard written to %s", Path(out_dir) / "index.html")
    return Path(out_dir) / "index.html"


def _build(results_dir: Path, out_dir: Path, pd: Any, grid: dict[str, str]) -> None:
    runs = load_all(Path(results_dir))
    if not runs:
        log.warning("no runs under %s/runs: the leaderboard will be empty", results_dir)
    speed = load_speed(Path(results_dir))
    checks = load_checks(Path(results_dir))
    cards = load_cards(Path(results_dir))
    groups = {name: card["training"] for name, card in cards.items()}
    rows = flat_rows(runs, speed, run_stats(Path(results_dir), groups), cards)
    cols = [c.key for c in site_schema.columns(rows)]
    header = cols + [k for k in (list(rows[0]) if rows else []) if k not in cols]
    csv = pd.DataFrame(rows, columns=header or ["model", "method", "pattern"])
    files: dict[str, str | bytes] = {
        **render_pages(runs, rows, speed, checks, cards, grid,
                       equal_speed.comparisons(Path(results_dir), rows),
                       agreement.site_rows(Path(results_dir), runs)),
        **_examples_files(Path(results_dir), runs),
        "runs.json": json.dumps(rows, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n",
        "runs.csv": csv.to_csv(index=False, lineterminator="\n"),
        **{f"speed/{t}.json": json.dumps(r, indent=1, sort_keys=True) + "\n" for t, r in speed.items()},
        **{f"cuda/{n}": json.dumps(r, indent=1, sort_keys=True) + "\n" for n, r in checks.items()},
    }
    _write_tree(out_dir, files)
    log.info("leaderboard of %d runs", len(rows))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench leaderboard --results results --out site/_build`."""
    parser = argparse.ArgumentParser(prog="bench leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results", help="results directory")
    parser.add_argument("--out", type=Path, default=SITE_DIR / "_build", help="site build directory")
    parser.add_argument("--configfile", default=site_run.DEFAULT_CONFIG,
                        help="the grid config the results came from (named in the run pages' "
                             "reproduce commands)")
    args = parser.parse_args(argv)
    build_site(args.results, args.out, args.configfile)
    return 0
