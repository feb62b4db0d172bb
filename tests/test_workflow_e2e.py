"""End to end: `snakemake` on config/smoke.yaml plans, runs, validates and builds the site."""
from __future__ import annotations

import json

import subprocess
import sys
from pathlib import Path

import pytest

from bench.config import load_config, plan
from bench.packages import REPO_ROOT
from bench.results import load_run
from methods.base import parse_pattern

SMOKE = REPO_ROOT / "config" / "smoke.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
             "--configfile", str(SMOKE), "--cores", "2"]


def _snakemake(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *extra], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_smoke_grid_end_to_end(tmp_path: Path) -> None:
    dry = _snakemake(tmp_path, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    res = _snakemake(tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    cfg = load_config(SMOKE)
    runs, _ = plan(cfg)
    # 3 tiny models x (dense + 4 layer-wise methods x 2 patterns + 3 structured methods x 1)
    assert len(runs) == 36
    html = (tmp_path / cfg["site_dir"] / "index.html").read_text()
    for run in runs:
        data = load_run(tmp_path / cfg["results_dir"] / "runs" / run.model / run.method
                        / f"{run.pattern}.json")
        pattern = parse_pattern(run.pattern)
        if pattern.kind == "structured":        # whole units: within 2 points, smaller, timed
            assert abs(data["sparsity"]["achieved"] - pattern.sparsity) <= 0.02
            assert data["structure"]["params"] < data["structure"]["dense_params"]
            assert data["speed"]["prefill_speedup"] > 0 and data["speed"]["decode_speedup"] > 0
        else:
            assert abs(data["sparsity"]["achieved"] - pattern.sparsity) < 0.01
        assert data["metrics"]["ppl/wiki"] > 1
        assert 0 <= data["metrics"]["zeroshot/average/acc"] <= 1     # rule zeroshot, merged
        assert data["metrics_meta"]["zeroshot"]["tasks"]["arc_easy"]["n"] == 4
        assert f"{data['metrics']['ppl/wiki']:.2f}" in html or f"{data['metrics']['ppl/wiki']:,.2f}" in html
    # rule speed: one 2:4 record per model; on a CPU machine the plan and "no GPU", shown on the site
    from bench.speed import gpu_unavailable_reason

    for model in cfg["models"]:
        rec = json.loads((tmp_path / cfg["results_dir"] / "speed" / f"{model}.json").read_text())
        assert rec["status"] == ("measured" if gpu_unavailable_reason() is None else "no GPU")
        assert rec["planned_cells"] + len(rec["unsupported"]) > 0
    if gpu_unavailable_reason() is not None:
        assert '<a href="speed/tiny-llama.json">no GPU</a>' in html
    # temp checkpoints are gone; a second run has nothing to do
    assert not any((tmp_path / "work" / "pruned").rglob("*.safetensors"))
    again = _snakemake(tmp_path)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
