"""Nothing silently wrong: every cached or recorded input is verified against what it claims,
inputs that cannot work are refused at config or plan time, non-finite numbers are blamed on
their origin, and every error that reaches the CLI is one line (exit code 2)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from bench import data
from bench.evaluation import checkpoint
from bench.config import load_config, plan
from bench.packages import REPO_ROOT
from methods.base import PruneBenchError, parse_pattern
from tests.safety_helpers import (SMOKE, forbid_model_load, no_model_load, prune_args, run_main,
                                  snapshot)

__all__ = ["no_model_load"]          # the fixture, imported for its tests


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wanda 2:4 checkpoint of tiny-llama (copied by the tests that tamper with it)."""
    from bench.pipeline import prune

    out = tmp_path_factory.mktemp("ckpt") / "wanda-2of4"
    prune("tiny-llama", "wanda", "2of4", out, SMOKE, progress=False)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit(ckpt: Path, change, reseal: bool = False) -> None:
    path = ckpt / "prune.json"
    record = json.loads(path.read_text())
    change(record)
    if reseal:
        record["seal"] = checkpoint.sha256_bytes(checkpoint._canonical(record))
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("tamper,reseal,msg", [
    (lambda r: r["model"].update(key="tiny-opt"), False, "was changed after pruning"),
    (lambda r: r["method"].update(name="sparsegpt"), False, "was changed after pruning"),
    (lambda r: (r["model"].update(arch="opt"), r["checkpoint"]["identity"].update(arch="opt")),
     True, "holds a llama model, but its prune.json says opt"),
    (lambda r: r["model"].update(key="smollm2-135m"), True, "is not a pruned 'smollm2-135m'"),
    (lambda r: r["model"].update(key="no-such-model"), True, "not in the zoo"),
    (lambda r: r["method"].update(kind="model"), True, "the registered one is 'layerwise'"),
    (lambda r: r.pop("seal"), False, "no seal"),
])
def test_evaluate_checks_prune_json_against_the_checkpoint(pruned, tmp_path, capsys, monkeypatch,
                                                           tamper, reseal, msg) -> None:
    ckpt = _copy(pruned, tmp_path / "ckpt")
    _edit(ckpt, tamper, reseal)
    loads = forbid_model_load(monkeypatch)
    before = snapshot(tmp_path)
    code, line, _ = run_main(["evaluate", "--checkpoint", str(ckpt), "--out",
                              str(tmp_path / "run.json"), "--config", SMOKE], capsys)
    assert code == 2 and msg in line, line
    assert snapshot(tmp_path) == before and not loads


