"""`bench compare` (bench/board/compare.py): values, flips, chance, ranks with ties, seeds, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.board import compare
from bench.evaluation import examples
from bench.packages import REPO_ROOT
from methods.base import PruneBenchError

N_DOCS = 200


def _record(method: str, pattern: str, nll: np.ndarray, kl: np.ndarray | None,
            acc: dict[str, np.ndarray]) -> dict:
    tasks = {}
    for task, a in acc.items():
        n_choices = 4 if task == "arc_easy" else 2
        tasks[task] = {"doc_ids": list(range(len(a))), "target": [0] * len(a),
                       "loglik": [[0.0] * n_choices] * len(a), "acc": [int(x) for x in a]}
        if task == "arc_easy":
            tasks[task]["acc_norm"] = [int(x) for x in a]
    return {"schema": examples.SCHEMA,
            "run": {"model": "m", "method": method, "pattern": pattern, "created_at": "x"},
            "ppl": {"corpus": "wiki", "token_ids_sha256": "ab" * 32, "seqlen": 64,
                    "window_ids": list(range(len(nll))), "nll": nll.tolist(),
                    "kl": None if kl is None else kl.tolist()},
            "zeroshot": {"protocol": {}, "tasks": tasks}}


def _write(root, rec: dict, seed: int | None = None) -> None:
    run = rec["run"]
    if seed is None:
        path = root / "runs" / run["model"] / run["method"] / f"{run['pattern']}{examples.SUFFIX}"
    else:
        path = (root / "seeds" / run["model"] / run["method"] / run["pattern"] /
                f"seed-{seed}{examples.SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(examples.dumps(rec))


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    nll = rng.normal(3.0, 0.3, 64)
    dense_acc = {"arc_easy": (rng.random(N_DOCS) < 0.7).astype(int),
                 "boolq": (rng.random(N_DOCS) < 0.7).astype(int)}
    _write(tmp_path, _record("dense", "dense", nll, np.zeros(64), dense_acc))
    flip = {t: a.copy() for t, a in dense_acc.items()}
    flip["arc_easy"][:20] = 1 - flip["arc_easy"][:20]          # 20 of 400 documents flipped
    _write(tmp_path, _record("good", "2of4", nll + 0.5, np.full(64, 0.2), flip))
    _write(tmp_path, _record("twin", "2of4", nll + 0.5 + rng.normal(0, 0.01, 64),
                             np.full(64, 0.21), flip))
    chance = {t: (rng.random(N_DOCS) < (0.25 if t == "arc_easy" else 0.5)).astype(int)
              for t in dense_acc}
    _write(tmp_path, _record("bad", "2of4", nll + 3.0, np.full(64, 2.0), chance))
    for seed, shift in ((1, 0.05), (2, -0.05)):
        _write(tmp_path, _record("good", "2of4", nll + 0.5 + shift, np.full(64, 0.2), flip), seed)
    return tmp_path


def test_flips_are_the_fraction_of_documents_whose_correctness_changed(results) -> None:
    out = compare.compare(results, "m", "2of4", "flips")
    row = {r.method: r for r in out["rows"]}["good"]
    assert row.value == pytest.approx(20 / (2 * N_DOCS))


def test_ppl_ranks_with_ties_and_intervals(results) -> None:
    out = compare.compare(results, "m", "2of4", "ppl")
    rows = {r.method: r for r in out["rows"]}
    assert rows["good"].rank == 1 and rows["twin"].rank == 1          # tied within noise
    assert rows["bad"].rank == 3
    assert rows["good"].value == pytest.approx(np.exp(np.mean(
        examples.load(results / "runs/m/good/2of4.examples.json.gz")["ppl"]["nll"])))
    assert rows["good"].vs_dense.lo > 0                                # worse than dense: separated
    assert out["dense"] == pytest.approx(np.exp(np.mean(
        examples.load(results / "runs/m/dense/dense.examples.json.gz")["ppl"]["nll"])))


def test_accuracy_at_chance_is_not_ranked(results) -> None:
    out = compare.compare(results, "m", "2of4", "zeroshot")
    assert out["chance"] == pytest.approx((0.25 + 0.5) / 2)
    rows = {r.method: r for r in out["rows"]}
    assert rows["bad"].at_chance and rows["bad"].rank is None
    assert not rows["good"].at_chance and rows["good"].rank == 1


def test_accuracy_below_chance_is_not_ranked_either(results) -> None:
    """A run that answers reliably worse than guessing (its own interval wholly under chance) is
    no better evidence than one at chance: neither is ranked, and the table says which."""
    rng = np.random.default_rng(1)
    worse = {t: (rng.random(N_DOCS) < (0.10 if t == "arc_easy" else 0.30)).astype(int)
             for t in ("arc_easy", "boolq")}
    nll = rng.normal(3.0, 0.3, 64)
    _write(results, _record("worse", "2of4", nll + 4.0, np.full(64, 3.0), worse))
    out = compare.compare(results, "m", "2of4", "zeroshot")
    rows = {r.method: r for r in out["rows"]}
    assert rows["worse"].own.hi < out["chance"]
    assert rows["worse"].at_chance and rows["worse"].below_chance and rows["worse"].rank is None
    assert rows["bad"].at_chance and not rows["bad"].below_chance
    assert compare.chance_label(rows["worse"]) == "below chance"
    text = compare.table(out)
    line = next(x for x in text.splitlines() if " worse " in x)
    assert line.startswith("below") and "lies under" in line and "not ranked" in line


def test_seed_spread_is_reported(results) -> None:
    out = compare.compare(results, "m", "2of4", "ppl")
    good = {r.method: r for r in out["rows"]}["good"]
    assert len(good.seeds) == 3
    mean, sd = compare.seed_summary(good)
    assert mean == pytest.approx(np.mean(good.seeds)) and sd > 0
    assert compare.dominant(good) in ("calibration draw", "evaluation sample")


def test_missing_records_are_one_line(tmp_path, results) -> None:
    with pytest.raises(PruneBenchError, match="no per-example records of the dense run"):
        compare.compare(tmp_path / "nothing", "m", "2of4", "ppl")
    with pytest.raises(PruneBenchError, match="no run of 'm' at pattern '4of8'"):
        compare.compare(results, "m", "4of8", "ppl")


def test_a_subset_is_ranked_on_its_own(results) -> None:
    """`methods` (a training group, or --methods on the command line) ranks only those: without
    its twin, "good" is the sole best, "1" and not "1="."""
    rows = {r.method: r for r in compare.compare(results, "m", "2of4", "ppl", ["good", "bad"])["rows"]}
    assert set(rows) == {"good", "bad"} and rows["good"].rank == 1 and not rows["good"].tied_with_best
    out = subprocess.run([sys.executable, "-m", "bench", "compare", "--model", "m", "--pattern",
                          "2of4", "--metric", "ppl", "--methods", "good,bad", "--results",
                          str(results)], capture_output=True, text=True, cwd=REPO_ROOT,
                         check=True).stdout
    assert "twin" not in out and "\n1 " in out and "1=" not in out.split("paired percentile")[0]


def test_cli_prints_the_table(results) -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "compare", "--model", "m", "--pattern",
                          "2of4", "--results", str(results)], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True).stdout
    for text in ("m @ 2of4: ppl", "kl", "zeroshot", "flips", "1=", "at chance", "seeds mean"):
        assert text in out
    bad = subprocess.run([sys.executable, "-m", "bench", "compare", "--model", "m", "--pattern",
                          "2of4", "--results", str(results / "none")], capture_output=True,
                         text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_the_noise_floor_of_the_grid_schedule_makes_small_differences_ties(results) -> None:
    floor_dir = results / "bench" / "noise_floor"
    floor_dir.mkdir(parents=True)
    (floor_dir / "m-sparsegpt_seq-2of4-batch.json").write_text(
        json.dumps({"relative_spread": 0.9, "sequential": True}))
    assert compare.noise_floor(results, "m") == 0.0          # a _seq variant's floor: not applied
    (floor_dir / "m-sparsegpt-2of4-batch.json").write_text(
        json.dumps({"relative_spread": 0.5, "sequential": False}))
    assert compare.noise_floor(results, "m") == 0.5
    out = compare.compare(results, "m", "2of4", "ppl")
    assert out["noise_floor"] == 0.5
    rows = {r.method: r for r in out["rows"]}
    assert rows["good"].rank == 1 and rows["twin"].rank == 1 and rows["bad"].rank == 3


@pytest.mark.parametrize("metric", ["ppl", "kl", "zeroshot", "flips"])
def test_compare_on_the_committed_results(metric) -> None:
    """The committed smollm2-135m runs at unstructured-50: every value equals its run JSON's
    metric, every interval holds its own point difference, ranks start at 1."""
    results = REPO_ROOT / "results"
    out = compare.compare(results, "smollm2-135m", "unstructured-50", metric)
    assert out["rows"] and out["rows"][0].rank == 1
    key = {"ppl": "ppl/wiki", "kl": "kl/wiki", "zeroshot": "zeroshot/average/acc"}.get(metric)
    for row in out["rows"]:
        run = json.loads((results / "runs" / "smollm2-135m" / row.method /
                          "unstructured-50.json").read_text())
        if key is not None:
            # per-window NLLs are float32 losses: equal to float32 precision
            assert row.value == pytest.approx(run["metrics"][key], rel=1e-6, abs=1e-9)
        iv = row.vs_dense
        assert iv.lo <= iv.diff <= iv.hi
    if metric == "zeroshot":
        assert 0.3 < out["chance"] < 0.45                 # 2- and 4-choice tasks mixed
