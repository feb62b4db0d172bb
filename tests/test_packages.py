"""bench.packages: where caches and downloaded wheels live, and unpacking from a shared store."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from bench import packages


def test_wheel_store_defaults_to_work_and_can_be_shared(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEBENCH_WORK", str(tmp_path / "work"))
    monkeypatch.delenv("PRUNEBENCH_WHEELS", raising=False)
    assert packages.wheel_dir() == tmp_path / "work" / "wheels"
    monkeypatch.setenv("PRUNEBENCH_WHEELS", str(tmp_path / "store"))
    assert packages.wheel_dir() == tmp_path / "store"


def test_unpacks_a_stored_wheel_into_this_work_dir_without_downloading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with zipfile.ZipFile(store / "demo_data-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("demo_data/texts/a.txt", "hello\n")
    monkeypatch.setenv("PRUNEBENCH_WHEELS", str(store))

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a wheel in the store must not be downloaded again")

    monkeypatch.setattr(packages.subprocess, "run", no_download)
    for work in ("work-a", "work-b"):                # two work dirs, one store
        monkeypatch.setenv("PRUNEBENCH_WORK", str(tmp_path / work))
        dest = packages.unpacked("demo-data", "1.0")
        assert dest == tmp_path / work / "pkgs" / "demo-data-1.0"
        assert (dest / "demo_data" / "texts" / "a.txt").read_text() == "hello\n"
    assert sorted(p.name for p in store.iterdir()) == ["demo_data-1.0-py3-none-any.whl"]
