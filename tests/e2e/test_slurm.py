"""The SLURM profile against a real slurmctld: the smoke grid through `snakemake --profile
profiles/slurm` on a throwaway single-node cluster (tests/slurm/cluster.sh), every job seen by
`sacct` as submitted and completed, results equal to a local run of the same grid.

Markers `slow` and `slurm`: needs root and Debian's slurm-wlm, slurmdbd, munge and
mariadb-server; run it with `make test-slurm` (not part of `make test`: the two grids take
tens of minutes on 2 cores). docs/scale-out.md."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.packages import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
CLUSTER = REPO_ROOT / "tests" / "slurm" / "cluster.sh"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
             "--configfile", str(REPO_ROOT / "config" / "smoke.yaml")]
# what may differ between two runs of the same grid: clocks, machine load, provenance
VOLATILE = {"cost", "created_at", "speed", "environment", "code", "method_report"}


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: int = 3600) -> str:
    res = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd[:4]} failed:\n{(res.stdout + res.stderr)[-4000:]}"
    return res.stdout + res.stderr


def _runs(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))}


def _stable(run: dict) -> dict:
    out = {k: v for k, v in run.items() if k not in VOLATILE}
    meta = out.get("metrics_meta", {}).get("zeroshot")
    if meta:                                   # lm-eval's wall times
        out["metrics_meta"] = {**out["metrics_meta"], "zeroshot": {k: v for k, v in meta.items()
                                                                  if k != "seconds"}}
    return out


@pytest.fixture
def cluster(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.fail("the test cluster's daemons run as root: run `make test-slurm` as root")
    state = tmp_path / "cluster"
    out = _run(["bash", str(CLUSTER), "up", str(state)], timeout=300)
    conf = re.search(r"SLURM_CONF=(\S+)", out).group(1)
    try:
        yield {**os.environ, "SLURM_CONF": conf}
    finally:
        subprocess.run(["bash", str(CLUSTER), "down", str(state)], timeout=120)


def test_smoke_grid_through_slurm_equals_local(cluster: dict[str, str], tmp_path: Path) -> None:
    remote, local = tmp_path / "slurm-run", tmp_path / "local-run"
    log = _run([*SNAKEMAKE, "--profile", str(REPO_ROOT / "profiles" / "slurm"),
                "--directory", str(remote)], env=cluster)
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    planned = int(re.search(r"^total\s+(\d+)", log, flags=re.M).group(1))
    assert len(submitted) == planned - 1                 # every job but the input-only `all`
    acct = _run(["sacct", "-X", "-n", "-P", "--format=JobID,JobName,State", "--starttime=now-1day"],
                env=cluster)
    states = {line.split("|")[0]: line.split("|")[2] for line in acct.splitlines() if line}
    assert {states.get(j) for j in submitted.values()} == {"COMPLETED"}

    # the same thread count as the cluster jobs (engine.threads = 1 in the smoke config): LoRA
    # training's float reductions depend on it, everything else is thread-count independent
    _run([*SNAKEMAKE, "--cores", "1", "--directory", str(local)])
    a = _runs(remote / "work" / "smoke" / "results")
    b = _runs(local / "work" / "smoke" / "results")
    assert sorted(a) == sorted(b) and len([k for k in a if k.startswith("runs/")]) == 36
    for key in a:
        if key.startswith("runs/"):
            assert _stable(a[key]) == _stable(b[key]), key
