"""Config validation and the planner."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from bench.config import DEFAULT_CONFIG, load_config, plan
from bench.packages import REPO_ROOT
from bench.zoo import LICENSE_ENV, load_zoo
from methods.base import PruneBenchError


def _raw(name: str = "config.yaml") -> dict:
    return yaml.safe_load((REPO_ROOT / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(REPO_ROOT / "config" / name)
    runs, _ = plan(cfg)
    assert runs


# dense + 6 layer-wise methods x 4 patterns + 3 unstructured-only variants (wanda_owl,
# sparsegpt_owl, wanda_dsnot) x 2 + 1 N:M-only (ria_cp) x 2 + 4 structured methods x 2
CELLS = 1 + 6 * 4 + 3 * 2 + 1 * 2 + 4 * 2
CROSS = 6 * 2 + 3 * 4 + 1 * 4 + 4 * 4  # the cross combinations, dropped by design


def test_default_grid_plan(monkeypatch) -> None:
    monkeypatch.setenv(LICENSE_ENV, "gemma")
    runs, dropped = plan(load_config(DEFAULT_CONFIG))
    ids = {r.id for r in runs}
    assert len(runs) == 4 * CELLS and len(dropped) == 4 * CROSS
    assert "gemma3-270m/apt/2of4" in ids and "gemma3-270m/darwinlm/structured-20" in ids
    assert "smollm2-135m/dense/dense" in ids and "opt-tiny/sparsegpt/4of8" in ids
    assert "mamba-tiny/apt/2of4" in ids and "mamba-tiny/darwinlm/structured-50" in ids
    assert "opt-tiny/llm_pruner_lora/structured-20" in ids and "smollm2-135m/random/2of4" in ids


def test_default_grid_without_accepted_terms_drops_gemma(monkeypatch) -> None:
    """Gemma's terms are not an open-source license: without PRUNEBENCH_ACCEPT_LICENSES=gemma
    every gemma3-270m cell is dropped with that reason and the other models plan as before."""
    monkeypatch.delenv(LICENSE_ENV, raising=False)
    runs, dropped = plan(load_config(DEFAULT_CONFIG))
    assert len(runs) == 3 * CELLS and not any(r.model == "gemma3-270m" for r in runs)
    gated = [why for r, why in dropped if r.model == "gemma3-270m"]
    assert len(gated) == 1 + 14 * 6 and all(LICENSE_ENV + "=gemma" in why for why in gated)
    assert len(dropped) - len(gated) == 3 * CROSS


@pytest.mark.parametrize("mutate,msg", [
    (lambda c: c.pop("models"), "'models' is a required property"),
    (lambda c: c.update(models=["smollm2-135"]), "did you mean 'smollm2-135m'"),
    (lambda c: c["methods"].update(wandda={}), "did you mean 'wanda'"),
    (lambda c: c["methods"].update(sparsegpt={"blocksz": 3}), "unknown hyperparameter"),
    (lambda c: c.update(patterns=["2of4", "unstructured-0"]), "sparsity must be in"),
    (lambda c: c["calibration"].update(n_samples=0), "calibration/n_samples"),
    (lambda c: c.update(extra_key=1), "Additional properties"),
    (lambda c: c["calibration"].update(corpus="wiki"), "must differ"),
])
def test_bad_configs_rejected(mutate, msg: str) -> None:
    raw = copy.deepcopy(_raw())
    mutate(raw)
    with pytest.raises(ValueError, match=msg):   # PruneBenchError is a ValueError
        load_config(raw)


STRUCTURED = {"llm_pruner", "llm_pruner_lora", "darwinlm", "shortgpt"}
UNSTRUCTURED_ONLY = {"wanda_owl", "sparsegpt_owl", "wanda_dsnot"}


def test_planner_drops_unsupported_with_reason(monkeypatch) -> None:
    monkeypatch.delenv(LICENSE_ENV, raising=False)
    raw = copy.deepcopy(_raw())
    raw["models"] = [m for m in raw["models"] if m != "gemma3-270m"]     # gated: test above
    # a method line with no run is a config error: the unstructured-only variants leave
    raw["methods"] = {k: v for k, v in raw["methods"].items() if k not in UNSTRUCTURED_ONLY}
    raw["patterns"] = ["2of4", "structured-20"]
    runs, dropped = plan(load_config(raw))
    assert all((r.pattern == "structured-20") == (r.method in STRUCTURED) for r in runs
               if r.method != "dense")
    assert dropped and all("cannot do pattern" in why for _, why in dropped)
    assert len(dropped) == 3 * (7 + 4)    # 3 x (7 layer-wise x structured, 4 structured x 2of4)


def test_trained_models_regenerate_from_their_recipe() -> None:
    from bench.workflow import prepare_inputs, train_recipe

    zoo = str(REPO_ROOT / "config" / "models.yaml")
    assert prepare_inputs("opt-tiny", zoo) == [str(REPO_ROOT / "zoo/opt-tiny/model.safetensors")]
    assert prepare_inputs("smollm2-135m", zoo) == []
    assert "--arch opt" in train_recipe("zoo/opt-tiny", zoo)
    assert "--arch mamba" in train_recipe("zoo/mamba-tiny", zoo)
    from bench.zoo import get_spec

    with pytest.raises(ValueError, match="recipe"):
        get_spec("x", {"x": {"arch": "opt", "description": "d", "recipe": "--arch opt",
                             "source": {"kind": "hub", "id": "a/b"}}})


def test_cluster_resources_scale_with_model_size() -> None:
    from bench.workflow import job_resources

    cpu = load_config(DEFAULT_CONFIG)
    paper = load_config(REPO_ROOT / "config" / "paper.yaml")
    small = job_resources("prune", "opt-125m", paper, "sparsegpt")
    big = job_resources("prune", "llama-2-7b", paper, "sparsegpt")
    assert small["gpu"] == big["gpu"] == 1                       # paper config runs on CUDA
    assert big["mem_mb"] > small["mem_mb"] and big["runtime"] > small["runtime"]
    assert big["mem_mb"] == int(4096 + 6144 * 6.7)
    model_level = job_resources("prune", "llama-2-7b", paper, "darwinlm")
    assert model_level["mem_mb"] > big["mem_mb"] and model_level["runtime"] > big["runtime"]
    assert job_resources("prepare", "llama-2-7b", paper)["gpu"] == 0    # downloads need no GPU
    assert job_resources("prune", "smollm2-135m", cpu, "wanda")["gpu"] == 0   # a CPU grid never waits


def test_zoo_params_b_is_validated(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("m:\n  arch: opt\n  params_b: -1\n  description: x\n  source: {kind: hub, id: a/b}\n")
    with pytest.raises(ValueError, match="params_b must be a positive number"):
        load_zoo(zoo)


def test_paper_grid_plans_every_model() -> None:
    cfg = load_config(REPO_ROOT / "config" / "paper.yaml")
    runs, _ = plan(cfg)
    assert {r.model for r in runs} == set(cfg["models"]) and len(cfg["models"]) == 10
    assert cfg["evaluation"]["zeroshot"]["limit"] is None          # full evaluation sets
    assert (cfg["calibration"]["n_samples"], cfg["calibration"]["seqlen"]) == (128, 2048)


def test_prune_waits_for_caches_only_for_runs_not_yet_done(tmp_path: Path) -> None:
    """A finished run lists no cache inputs: rebuilding a cache for a new method (in a fresh
    clone) must not make Snakemake redo committed runs (the e2e test checks the plan)."""
    from bench.workflow import prune_inputs

    result = tmp_path / "wanda" / "2of4.json"
    assert prune_inputs("smollm2-135m", "wanda", str(result)) == [
        "work/prepared/smollm2-135m.json", "work/calib/smollm2-135m.safetensors"]
    assert prune_inputs("smollm2-135m", "magnitude", str(result)) == ["work/prepared/smollm2-135m.json"]
    assert "work/darwinlm/opt-tiny.safetensors" in prune_inputs("opt-tiny", "darwinlm", str(result))
    result.parent.mkdir(parents=True)
    result.write_text("{}")
    assert prune_inputs("smollm2-135m", "wanda", str(result)) == []


def test_seed_runs_expand_and_are_checked() -> None:
    from bench.config import seed_runs, with_seed

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg = load_config(raw)
    runs, _ = plan(cfg)
    seeds = seed_runs(cfg, runs)
    # 3 layer-wise methods x 2 patterns + 2 structured methods x 1 pattern, seeds 1 and 2
    assert len(seeds) == (3 * 2 + 2) * 2
    assert {s.seed for s in seeds} == {1, 2}
    assert seeds[0].stem.startswith("seeds/smollm2-135m/")
    seeded = with_seed(cfg, 2)
    assert seeded["calibration"]["seed"] == 2 and cfg["calibration"]["seed"] == 0
    assert seeded["name"] != cfg["name"]
    bad = dict(raw, seeds=[{"models": ["smollm2-135m"], "methods": ["wanda"],
                            "patterns": ["2of4"], "seeds": [0]}])
    with pytest.raises(PruneBenchError, match="repeats the grid's calibration seed 0"):
        seed_runs(load_config(bad), runs)
    bad = dict(raw, seeds=[{"models": ["smollm2-135m"], "methods": ["wanda"],
                            "patterns": ["structured-20"], "seeds": [1]}])
    with pytest.raises(PruneBenchError, match="wanda/structured-20 is not a run of this grid"):
        seed_runs(load_config(bad), runs)


def test_engine_sequential_is_a_method_property_now() -> None:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["engine"] = {**raw["engine"], "sequential": True}
    with pytest.raises(PruneBenchError, match="engine.sequential is gone.*sparsegpt_seq"):
        load_config(raw)
