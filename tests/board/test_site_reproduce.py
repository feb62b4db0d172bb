"""A run page's reproduce commands, read in real chromium and executed, regenerate the run.

In a scratch clone of this repository (its committed HEAD), Snakemake makes one run of the smoke
grid and the site is built as the `site` rule builds it. The run page's commands are read from
the page as a reader would copy them and run in the clone: `git checkout COMMIT` as written,
`make setup` stood in for by the test's own environment (linked as .venv; installing into it
again would point it at the clone), then the Snakemake line as written. The regenerated run
JSON is new (created_at moves) and has the same perplexity. Marked `slow` and `browser`."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench.packages import REPO_ROOT
from bench.results import load_run
from tests.board.test_site_browser import Page, browser, tab  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
RUN = ("tiny-llama", "magnitude", "2of4")
RESULTS = "work/smoke/results"


def _sh(cmd: str, cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=1200)
    assert res.returncode == 0, f"{cmd}\n{(res.stdout + res.stderr)[-4000:]}"
    return res.stdout


def test_reproduce_commands_regenerate_the_run(tmp_path: Path, tab: Page) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    venv = Path(sys.prefix)
    assert (venv / "bin" / "snakemake").is_file(), f"no snakemake in {venv}: run `make setup`"
    (clone / ".venv").symlink_to(venv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PRUNEBENCH_WHEELS": str(REPO_ROOT / "work" / "wheels")}
    env.pop("PRUNEBENCH_WORK", None)
    target = f"{RESULTS}/runs/{'/'.join(RUN)}.json"
    _sh(f".venv/bin/snakemake --cores 2 --configfile config/smoke.yaml -- {target}", clone, env)
    before = load_run(clone / target)
    assert not before["code"]["git_dirty"] and before["code"]["git_commit"]
    _sh(f".venv/bin/python -m bench leaderboard --results {RESULTS} --out work/smoke/site "
        "--configfile config/smoke.yaml", clone, env)

    page = tab.open(clone / "work" / "smoke" / "site" / "runs" / RUN[0] / RUN[1] / f"{RUN[2]}.html")
    assert page.locator("#reproduce .warn").count() == 0          # clean tree: no warning
    lines = page.locator("#reproduce pre.cmd").inner_text().strip().splitlines()
    assert lines[0] == f"git checkout {before['code']['git_commit']}" and lines[1] == "make setup"
    assert lines[2] == (".venv/bin/snakemake --cores 2 --configfile config/smoke.yaml "
                        f"--forcerun prune -- {target}")
    _sh(lines[0], clone, env)
    _sh(shlex.join(shlex.split(lines[2])), clone, env)           # the reader's line, as written
    after = load_run(clone / target)
    assert after["created_at"] != before["created_at"]                    # regenerated
    assert after["metrics"]["ppl/wiki"] == before["metrics"]["ppl/wiki"]
    assert after["sparsity"]["achieved"] == before["sparsity"]["achieved"]
