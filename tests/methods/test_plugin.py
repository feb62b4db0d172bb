"""A method from another package: the example plugin of tests/plugins registers `row_magnitude`
through the `prunebench.methods` entry point; a broken plugin is named and skipped over."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.packages import REPO_ROOT

SMOKE = REPO_ROOT / "config" / "smoke.yaml"


def _bench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_plugin_listed_and_broken_one_named(plugin_env: dict[str, str]) -> None:
    res = _bench(plugin_env, "list")
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.strip().startswith("row_magnitude"))
    assert "layerwise" in line and "prunebench-example-plugin 0.1.0" in line
    assert "wanda" in res.stdout and "sparsegpt" in res.stdout        # the others are untouched
    broken = next(x for x in res.stdout.splitlines() if x.strip().startswith("broken_method"))
    assert "FAILED TO LOAD" in broken and "prunebench_missing_dependency" in broken
    bad = _bench(plugin_env, "prune", "--model", "tiny-llama", "--method", "broken_method",
                 "--pattern", "unstructured-50", "--out", "/nonexistent/x", "--config", str(SMOKE))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith(
        "error: method plugin 'broken_method' failed to load: ModuleNotFoundError")


def test_plugin_without_install_is_unknown() -> None:
    res = _bench({**__import__("os").environ}, "plan", "--config", str(SMOKE))
    assert res.returncode == 0 and "row_magnitude" not in res.stdout


@pytest.mark.slow
def test_plugin_prunes_through_the_cli(plugin_env: dict[str, str], tmp_path: Path) -> None:
    ckpt, out = tmp_path / "ckpt", tmp_path / "run.json"
    res = _bench(plugin_env, "prune", "--model", "tiny-opt", "--method", "row_magnitude",
                 "--pattern", "unstructured-50", "--out", str(ckpt), "--config", str(SMOKE), "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    res = _bench(plugin_env, "evaluate", "--checkpoint", str(ckpt), "--out", str(out),
                 "--config", str(SMOKE), "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    run = json.loads(out.read_text())
    assert run["method"]["name"] == "row_magnitude"
    assert run["method"]["origin"] == "prunebench-example-plugin 0.1.0"
    assert abs(run["sparsity"]["achieved"] - 0.5) < 0.01
    # every row of every pruned layer lost the same number of weights (the per-row group)
    from safetensors.torch import load_file

    weights = {k: v for f in ckpt.glob("*.safetensors") for k, v in load_file(f).items()}
    fc1 = next(v for k, v in weights.items() if k.endswith("layers.0.fc1.weight"))   # [out, in]
    zeros = (fc1 == 0).sum(1)
    assert (zeros == fc1.shape[1] // 2).all()
