"""`python -m bench new-method`: name checks, templates that work as written, and the whole path
in a fresh copy of the repository (generate, listed at once, its tests pass, planned in a grid)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.packages import REPO_ROOT, work_dir
from bench.tools.scaffold import check_name, class_name, new_method, render
from methods.base import PruneBenchError


@pytest.mark.parametrize("bad, why", [("Wanda2", "lowercase Python identifier"),
                                      ("my-method", "lowercase Python identifier"),
                                      ("class", "lowercase Python identifier"),
                                      ("masks", "support module"),
                                      ("wanda", "already exists")])
def test_bad_names_rejected(bad: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(PruneBenchError, match=why):
        check_name(bad, tmp_path, tmp_path)


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_method_mine.py").write_text("# mine\n")
    with pytest.raises(PruneBenchError, match="already exists"):
        new_method("mine", "layerwise", tmp_path, tmp_path / "tests")
    assert not (tmp_path / "mine.py").exists()
    assert (tmp_path / "tests" / "test_method_mine.py").read_text() == "# mine\n"


@pytest.mark.parametrize("kind", ["layerwise", "model"])
def test_templates_render_to_python(kind: str) -> None:
    method, test = render("my_rule", kind)
    compile(method, "my_rule.py", "exec")
    compile(test, "test_method_my_rule.py", "exec")
    assert 'name: ClassVar[str] = "my_rule"' in method and class_name("my_rule") == "MyRule"
    assert "$" not in method.replace("$name", "") and "TODO" not in method
    with pytest.raises(PruneBenchError, match="unknown method kind"):
        render("my_rule", "global")


def _fresh_copy(dest: Path) -> Path:
    """The repository as a fresh clone would have it: tracked and new (unignored) files."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO_ROOT / rel).is_file() and not rel.startswith("results/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, dest / rel)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("kind, name", [("layerwise", "my_score"), ("model", "my_units")])
def test_new_method_from_a_fresh_copy(kind: str, name: str, tmp_path: Path) -> None:
    repo = _fresh_copy(tmp_path / "repo")
    # the copy's own bench/ and methods/ come first on the path; caches (tiny models' tokenizer,
    # corpora) are shared with this checkout
    env = {**os.environ, "PRUNEBENCH_WORK": str(work_dir()), "PYTHONPATH": str(repo)}

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)

    made = run(sys.executable, "-m", "bench", "new-method", name, "--kind", kind)
    assert made.returncode == 0, made.stderr
    assert (repo / "methods" / f"{name}.py").is_file() and (repo / "tests" / "methods" / f"test_method_{name}.py").is_file()
    listed = run(sys.executable, "-m", "bench", "list")
    assert f"[methods/{name}.py]" in listed.stdout
    again = run(sys.executable, "-m", "bench", "new-method", name)
    assert again.returncode == 2 and "already exists" in again.stderr
    tests = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                f"tests/methods/test_method_{name}.py")
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout
    grid = (repo / "config" / "smoke.yaml").read_text().replace(
        "methods:\n", f"methods:\n  {name}: {{}}\n", 1)
    (repo / "grid.yaml").write_text(grid)
    planned = run(sys.executable, "-m", "bench", "plan", "--config", "grid.yaml")
    mine = [r for r in planned.stdout.split() if f"/{name}/" in r]
    assert planned.returncode == 0 and len(mine) == (6 if kind == "layerwise" else 3), planned.stderr
