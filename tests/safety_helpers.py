"""Helpers of the fault tests (tests/test_outputs.py, tests/test_inputs.py): run a command and
hold it to the one-line-error bar, snapshot a folder byte for byte, forbid model loading."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import main
from bench.packages import REPO_ROOT

SMOKE = str(REPO_ROOT / "config" / "smoke.yaml")


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` (hidden ones too) -> sha256 of its bytes, or 'dir'."""
    out: dict[str, str] = {}
    for path in sorted(Path(root).rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_main(argv: list[str], capsys: pytest.CaptureFixture, limit_s: float = 60.0
             ) -> tuple[int, str, float]:
    """Run the CLI in-process: (exit code, the last stderr line, seconds). An error must be
    exactly one line starting 'error:' (log lines before it are allowed)."""
    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    last = err[-1] if err else ""
    if code != 0:
        errors = [line for line in err if line.startswith("error:")]
        assert errors == [last], err[-5:]
        assert "Traceback" not in "\n".join(err)
    assert seconds < limit_s, f"{argv[0]} took {seconds:.0f}s before its error"
    return code, last, seconds


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=env or {**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail the test if any model's weights are loaded (an error must come before that)."""
    return forbid_model_load(monkeypatch)


def forbid_model_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    from bench.zoo import models

    calls: list[Any] = []

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError(f"a model was loaded: {args[:1]}")

    monkeypatch.setattr(models, "load_model", forbidden)
    return calls


def prune_args(out: Path, *extra: str, method: str = "wanda", pattern: str = "2of4",
               model: str = "tiny-llama") -> list[str]:
    return ["prune", "--model", model, "--method", method, "--pattern", pattern,
            "--out", str(out), "--config", SMOKE, "--quiet", *extra]
