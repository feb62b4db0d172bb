"""What a run's own page shows, as plain data for site/templates/run.html.j2.

Owns the reproduce commands (the run's commit, set-up, Snakemake forced to prune and evaluate
that run again under the grid config the results came from), the protocol as recorded in the run
(pattern, effective hyperparameters, calibration, each evaluation's settings), the metrics in
the units the tables use, the paired comparison's facts and the provenance. Pure functions.
"""
from __future__ import annotations

import json
from typing import Any

from bench.board.site_pages import natural, slug

DEFAULT_CONFIG = "config/config.yaml"


def _metric_text(name: str, value: float | None) -> str:
    """A run-page metric as the tables show it: accuracies (and their stderr) in %."""
    if value is None:
        return "–"
    if name.startswith("zeroshot/") or name.startswith("flips/"):
        return f"{100 * value:.2f}%"
    return f"{value:.6g}"


def run_context(run: dict[str, Any], row: dict[str, Any],
                grid: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything a run page shows: the commands that regenerate it, its protocol, metrics,
    provenance and per-layer sparsity. `grid`: the config file and results folder the site was
    built from (for the commands)."""
    metrics = sorted(run["metrics"].items())
    per_layer = sorted((run["sparsity"].get("per_layer") or {}).items(), key=lambda kv: natural(kv[0]))
    sections = {k: json.dumps(run[k], indent=1, sort_keys=True)
                for k in ("method", "pattern", "model", "calibration", "metrics_meta", "cost",
                          "environment", "code", "params", "structure", "speed", "method_report")
                if run.get(k) is not None}
    env, cost = run["environment"], run["cost"]
    facts = [("git commit", f"{run['code']['git_commit']}{' (dirty)' if run['code']['git_dirty'] else ''}"),
             ("environment", f"torch {env['torch']}, transformers {env['transformers']}, "
                             f"lm-eval {env.get('lm_eval')}, python {env['python']}, {env['device']}, "
                             f"{env.get('cpu_count')} CPUs"),
             ("prune / eval seconds", f"{cost['prune_seconds']:.1f} / {cost['eval_seconds']:.1f}"),
             ("peak memory (RSS)", f"{cost['peak_rss_mb']:,.0f} MB"),
             ("params nonzero / total", f"{run['params']['nonzero']:,} / {run['params']['total']:,}")]
    facts += paired_facts(row)
    return {"row": row, "facts": facts, "protocol": protocol(run),
            "reproduce": reproduce(run, **(grid or {})),
            "metrics": [(k, _metric_text(k, v)) for k, v in metrics],
            "per_layer": [(k, f"{100 * v:.2f}%") for k, v in per_layer],
            "sections": sections, "raw": slug(row["pattern"]) + ".json",
            "depth": "../../../"}


def protocol(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings a run was made under, as recorded in it: pattern, the method's effective
    hyperparameters (defaults filled in), calibration, and each evaluation's protocol."""
    pattern, method = run["pattern"], run["method"]
    params = method.get("params") or {}
    out = [("pattern", f"{pattern['slug']} ({pattern['kind']}), target sparsity "
                       f"{100 * (pattern.get('sparsity') or 0):.1f}%, achieved "
                       f"{100 * run['sparsity']['achieved']:.2f}%"),
           ("method hyperparameters", ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))
            or f"none ({method['name']} has no hyperparameters)"),
           ("layer order", "true-sequential (each layer sees its pruned predecessors)"
            if method.get("sequential") else "one statistics pass per block")]
    cal = run.get("calibration") or {}
    out.append(("calibration", f"{cal['n_samples']} x {cal['seqlen']} tokens of '{cal.get('source')}', "
                               f"seed {cal.get('seed')}; token ids sha256 {cal.get('sha256')}"
                if cal else "none (data-free)"))
    meta = run.get("metrics_meta") or {}
    for name, m in sorted(meta.items()):
        if name.startswith("ppl/"):
            out.append((name, f"{m.get('n_windows')} windows x {m.get('seqlen')} tokens "
                              f"({m.get('n_tokens', 0):,} scored), BOS {'yes' if m.get('bos') else 'no'}; "
                              f"token ids sha256 {m.get('token_ids_sha256')}"))
        elif name.startswith("kl/"):
            out.append((name, f"{m.get('direction')}, {m.get('vocabulary')} vocabulary, "
                              f"{m.get('dtype')}, on {m.get('windows')}"))
        elif name == "zeroshot":
            tasks = ", ".join(f"{t} {d.get('n')} of {d.get('n_split')}"
                              for t, d in sorted((m.get("tasks") or {}).items()))
            out.append((name, f"lm-eval {m.get('lm_eval')}, {m.get('num_fewshot')}-shot, at most "
                              f"{m.get('limit')} documents per task drawn with seed {m.get('seed')}, "
                              f"batch {m.get('batch_size')}; documents: {tasks}"))
    return out


