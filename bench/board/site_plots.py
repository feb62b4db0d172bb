"""The leaderboard's plots as plotly figure specs (JSON), built from the flat run rows and the 2:4
speed records only.

Owns four figures: perplexity vs achieved sparsity per method (one panel per model, log scale),
zero-shot accuracy (95 % bars, chance drawn) vs measured speedup, structured vs
unstructured perplexity at equal parameter count, and 2:4 layer speedup vs token count per
backend. Each is returned as a JSON string (sorted keys, so the same results give the same
bytes) that site/static/site.js hands to the plotly.js written into the build. A figure with
nothing to show renders an annotation saying why ("no GPU"), never an empty frame.
"""
from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from plotly.utils import PlotlyJSONEncoder

SYMBOL = {"unstructured": "circle", "nm": "diamond", "structured": "square"}
LAYOUT = {"template": "plotly_white", "height": 420, "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
          "legend": {"orientation": "h", "y": -0.18}}


def _spec(fig: go.Figure) -> str:
    return json.dumps(fig.to_plotly_json(), cls=PlotlyJSONEncoder, sort_keys=True)


def _empty(title: str, why: str) -> str:
    fig = go.Figure()
    fig.update_layout(title=title, **LAYOUT, xaxis={"visible": False}, yaxis={"visible": False},
                      annotations=[{"text": why, "showarrow": False, "font": {"size": 16},
                                    "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}])
    return _spec(fig)


def _models(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["model"] for r in rows})


def _panels(models: list[str], title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=models, horizontal_spacing=0.06)
    fig.update_layout(title=title, **LAYOUT)
    return fig


def ppl_vs_sparsity(rows: list[dict[str, Any]]) -> str:
    """Perplexity (log) vs achieved sparsity; unstructured runs as a line from the dense point."""
    models = _models(rows)
    if not models:
        return _empty("Perplexity vs sparsity", "no runs")
    fig = _panels(models, "Perplexity vs achieved sparsity (log scale; lower is better)")
    methods = sorted({r["method"] for r in rows if r["pattern_kind"] != "dense"})
    for col, model in enumerate(models, start=1):
        mine = [r for r in rows if r["model"] == model and r.get("ppl/wiki") is not None]
        dense = [r for r in mine if r["pattern_kind"] == "dense"]
        for i, method in enumerate(methods):
            for kind in ("unstructured", "nm", "structured"):
                pts = sorted((r for r in mine if r["method"] == method and r["pattern_kind"] == kind),
                             key=lambda r: r["achieved_sparsity"])
                if not pts:
                    continue
                if kind == "unstructured":
                    pts = dense[:1] + pts
                fig.add_trace(go.Scatter(
                    x=[r["achieved_sparsity"] for r in pts], y=[r["ppl/wiki"] for r in pts],
                    text=[f"{r['method']} {r['pattern']}" for r in pts], name=method,
                    legendgroup=method, showlegend=col == 1 and kind == _first_kind(rows, method),
                    mode="lines+markers" if kind == "unstructured" else "markers",
                    marker={"symbol": SYMBOL[kind], "size": 9, "color": _color(i)},
                    line={"color": _color(i)},
                    hovertemplate="%{text}<br>sparsity %{x:.1%}<br>ppl %{y:.2f}<extra></extra>"),
                    row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
        fig.update_xaxes(title_text="sparsity", tickformat=".0%", row=1, col=col)
    fig.update_yaxes(title_text="perplexity", row=1, col=1)
    return _spec(fig)


def _first_kind(rows: list[dict[str, Any]], method: str) -> str:
    kinds = [k for k in ("unstructured", "nm", "structured")
             if any(r["method"] == method and r["pattern_kind"] == k for r in rows)]
    return kinds[0] if kinds else ""


def _color(i: int) -> str:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return palette[i % len(palette)]


def accuracy_vs_speedup(rows: list[dict[str, Any]]) -> str:
    """Zero-shot average accuracy (95 % bars from its stderr) vs measured prefill speedup (dense
    at 1x), with the chance level drawn; no front is drawn through points the bars do not separate."""
    key = "zeroshot/average/acc"
    timed = [r for r in rows if r.get(key) is not None
             and (r.get("speedup_prefill") is not None or r["pattern_kind"] == "dense")]
    models = sorted({r["model"] for r in timed if r["pattern_kind"] != "dense"})
    if not models:
        return _empty("Accuracy vs speedup", "no run has both zero-shot accuracy and a measured "
                      "speedup yet (2:4 kernels: no GPU)")
    fig = _panels(models, "Zero-shot accuracy (95 % bars) vs measured prefill speedup; "
                          "dotted: chance")
    for col, model in enumerate(models, start=1):
        mine = [r for r in timed if r["model"] == model]
        xy = [(1.0 if r["pattern_kind"] == "dense" else r["speedup_prefill"], r[key]) for r in mine]
        fig.add_trace(go.Scatter(
            x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers", showlegend=False,
            text=[f"{r['method']} {r['pattern']}" for r in mine],
            error_y={"type": "data", "visible": True,
                     "array": [1.96 * (r.get(key + "_stderr") or 0.0) for r in mine]},
            marker={"size": 9, "color": [_color(hash_free(r["method"])) for r in mine],
                    "symbol": [SYMBOL.get(r["pattern_kind"], "star") for r in mine]},
            hovertemplate="%{text}<br>speedup %{x:.2f}x<br>acc %{y:.3f}<extra></extra>"),
            row=1, col=col)
        chance = next((r["zeroshot_chance"] for r in mine if r.get("zeroshot_chance") is not None),
                      None)
        if chance is not None:
            fig.add_hline(y=chance, line={"dash": "dot", "color": "#888"}, row=1, col=col)
        fig.update_xaxes(title_text="prefill speedup (x)", row=1, col=col)
    fig.update_yaxes(title_text="zero-shot accuracy", row=1, col=1)
    return _spec(fig)


def hash_free(name: str) -> int:
    """A stable small integer for a name (Python's hash() is salted per process)."""
    return sum(ord(c) * (i + 1) for i, c in enumerate(name))


def structured_vs_unstructured(rows: list[dict[str, Any]]) -> str:
    """Perplexity vs parameters kept: nonzero weights (unstructured, N:M) or total (structured)."""
    models = _models([r for r in rows if r["pattern_kind"] == "structured"])
    if not models:
        return _empty("Structured vs unstructured", "no structured runs")
    fig = _panels(models, "Perplexity at equal parameter count: structured vs unstructured")
    for col, model in enumerate(models, start=1):
        for kind, label, count in (("unstructured", "unstructured / N:M", "params_nonzero"),
                                   ("structured", "structured", "params_total")):
            pts = [r for r in rows if r["model"] == model and r.get("ppl/wiki") is not None
                   and (r["pattern_kind"] == kind or (kind == "unstructured" and r["pattern_kind"] == "nm"))]
            fig.add_trace(go.Scatter(
                x=[r[count] for r in pts], y=[r["ppl/wiki"] for r in pts], mode="markers",
                name=label, legendgroup=label, showlegend=col == 1,
                text=[f"{r['method']} {r['pattern']}" for r in pts],
                marker={"size": 9, "symbol": SYMBOL[kind],
                        "color": "#1f77b4" if kind == "unstructured" else "#d62728"},
                hovertemplate="%{text}<br>%{x:,} params<br>ppl %{y:.2f}<extra></extra>"),
                row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
        fig.update_xaxes(title_text="parameters kept", row=1, col=col)
    fig.update_yaxes(title_text="perplexity", row=1, col=1)
    return _spec(fig)


def layer_speedup_vs_tokens(speed: dict[str, dict[str, Any]]) -> str:
    """2:4 layer speedup (eager) vs token count, one panel per backend, a line per target x
    dtype x shape."""
    measured = {t: r for t, r in speed.items() if r["status"] == "measured" and r["layers"]}
    if not measured:
        reasons = sorted({r["reason"] for r in speed.values() if r["reason"]})
        return _empty("2:4 layer speedup", "; ".join(reasons) or "no 2:4 speed records")
    backends = sorted({row["backend"] for r in measured.values() for row in r["layers"]})
    fig = make_subplots(rows=1, cols=len(backends), subplot_titles=backends, shared_yaxes=True)
    fig.update_layout(title="2:4 layer speedup vs tokens (eager F.linear; 1 = dense)", **LAYOUT)
    for col, backend in enumerate(backends, start=1):
        for target in sorted(measured):
            rows = [x for x in measured[target]["layers"] if x["backend"] == backend and x["mode"] == "eager"]
            for key in sorted({(x["dtype"], x["out_features"], x["in_features"]) for x in rows}):
                pts = sorted((x for x in rows if (x["dtype"], x["out_features"], x["in_features"]) == key),
                             key=lambda x: x["tokens"])
                fig.add_trace(go.Scatter(
                    x=[x["tokens"] for x in pts], y=[x["speedup"] for x in pts], mode="lines+markers",
                    name=f"{target} {key[0]} {key[1]}x{key[2]}", showlegend=True),
                    row=1, col=col)
        fig.update_xaxes(type="log", title_text="tokens", row=1, col=col)
    fig.update_yaxes(title_text="speedup (x)", row=1, col=1)
    return _spec(fig)


def all_plots(rows: list[dict[str, Any]], speed: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """[{id, title, spec}] in page order."""
    return [
        {"id": "ppl-vs-sparsity", "title": "Perplexity vs sparsity", "spec": ppl_vs_sparsity(rows)},
        {"id": "acc-vs-speedup", "title": "Accuracy vs measured speedup",
         "spec": accuracy_vs_speedup(rows)},
        {"id": "structured-vs-unstructured", "title": "Structured vs unstructured at equal parameters",
         "spec": structured_vs_unstructured(rows)},
        {"id": "layer-speedup", "title": "2:4 layer speedup vs tokens",
         "spec": layer_speedup_vs_tokens(speed)},
    ]
