"""The command line: list, prune -> loadable checkpoint, evaluate -> run JSON, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import transformers

from bench.__main__ import main
from bench.packages import REPO_ROOT
from bench.results import load_run

SMOKE = str(REPO_ROOT / "config" / "smoke.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)


def test_list_shows_models_methods_patterns(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("smollm2-135m", "opt-tiny", "sparsegpt", "wanda", "magnitude", "2of4",
                 "unstructured-P", "patterns=nm,unstructured"):
        assert word in out


@pytest.mark.parametrize("args,msg", [
    (["--model", "tiny-lama", "--method", "wanda", "--pattern", "2of4"], "did you mean 'tiny-llama'"),
    (["--model", "tiny-llama", "--method", "sparsegtp", "--pattern", "2of4"], "did you mean 'sparsegpt'"),
    (["--model", "tiny-llama", "--method", "wanda", "--pattern", "2of5x"], "unknown pattern"),
    (["--model", "tiny-llama", "--method", "wanda", "--pattern", "structured-20"], "cannot do pattern"),
    (["--model", "tiny-llama", "--method", "magnitude", "--pattern", "3of7"], "M=7 does not divide"),
    (["--model", "tiny-llama", "--method", "wanda", "--pattern", "unstructured-120"], "sparsity must be in"),
])
def test_prune_bad_input_one_line(tmp_path, capsys: pytest.CaptureFixture, args, msg) -> None:
    out = tmp_path / "ckpt"
    assert main(["prune", *args, "--out", str(out), "--config", SMOKE, "--quiet"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]     # progress bars may precede it
    assert msg in last and last.startswith("error:")
    assert not out.exists() and not (tmp_path / "ckpt.tmp").exists()


def test_evaluate_missing_or_corrupt_checkpoint(tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--config", SMOKE]) == 2
    assert "no prune.json" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "prune.json").write_text("{not json")
    assert main(["evaluate", "--checkpoint", str(bad), "--config", SMOKE]) == 2
    assert "corrupt" in capsys.readouterr().err


@pytest.mark.slow
def test_prune_then_evaluate_end_to_end(tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    res = _cli("prune", "--model", "tiny-llama", "--method", "wanda", "--pattern", "2of4",
               "--out", str(ckpt), "--config", SMOKE, "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((ckpt / "prune.json").read_text())
    assert info["method"]["name"] == "wanda" and info["calibration"]["n_samples"] == 8
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt)   # plain transformers
    w = model.model.layers[0].mlp.down_proj.weight
    assert ((w != 0).reshape(w.shape[0], -1, 4).sum(-1) <= 2).all()
    out = tmp_path / "run.json"
    res = _cli("evaluate", "--checkpoint", str(ckpt), "--out", str(out), "--config", SMOKE, "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    run = load_run(out)
    assert run["sparsity"]["achieved"] == pytest.approx(0.5)
    assert run["metrics"]["ppl/wiki"] > 1 and torch.isfinite(torch.tensor(run["metrics"]["ppl/wiki"]))
    # tiny-llama borrows opt-tiny's tokenizer, which prepends </s>: the BOS rule applies it
    assert run["metrics_meta"]["ppl/wiki"]["bos"] is True
    assert run["calibration"]["sha256"] == info["calibration"]["sha256"]


@pytest.mark.parametrize("method", ["llm_pruner", "darwinlm"])
def test_structured_prune_then_evaluate(tmp_path, method: str) -> None:
    """A structured run: a smaller checkpoint that plain from_pretrained reloads (after
    register(); identical logits: tests/structure/test_structure.py), and a run JSON with structure,
    speed and the method's report."""
    from bench.pipeline import evaluate, prune
    from bench.structure.slim_models import register

    ckpt = tmp_path / "ckpt"
    info = prune("tiny-llama", method, "structured-20", ckpt, SMOKE, progress=False)
    register()
    model = transformers.AutoModelForCausalLM.from_pretrained(ckpt)
    assert model.config.model_type == "prunebench_llama"
    pruned = info["structure"]["pruned"]
    assert model.config.layer_units == pruned["layer_units"]
    assert sum(p.numel() for p in model.parameters()) == pruned["total_params"] \
        < info["structure"]["dense"]["total_params"]
    path, run = evaluate(ckpt, tmp_path / "run.json", SMOKE, progress=False)
    again = load_run(path)
    assert abs(again["sparsity"]["achieved"] - 0.2) <= 0.02
    assert again["structure"]["layer_units"] == pruned["layer_units"]
    assert again["speed"]["kind"] == "structured_latency" and again["speed"]["decode_speedup"] > 0
    assert again["method_report"] == info["cost"]["engine"]
