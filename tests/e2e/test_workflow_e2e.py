"""End to end: `snakemake` on config/smoke.yaml plans, runs, validates and builds the site.

Then, as a fresh clone of those results (no caches, no Snakemake records), an outside method
joins the grid with one config line: the example plugin of tests/plugins (installed into a
temporary folder, registered through the `prunebench.methods` entry point). Only its runs are
planned and run; they appear on the site; a third invocation has nothing to do."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config import Run, load_config, plan
from bench.packages import REPO_ROOT
from bench.results import load_run
from methods.base import parse_pattern

SMOKE = REPO_ROOT / "config" / "smoke.yaml"
PLUGIN_LINE = "  row_magnitude: {}          # an outside package's method: one line\n"


def _snakemake(workdir: Path, config: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
           "--configfile", str(config), "--cores", "2", "--directory", str(workdir), *extra]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=2400)


@pytest.mark.slow
def test_smoke_grid_end_to_end(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    dry = _snakemake(tmp_path, SMOKE, plugin_env, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    res = _snakemake(tmp_path, SMOKE, plugin_env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    # under --directory, the jobs' own caches (texts, unpacked packages) are this folder's
    # work/, where the rules put theirs; only the immutable wheel downloads are shared
    work = tmp_path / "work"
    assert list((work / "corpora").glob("*.txt")) and (work / "pkgs").is_dir()
    assert not (work / "wheels").exists()
    # as a fresh clone of committed results (no caches, no Snakemake records) that adds one
    # method line: only the new method's runs are planned, not the 36 committed ones again
    for cache in (tmp_path / "work").iterdir():        # the caches Snakemake tracks here
        if cache.name != "smoke":                       # work/smoke holds results/ and site/
            shutil.rmtree(cache)
    shutil.rmtree(tmp_path / ".snakemake")
    config = tmp_path / "smoke-plugin.yaml"
    config.write_text(SMOKE.read_text().replace("methods:\n", "methods:\n" + PLUGIN_LINE, 1))
    dry = _snakemake(tmp_path, config, plugin_env, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, re.M))
    counts.pop("total", None)
    # the seed runs' calibration draws are gone too, and still nothing of theirs is redone
    # (prepare and calib serve the new method's runs; its card is the only one missing)
    assert {k: v for k, v in counts.items()
            if k not in ("site", "all", "speed", "prepare", "calib")} == {
        "prune": "6", "zeroshot": "6", "evaluate": "6", "method_card": "1"}, dry.stdout[-3000:]
    res = _snakemake(tmp_path, config, plugin_env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    cfg = load_config(SMOKE)
    runs, _ = plan(cfg)
    # 3 tiny models x (dense + 4 layer-wise methods x 2 patterns + 3 structured methods x 1)
    assert len(runs) == 36
    planned = subprocess.run([sys.executable, "-m", "bench", "plan", "--config", str(config)],
                             cwd=REPO_ROOT, env=plugin_env, capture_output=True, text=True)
    plugin_runs = [r for r in planned.stdout.split() if "/row_magnitude/" in r]
    assert len(plugin_runs) == 6 and len(planned.stdout.split()) == 42
    runs += [Run(*r.split("/")) for r in plugin_runs]
    site = tmp_path / cfg["site_dir"]
    html = (site / "leaderboard.html").read_text()      # every run's row; index.html is the overview
    assert (site / "index.html").is_file() and (site / "plots.html").is_file()
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
    # the plugin's runs: on the leaderboard, its code named on the methods page
    plugin_run = load_run(tmp_path / cfg["results_dir"] / "runs" / "tiny-opt" / "row_magnitude"
                          / "2of4.json")
    assert plugin_run["method"]["origin"] == "prunebench-example-plugin 0.1.0"
    assert "row_magnitude" in html        # (each of its runs' perplexity was found above)
    assert "prunebench-example-plugin 0.1.0" in (site / "methods.html").read_text()
    # every run has its per-example records, paired with dense; the calibration-seed run sits
    # beside the grid's, on its own draw; `bench compare` reads them all
    from bench.evaluation import examples

    for run in runs:
        rec = examples.load(tmp_path / cfg["results_dir"] / "runs" / run.model / run.method
                            / f"{run.pattern}{examples.SUFFIX}")
        assert len(rec["ppl"]["nll"]) == data["metrics_meta"]["ppl/wiki"]["n_windows"]
        assert (rec["ppl"]["kl"] == [0.0] * len(rec["ppl"]["kl"])) == (run.method == "dense")
    seed_run = load_run(tmp_path / cfg["results_dir"] / "seeds" / "tiny-llama" / "wanda" / "2of4"
                        / "seed-1.json")
    grid_run = load_run(tmp_path / cfg["results_dir"] / "runs" / "tiny-llama" / "wanda" / "2of4.json")
    assert seed_run["calibration"]["seed"] == 1 and grid_run["calibration"]["seed"] == 0
    assert seed_run["calibration"]["sha256"] != grid_run["calibration"]["sha256"]
    table = subprocess.run([sys.executable, "-m", "bench", "compare", "--model", "tiny-llama",
                            "--pattern", "2of4", "--results", str(tmp_path / cfg["results_dir"])],
                           cwd=REPO_ROOT, env=plugin_env, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    assert "wanda" in table.stdout and "sparsegpt" in table.stdout and " ± " in table.stdout
    # temp checkpoints are gone; a second run has nothing to do
    assert not any((tmp_path / "work" / "pruned").rglob("*.safetensors"))
    again = _snakemake(tmp_path, config, plugin_env)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