def reproduce(run: dict[str, Any], configfile: str = DEFAULT_CONFIG,
              results: str = "results") -> dict[str, Any]:
    """The commands that regenerate a grid run from a fresh clone, and what may stop them:
    the run's commit, set-up, and Snakemake forced to prune (then evaluate) this run again
    under the grid config the results came from."""
    target = f"{results}/runs/{run['model']['key']}/{run['method']['name']}/{run['pattern']['slug']}.json"
    commit = run["code"].get("git_commit")
    config = "" if configfile == DEFAULT_CONFIG else f"--configfile {configfile} "
    return {"commands": [f"git checkout {commit or '<unknown commit>'}", "make setup",
                         f".venv/bin/snakemake --cores 2 {config}--forcerun prune -- {target}"],
            "dirty": bool(run["code"].get("git_dirty")), "commit": commit,
            "examples": run.get("examples"), "configfile": configfile}


def _chance_note(row: dict[str, Any]) -> str:
    if not row.get("zeroshot_at_chance"):
        return ""
    return " (this run is below chance)" if row.get("zeroshot_below_chance") else \
        " (this run is at chance)"


def paired_facts(row: dict[str, Any]) -> list[tuple[str, str]]:
    """What the paired comparison says of a run (bench.board.compare): its ranks, its 95 % intervals
    against dense, what difference its zero-shot subset resolves, chance and flips."""
    out: list[tuple[str, str]] = []
    if row.get("ppl_vs_dense_lo") is not None:
        out.append(("ppl vs dense (paired 95%)",
                    f"{row['ppl_vs_dense_lo']:+,.3f} to {row['ppl_vs_dense_hi']:+,.3f}; rank "
                    f"{row.get('rank_ppl') or '–'} among the methods at {row['pattern']}"))
    if row.get("kl_vs_dense_lo") is not None:
        out.append(("KL vs dense (paired 95%)", f"{row['kl_vs_dense_lo']:.4f} to "
                    f"{row['kl_vs_dense_hi']:.4f}; rank {row.get('rank_kl') or '–'}"))
    if row.get("zeroshot_vs_dense_lo") is not None:
        lo, hi = row["zeroshot_vs_dense_lo"], row["zeroshot_vs_dense_hi"]
        out.append(("0-shot avg vs dense (paired 95%)",
                    f"{100 * lo:+.1f} to {100 * hi:+.1f} points: this subset resolves differences "
                    f"of about ±{50 * (hi - lo):.1f} points; chance {100 * row['zeroshot_chance']:.1f}"
                    f"{_chance_note(row)}; rank "
                    f"{row.get('rank_zeroshot') or '–'}"))
    if row.get("flips/zeroshot") is not None:
        out.append(("answer flips vs dense", f"{100 * row['flips/zeroshot']:.1f}% of the "
                    f"zero-shot documents changed correctness"))
    return out