def test_a_swapped_weight_file_is_found(pruned, tmp_path, capsys, monkeypatch) -> None:
    from bench.pipeline import prune

    other = tmp_path / "magnitude"
    prune("tiny-llama", "magnitude", "2of4", other, SMOKE, progress=False)
    ckpt = _copy(pruned, tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    loads = forbid_model_load(monkeypatch)
    for cmd in ("evaluate", "zeroshot"):
        code, line, _ = run_main([cmd, "--checkpoint", str(ckpt), "--out",
                                  str(tmp_path / f"{cmd}.json"), "--config", SMOKE], capsys)
        assert code == 2 and "model.safetensors is not the file that was pruned" in line
    assert not loads and not (tmp_path / "evaluate.json").exists()


def test_a_zeroshot_file_of_another_run_is_refused_before_perplexity(pruned, tmp_path, capsys,
                                                                      monkeypatch) -> None:
    record = {"run": {"model": "tiny-llama", "method": "wanda", "pattern": "2of4",
                      "created_at": "2026-01-01T00:00:00+00:00", "seal": "x"},
              "config": {}, "metrics": {"zeroshot/arc_easy/acc": 0.5}, "meta": {}}
    zs = tmp_path / "zs.json"
    zs.write_text(json.dumps(record))
    loads = forbid_model_load(monkeypatch)
    args = ["evaluate", "--checkpoint", str(pruned), "--out", str(tmp_path / "run.json"),
            "--config", SMOKE, "--zeroshot"]
    code, line, _ = run_main([*args, str(zs)], capsys)
    assert code == 2 and "--zeroshot" in line and "another checkpoint" in line
    zs.write_text("[1, 2]")
    code, line, _ = run_main([*args, str(zs)], capsys)
    assert code == 2 and "is not a zero-shot record" in line
    code, line, _ = run_main([*args, str(tmp_path / "missing.json")], capsys)
    assert code == 2 and "--zeroshot: file not found" in line
    assert not loads and not (tmp_path / "run.json").exists()


def _calib_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from bench.data import calibration

    monkeypatch.setattr(calibration, "calib_path", lambda key: tmp_path / f"{key}.safetensors")
    return tmp_path / "tiny-llama.safetensors"


def test_a_calibration_cache_that_no_longer_matches_its_sha256_is_resampled(
        tmp_path, monkeypatch, caplog) -> None:
    """Before: the tampered ids were used and the run recorded another hash than the protocol's.
    Now the default cache is sampled again (with a warning), an explicit --calib is refused."""
    from bench.data import calibration

    cfg = load_config(SMOKE)
    cache = _calib_cache(tmp_path, monkeypatch)
    good, meta = calibration.load_calibration_for("tiny-llama", cfg, None)
    tampered = good.clone()
    tampered[0, :5] = 7
    data.save_calibration(cache, tampered, meta)                   # the old sha256 beside them
    with caplog.at_level("WARNING"):
        ids, meta2 = calibration.load_calibration_for("tiny-llama", cfg, None)
    assert torch.equal(ids, good) and meta2["sha256"] == data.token_ids_sha256(good)
    assert "do not match the sha256 recorded beside them" in caplog.text
    explicit = tmp_path / "mine.safetensors"
    data.save_calibration(explicit, tampered, meta)
    with pytest.raises(PruneBenchError, match="do not match the sha256"):
        calibration.load_calibration_for("tiny-llama", cfg, explicit)
    beyond = good.clone()
    beyond[0, 0] = 10 ** 6
    data.save_calibration(explicit, beyond, dict(meta, sha256=data.token_ids_sha256(beyond)))
    with pytest.raises(PruneBenchError, match="outside the tokenizer's vocabulary"):
        calibration.load_calibration_for("tiny-llama", cfg, explicit)


def test_an_unreadable_calibration_cache_is_never_replaced(tmp_path, monkeypatch) -> None:
    from bench.data import calibration

    cache = _calib_cache(tmp_path, monkeypatch)
    cache.write_bytes(b"not a safetensors file")
    with pytest.raises(PruneBenchError, match="delete it to sample again"):
        calibration.load_calibration_for("tiny-llama", load_config(SMOKE), None)
    assert cache.read_bytes() == b"not a safetensors file"


def test_a_missing_calib_is_found_before_the_model_is_loaded(tmp_path, capsys, no_model_load) -> None:
    code, line, _ = run_main(prune_args(tmp_path / "ckpt", "--calib", str(tmp_path / "nope")), capsys)
    assert code == 2 and f"--calib: calibration file not found: {tmp_path / 'nope'}" in line
    assert list(tmp_path.iterdir()) == [] and not no_model_load


def _config(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(Path(SMOKE).read_text())
    change(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("change,msg", [
    (lambda r: r["calibration"].update(seqlen=600),
     "calibration.seqlen = 600 exceeds the 512 positions of model 'tiny-llama'"),
    (lambda r: r["evaluation"]["ppl"].update(seqlen=1024), "evaluation.ppl.seqlen = 1024 exceeds"),
    (lambda r: r["methods"]["llm_pruner"].update(seqlen=4096),
     "methods.llm_pruner.seqlen = 4096 exceeds"),
    (lambda r: r["evaluation"]["ppl"].update(corpus="wikitext"), "is not one of ['wiki', 'calib'"),
    (lambda r: r.update(results_dir="work/{model}/results"), "the workflow cannot use this path"),
    (lambda r: r.update(site_dir="work/site\nx"), "the workflow cannot use this path"),
    (lambda r: r["patterns"].append("unstructured-50.0"), "not spelled canonically"),
    (lambda r: r["methods"]["sparsegpt"].update(max_damp_retries=-2), "max_damp_retries must be >= 0"),
])
def test_inputs_that_cannot_work_are_refused_at_plan_time(tmp_path, capsys, no_model_load,
                                                          change, msg) -> None:
    config = _config(tmp_path, change)
    code, line, seconds = run_main(["plan", "--config", str(config)], capsys, limit_s=30)
    assert code == 2 and msg in line, line
    method, pattern = ("llm_pruner", "structured-20") if "llm_pruner" in msg else ("wanda", "2of4")
    argv = prune_args(tmp_path / "ckpt", method=method, pattern=pattern)
    argv[argv.index(SMOKE)] = str(config)
    code, line, _ = run_main(argv, capsys)
    assert code == 2 and msg in line and not (tmp_path / "ckpt").exists() and not no_model_load


def test_an_nm_pattern_that_does_not_divide_a_width_is_dropped_with_its_reason(tmp_path) -> None:
    raw = yaml.safe_load(Path(SMOKE).read_text())
    raw["patterns"] = ["2of4", "3of48", "structured-20"]  # 48 divides no width of the tiny models
    runs, dropped = plan(load_config(raw))
    assert not any(r.pattern == "3of48" for r in runs) and any(r.pattern == "2of4" for r in runs)
    why = {r.id: w for r, w in dropped}
    assert "M=48 does not divide the input width" in why["tiny-llama/wanda/3of48"]


def test_every_shell_argument_of_the_rules_is_quoted() -> None:
    n = 0
    for path in sorted((REPO_ROOT / "rules").glob("*.smk")):
        for shell in re.findall(r"shell:\n((?:\s+\".*\"\n)+)", path.read_text()):
            fields = re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", shell)
            assert fields and all(f.endswith(":q") for f in fields), (path.name, fields)
            n += 1
    assert n == 13                    # every rule with a shell command


def test_the_local_profile_reruns_incomplete_jobs_and_the_readme_says_how_to_go_on() -> None:
    profile = yaml.safe_load((REPO_ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert profile["rerun-incomplete"] is True
    readme = (REPO_ROOT / "README.md").read_text()
    assert "## After a killed grid" in readme and "--unlock" in readme and "--rerun-incomplete" in readme


def test_nan_weights_in_the_input_model_are_blamed_on_it(tmp_path, capsys, monkeypatch) -> None:
    from bench.zoo import models

    real = models.load_model

    def poisoned(*args, **kwargs):
        model, tok = real(*args, **kwargs)
        model.model.layers[1].mlp.up_proj.weight.data[3, 5] = float("nan")
        return model, tok

    monkeypatch.setattr(models, "load_model", poisoned)
    code, line, _ = run_main(prune_args(tmp_path / "ckpt"), capsys)
    assert code == 2 and "the input model 'tiny-llama' has NaN/Inf weights in " \
                         "model.layers.1.mlp.up_proj.weight" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "apt"])
def test_non_finite_statistics_are_blamed_where_they_start(method: str) -> None:
    """Activations that overflow inside block 0 (a huge norm weight) make every statistic
    non-finite: each method stops at the first layer that sees them, naming it; Wanda no longer
    prunes a whole model from NaN statistics."""
    from bench.adapters import adapter_for
    from bench.engine import prune_layerwise
    from methods import registry
    from tests.conftest import tiny_model

    model = tiny_model("llama")
    model.model.layers[0].input_layernorm.weight.data.fill_(3e38)
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    with pytest.raises(PruneBenchError, match=rf"method '{method}' \(methods/{method}.py\): the "
                       r"calibration activations entering model\.layers\.0\.self_attn\.q_proj "
                       r"hold NaN/Inf"):
        prune_layerwise(model, adapter_for(model), registry.create(method, {}),
                        parse_pattern("2of4"), ids, batch_size=2, progress=False)


@pytest.mark.parametrize("params,msg", [
    ('{"max_damp_retries": -1}', "max_damp_retries must be >= 0"),
    ('{"percdamp": 1e999}', "'percdamp' must be a finite number"),
    ('{"percdamp": NaN}', "'percdamp' must be a finite number"),
    ('{"blocksize": true}', "'blocksize' must be an integer"),
    ('{"blocksize": 1.5}', "'blocksize' must be an integer"),
    ('[1, 2]', "--params must be a JSON object"),
    ('{"blocksize": ', "--params is not valid JSON"),
    ('"x"', "--params must be a JSON object"),
])
def test_hyperparameters_are_validated_completely(tmp_path, capsys, no_model_load, params, msg) -> None:
    code, line, _ = run_main(prune_args(tmp_path / "ckpt", "--params", params, method="sparsegpt"),
                             capsys)
    assert code == 2 and msg in line, line
    assert not no_model_load and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("params,msg", [
    ({"survivors": [4, 2, "1"]}, "must be a list of int"),
    ({"survivors": [2, 4, 1]}, "non-increasing"),
    ({"train_lr": float("inf")}, "must be a finite number"),
    ({"generations": -1}, "generations >= 0"),
])
def test_list_and_range_hyperparameters_of_darwinlm(params, msg) -> None:
    from methods import registry

    with pytest.raises(PruneBenchError, match=msg):
        registry.create("darwinlm", params)


@pytest.mark.parametrize("slug,msg", [
    ("unstructured-50.000", "write 'unstructured-50'"),
    ("unstructured-050", "write 'unstructured-50'"),
    ("02of4", "write '2of4'"),
    ("structured-20.0", "write 'structured-20'"),
    ("unstructured-\u0665\u0660", "unknown pattern"),       # Arabic-Indic digits: ASCII only
    ("2of\u0664", "unknown pattern"),
])
def test_pattern_slugs_have_one_ascii_spelling(tmp_path, capsys, no_model_load, slug, msg) -> None:
    with pytest.raises(PruneBenchError, match=re.escape(msg)):
        parse_pattern(slug)
    code, line, _ = run_main(prune_args(tmp_path / "ckpt", pattern=slug), capsys)
    assert code == 2 and msg in line and not no_model_load
    assert parse_pattern("unstructured-12.5").sparsity == 0.125


def test_a_plugin_error_names_the_method_its_origin_and_the_layer(plugin_env, tmp_path) -> None:
    """An error inside an installed plugin's method reaches the CLI as one line that names the
    method, the distribution it came from and the layer it was pruning."""
    from tests.safety_helpers import cli

    res = cli(*prune_args(tmp_path / "ckpt", method="faulty_method"), env=plugin_env)
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip().splitlines()[-1]
    assert re.search(r"^error: method 'faulty_method' \(prunebench-broken-plugin [0-9.]+\) on "
                     r"layer model\.layers\.0\.mlp\.down_proj failed: IndexError: list index "
                     r"out of range$", line), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device", "/x/y"),
                                 IndexError("list index out of range"),
                                 TypeError("unsupported operand"), PermissionError(13, "Permission denied")])
def test_os_index_and_type_errors_are_one_line_and_debug_shows_the_traceback(
        capsys, monkeypatch, exc) -> None:
    from bench.board import leaderboard
    from bench.__main__ import main

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(leaderboard, "build_site", fail)
    code, line, _ = run_main(["leaderboard"], capsys)
    assert code == 2 and line.startswith("error: ") and str(exc.args[-1]) in line
    with pytest.raises(type(exc)):
        main(["leaderboard", "--debug"])


def test_a_safetensors_error_is_one_line(pruned, tmp_path, capsys, monkeypatch) -> None:
    from safetensors import SafetensorError

    from bench.zoo import models

    def broken(*args, **kwargs):
        raise SafetensorError("Error while deserializing header: HeaderTooLarge")

    monkeypatch.setattr(models, "load_model", broken)
    code, line, _ = run_main(["evaluate", "--checkpoint", str(pruned), "--out",
                              str(tmp_path / "run.json"), "--config", SMOKE], capsys)
    assert code == 2 and line.endswith("HeaderTooLarge") and list(tmp_path.iterdir()) == []


def test_model_level_methods_refuse_non_finite_statistics() -> None:
    """LLM-Pruner's gradient importance and DarwinLM's level-database Hessians: NaN would sort
    anywhere and pick units at random; both stop, naming where the statistic went non-finite."""
    from methods import level_db
    from bench.adapters import adapter_for
    from methods.llm_pruner import gradient_importance
    from tests.conftest import tiny_model

    model = tiny_model("llama")
    model.model.layers[0].input_layernorm.weight.data.fill_(3e38)
    adapter = adapter_for(model)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    with pytest.raises(PruneBenchError, match="llm_pruner: non-finite taylor importance"):
        gradient_importance(model, adapter, ids, "taylor", "sum", progress=False)
    with pytest.raises(PruneBenchError, match="non-finite Hessian of layer 0"):
        level_db._hessians(model, adapter, ids, 2, False)
