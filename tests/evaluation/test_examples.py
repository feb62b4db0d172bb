"""The per-example file (bench/evaluation/examples.py): round trip, validation on load, exact pairing."""
from __future__ import annotations

import copy
import gzip

import pytest

from bench.evaluation import examples
from methods.base import PruneBenchError


def record(method: str = "wanda", n_windows: int = 4, docs: tuple[int, ...] = (3, 7, 9)) -> dict:
    return {
        "schema": examples.SCHEMA,
        "run": {"model": "tiny-llama", "method": method, "pattern": "2of4",
                "created_at": "2026-11-30T00:00:00+00:00"},
        "ppl": {"corpus": "wiki", "token_ids_sha256": "ab" * 32, "seqlen": 64,
                "window_ids": list(range(n_windows)), "nll": [2.0 + i / 10 for i in range(n_windows)],
                "kl": [0.01 * i for i in range(n_windows)]},
        "zeroshot": {"protocol": {"limit": 3}, "tasks": {"arc_easy": {
            "doc_ids": list(docs), "target": [0, 1, 3][: len(docs)],
            "loglik": [[-1.0, -2.0, -3.0, -4.0]] * len(docs),
            "acc": [1, 0, 0][: len(docs)], "acc_norm": [1, 0, 1][: len(docs)]}}},
    }


def test_round_trip_is_exact_and_deterministic(tmp_path) -> None:
    rec = record()
    path = tmp_path / "2of4.examples.json.gz"
    path.write_bytes(examples.dumps(rec))
    assert examples.load(path) == rec
    assert examples.dumps(copy.deepcopy(rec)) == path.read_bytes()     # no timestamp in gzip
    assert examples.is_examples_file(path)
    assert examples.path_for(tmp_path / "2of4.json") == path


@pytest.mark.parametrize("damage", ["truncate", "not-gzip", "bad-acc", "short-nll", "negative-kl",
                                    "nan", "target-out-of-range", "unsorted-docs"])
def test_a_corrupt_or_malformed_file_fails_on_load_in_one_line(tmp_path, damage) -> None:
    path = tmp_path / "x.examples.json.gz"
    rec = record()
    task = rec["zeroshot"]["tasks"]["arc_easy"]
    if damage == "bad-acc":
        task["acc"][0] = 2
    elif damage == "short-nll":
        rec["ppl"]["nll"].pop()
    elif damage == "negative-kl":
        rec["ppl"]["kl"][1] = -0.5
    elif damage == "nan":
        rec["ppl"]["nll"][0] = float("nan")
    elif damage == "target-out-of-range":
        task["target"][0] = 4
    elif damage == "unsorted-docs":
        task["doc_ids"] = [9, 7, 3]
    if damage in ("truncate", "not-gzip"):
        data = examples.dumps(rec)
        path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"{}")
    else:
        import json
        path.write_bytes(gzip.compress(json.dumps(rec).encode()))
    with pytest.raises(PruneBenchError) as exc:
        examples.load(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)
    assert not examples.is_examples_file(path)


def test_pairing_mismatch_is_a_one_line_error() -> None:
    a, b = record("wanda"), record("sparsegpt")
    examples.paired_ppl(a, b)
    examples.paired_task(a, b, "arc_easy")
    other = record("sparsegpt", n_windows=3)
    with pytest.raises(PruneBenchError, match="pairing mismatch.*window_ids"):
        examples.paired_ppl(a, other)
    shifted = record("sparsegpt", docs=(3, 7, 10))
    with pytest.raises(PruneBenchError, match="pairing mismatch.*different documents of 'arc_easy'"):
        examples.paired_task(a, shifted, "arc_easy")
    text = copy.deepcopy(b)
    text["ppl"]["token_ids_sha256"] = "cd" * 32
    with pytest.raises(PruneBenchError, match="token_ids_sha256"):
        examples.paired_ppl(a, text)
    with pytest.raises(PruneBenchError, match="no zero-shot records of 'piqa'"):
        examples.paired_task(a, b, "piqa")


def test_chance_of_a_task() -> None:
    rec = record()["zeroshot"]["tasks"]["arc_easy"]
    rec["loglik"] = [[0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    assert examples.chance(rec) == pytest.approx((0.5 + 0.25 + 0.25) / 3)


def test_an_evaluate_out_name_is_checked_before_any_work(tmp_path) -> None:
    """`--out wanda_seq-2of4.json` is fine; a name its per-example file cannot carry is refused
    in one line before the checkpoint is even read (it once failed after the whole evaluation)."""
    import jsonschema
    import pytest

    from bench import results
    from bench.pipeline import evaluate
    from methods.base import PruneBenchError

    run = results.example_run("m", "wanda_seq", "2of4", 30.0)
    run["examples"] = "wanda_seq-2of4.examples.json.gz"
    results.validate_run(run)
    run["examples"] = "../x.examples.json.gz"
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        results.validate_run(run)
    with pytest.raises(PruneBenchError, match="a run file's name may hold only"):
        evaluate(tmp_path / "no-checkpoint", tmp_path / "bad name.json")
