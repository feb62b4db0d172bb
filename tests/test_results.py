"""Tests for bench/results.py: schema validation, atomic writes, loading all runs."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from bench.results import (RUN_SCHEMA, SCHEMA_VERSION, environment_info, example_run, git_info, load_all,
                           load_run, run_path, validate_run, write_run)


def test_schema_is_valid_draft_2020_12() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(RUN_SCHEMA)
    assert SCHEMA_VERSION == 1


@pytest.mark.parametrize("pattern", ["dense", "unstructured-50", "2of4", "structured-20"])
def test_round_trip(tmp_path: Path, pattern: str) -> None:
    run = example_run(pattern=pattern)
    path = run_path(tmp_path, "tiny-llama", run["method"]["name"], pattern)
    assert path == tmp_path / "runs" / "tiny-llama" / run["method"]["name"] / f"{pattern}.json"
    write_run(path, run)
    assert load_run(path) == run
    text = path.read_text()
    assert text.endswith("}\n") and text == json.dumps(run, indent=2, sort_keys=True) + "\n"


def test_missing_field_named(tmp_path: Path) -> None:
    run = example_run()
    del run["sparsity"]["achieved"]
    with pytest.raises(ValueError, match=r"field 'sparsity\.achieved'.*required"):
        write_run(tmp_path / "r.json", run)
    assert not (tmp_path / "r.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(run))
    with pytest.raises(ValueError, match=rf"{bad}: field 'sparsity\.achieved'"):
        load_run(bad)


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["pattern"].update(kind="sparse"), "pattern.kind"),
    (lambda r: r["cost"].update(prune_second=1.0), "cost.prune_second"),
    (lambda r: r["metrics"].update({"ppl/wiki": "12"}), "metrics.ppl/wiki"),
    (lambda r: r["calibration"].pop("sha256"), "calibration.sha256"),
    (lambda r: r.update(created_at="yesterday"), "created_at"),
    (lambda r: r["model"].update(trained_here="no"), "model.trained_here"),
])
def test_bad_values_named(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    run = example_run()
    mutate(run)
    with pytest.raises(ValueError, match=rf"field '{field}'") as info:
        validate_run(run)
    assert "\n" not in str(info.value)


def test_optional_corpus_hash_and_decimal_slug() -> None:
    run = example_run(pattern="unstructured-50")
    run["calibration"]["corpus_sha256"] = "f" * 64
    run["pattern"]["slug"] = "unstructured-62.5"
    validate_run(run)


def test_nm_pattern_needs_n_and_m() -> None:
    run = example_run(pattern="2of4")
    run["pattern"]["m"] = None
    with pytest.raises(ValueError, match=r"field 'pattern\.m'"):
        validate_run(run)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_schema_version_rejected(tmp_path: Path, version: object) -> None:
    run = example_run()
    run["schema_version"] = version
    path = tmp_path / "r.json"
    path.write_text(json.dumps(run))
    with pytest.raises(ValueError, match=rf"{path}: field 'schema_version': unsupported schema_version"):
        load_run(path)


def test_non_finite_metric_stored_as_null(tmp_path: Path) -> None:
    run = example_run(ppl=float("inf"))
    write_run(tmp_path / "r.json", run)
    assert load_run(tmp_path / "r.json")["metrics"]["ppl/wiki"] is None
    assert run["metrics"]["ppl/wiki"] == float("inf")  # the caller's dict is not changed
    run["cost"]["prune_seconds"] = float("nan")
    with pytest.raises(ValueError, match=r"field 'cost\.prune_seconds': non-finite"):
        write_run(tmp_path / "r.json", run)


def test_atomic_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = run_path(tmp_path, "m", "magnitude", "2of4")
    good = example_run(model="m", pattern="2of4")
    write_run(path, good)
    before = path.read_bytes()

    broken = copy.deepcopy(good)
    broken["metrics_meta"]["ppl/wiki"]["tokenizer"] = object()  # valid per schema, not serialisable
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        write_run(path, broken)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["2of4.json"]

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    changed = example_run(model="m", pattern="2of4", ppl=99.0)
    with pytest.raises(OSError, match="disk full"):
        write_run(path, changed)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["2of4.json"]


def test_run_path_rejects_unsafe_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be used in a results path"):
        run_path(tmp_path, "m", "../evil", "dense")
    with pytest.raises(ValueError, match="cannot be used"):
        run_path(tmp_path, "m", "x", "")


def test_load_all_sorted_and_duplicates(tmp_path: Path) -> None:
    assert load_all(tmp_path) == []
    specs = [("b", "wanda", "2of4"), ("a", "magnitude", "unstructured-50"), ("a", "dense", "dense"),
             ("a", "magnitude", "2of4")]
    for model, method, pattern in specs:
        write_run(run_path(tmp_path, model, method, pattern), example_run(model, method, pattern))
    keys = [(r["model"]["key"], r["method"]["name"], r["pattern"]["slug"]) for r in load_all(tmp_path)]
    assert keys == sorted(specs)
    write_run(tmp_path / "runs" / "copy.json", example_run("b", "wanda", "2of4"))
    with pytest.raises(ValueError, match="duplicate run"):
        load_all(tmp_path)


def test_environment_and_git_info(tmp_path: Path) -> None:
    env = environment_info()
    assert env["device"] == "cpu" or env["device"].startswith("cuda")
    assert {"python", "torch", "transformers", "lm_eval", "platform", "cpu_count"} <= set(env)
    assert git_info(tmp_path) == {"git_commit": None, "git_dirty": True}  # not a repository
    run = example_run()
    run["environment"] = env
    run["code"] = git_info(Path(__file__).resolve().parent.parent)
    validate_run(run)


def test_write_bench_json_is_atomic_and_round_trips(tmp_path):
    from bench.results import write_bench_json

    path = write_bench_json({"b": 1, "a": [2.5]}, tmp_path / "x" / "default.json")
    assert json.loads(path.read_text()) == {"a": [2.5], "b": 1}
    assert path.parent.name == "x" and not list(path.parent.glob(".*.tmp"))
    other = write_bench_json({"c": 3}, tmp_path / "unused.json", tmp_path / "o.json")
    assert other == tmp_path / "o.json" and not (tmp_path / "unused.json").exists()
