"""Where PruneBench writes: every output location checked before the work, one writer per
target, unique temporaries on the target's filesystem, an atomic publish.

Owns `claim(target, what, kind, owned)`, the context manager every command wraps its output in.
On entry, before any long work, it refuses:
- an existing target this tool did not write (`owned(target)` is False): a folder of someone
  else's is never deleted, a file of another kind is never overwritten (an empty folder is fine);
- a target of the wrong kind (a file where a folder goes, or the other way round), a symbolic
  link, a missing parent folder (unless the location is the tool's own, `create_parent`), a
  parent that cannot be written (read-only, no permission);
- a target another process is writing: an advisory `flock` on `.NAME.lock` beside the target
  (the kernel releases it when a process dies, so a killed run never leaves a stale lock).
The work writes into `Claim.tmp`, a name unique to the process (`.NAME.PID.RANDOM.tmp`) in the
target's own folder, so the final rename is atomic. Every failure path (an exception, Ctrl-C,
SIGTERM, which the CLI turns into SystemExit) removes the temporary and the lock; temporaries
of killed writers are removed by the next writer of the same target.

Caches the tool keeps for itself under work/ (corpora, calibration ids, unpacked task data,
training checkpoints, effective configs) need no claim, only an atomic replace: `replacing`
hands out a per-process temporary beside the file and renames it over the file when the block
ends cleanly (`replace_text`, `replace_bytes` for the common case). Every atomic write in the
project goes through one of these two doors.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from methods.base import PruneBenchError

log = logging.getLogger(__name__)

Kind = Literal["file", "dir"]
Owned = Callable[[Path], bool]


class OutputError(PruneBenchError):
    """An output location that cannot or must not be written. One line."""


@dataclass
class Claim:
    """A claimed output: write into `tmp` (a file path, or an existing empty folder).
    `abandon()` when nothing is to be published (another writer already made it)."""

    target: Path
    tmp: Path
    kind: Kind
    publish: bool = True

    def abandon(self) -> None:
        self.publish = False


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_target(target: Path, what: str, kind: Kind, owned: Owned | None = None,
                 create_parent: bool = False) -> None:
    """Raise a one-line OutputError unless `target` may be (re)written; see the module doc."""
    target = Path(target)
    if target.name in ("", ".", ".."):
        raise OutputError(f"{what} {str(target) or '.'}: name a file or folder to create, not "
                          f"the current or a parent folder")
    if target.is_symlink():
        raise OutputError(f"{what} {target} is a symbolic link; refusing to replace it")
    if target.exists():
        if kind == "dir" and not target.is_dir():
            raise OutputError(f"{what} {target} exists and is a file, not a folder")
        if kind == "file" and target.is_dir():
            raise OutputError(f"{what} {target} exists and is a folder, not a file")
        if not _empty_dir(target) and not (owned is not None and owned(target)):
            raise OutputError(f"{what} {target} exists and is not one this tool wrote; refusing "
                              f"to replace it (move it away or choose another path)")
    parent = target.parent
    if not parent.exists():
        if not create_parent:
            raise OutputError(f"{what} {target}: its folder {parent} does not exist")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{what} {target}: cannot create its folder {parent}: "
                              f"{exc.strerror or exc}") from None
    if not parent.is_dir():
        raise OutputError(f"{what} {target}: {parent} is not a folder")


def lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def _lock(target: Path, what: str, wait: bool = False) -> int:
    """flock(LOCK_EX) on the target's lock file; a held lock is a one-line error unless `wait`."""
    lock = lock_path(target)
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{what} {target}: cannot write in {target.parent} "
                              f"({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(f"{what} {target} is being written by another process (pid "
                              f"{holder}, lock {lock}); wait for it to finish") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:         # its last holder removed it after we opened it
            same = False
        if same:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:        # a full disk: the lock file goes, nothing is left
                _unlock(fd, target)
                raise OutputError(f"{what} {target}: cannot write in {target.parent} "
                                  f"({exc.strerror or exc})") from None
            return fd
        os.close(fd)
    raise OutputError(f"{what} {target}: could not take the lock {lock}")


def _unlock(fd: int, target: Path) -> None:
    try:
        os.unlink(lock_path(target))
    except FileNotFoundError:
        pass
    os.close(fd)


def _mode(full: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _sweep(target: Path) -> None:
    """Remove temporaries of earlier writers of `target` (we hold its lock: they are dead)."""
    stale = re.compile(rf"^\.{re.escape(target.name)}\.\d+\.[^.]+\.(tmp|old)$")
    for sibling in target.parent.iterdir():
        if stale.match(sibling.name):
            log.warning("removing %s, left by a killed writer of %s", sibling, target)
            _remove(sibling)


_SIGNALLED: list[int] = []


def note_signal(signum: int) -> None:
    """Record that the process was asked to stop (the CLI's SIGINT/SIGTERM handlers): from now
    on nothing is published, even if the exception the handler raised was swallowed (Python
    ignores exceptions raised inside a destructor)."""
    _SIGNALLED.append(signum)


def _publish(tmp: Path, target: Path, kind: Kind) -> None:
    if _SIGNALLED:
        raise KeyboardInterrupt(f"signal {_SIGNALLED[0]}: {target} not published")
    if kind == "file" or not target.exists() or _empty_dir(target):
        os.replace(tmp, target)                 # a file, or a folder over nothing / an empty one
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.",
                                suffix=".old"))
    os.replace(target, old)                     # (an empty folder: replaced whole)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def claim(target: Path | str, what: str, kind: Kind = "file", owned: Owned | None = None,
          create_parent: bool = False, wait: bool = False) -> Iterator[Claim]:
    """Check, lock and hand out a temporary for `target`; publish it atomically on success.
    `wait`: wait for another writer instead of failing (shared caches; the caller re-checks)."""
    target = Path(target)
    check_target(target, what, kind, owned, create_parent)
    fd = _lock(target, what, wait)
    tmp: Path | None = None
    try:
        check_target(target, what, kind, owned)          # again, under the lock
        _sweep(target)
        prefix = f".{target.name}.{os.getpid()}."
        try:
            if kind == "dir":
                tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=".tmp"))
                os.chmod(tmp, _mode(0o777))
            else:
                handle, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
                os.close(handle)
                tmp = Path(name)
                os.chmod(tmp, _mode(0o666))
        except OSError as exc:
            raise OutputError(f"{what} {target}: cannot write in {target.parent} "
                              f"({exc.strerror or exc})") from None
        handed = Claim(target, tmp, kind)
        yield handed
        if handed.publish:
            _publish(tmp, target, kind)
            tmp = None
    finally:
        if tmp is not None:
            _remove(tmp)
        _unlock(fd, target)


def json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is unreadable or not an object."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def json_object_with(path: Path, keys: tuple[str, ...]) -> bool:
    """True when `path` holds a JSON object with all of `keys` (a file this tool wrote)."""
    obj = json_object(path)
    return obj is not None and all(k in obj for k in keys)


def write_text(target: Path | str, text: str, what: str, owned: Owned | None = None,
               create_parent: bool = False) -> Path:
    """Claim `target` and write `text` to it atomically (fsync'd); returns the target."""
    with claim(target, what, "file", owned, create_parent) as c:
        with open(c.tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(target)


@contextmanager
def replacing(path: Path | str) -> Iterator[Path]:
    """A temporary (`.NAME.PID.tmp`, its parent created) to write a cache file into; renamed over
    `path` when the block ends cleanly, removed when it raises. For the tool's own caches: a
    location a user names goes through `claim`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def replace_text(path: Path | str, text: str) -> Path:
    """Write a cache file's text atomically (see `replacing`)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def replace_bytes(path: Path | str, data: bytes) -> Path:
    """Write a cache file's bytes atomically (see `replacing`)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def create_new(path: Path, text: str, what: str) -> None:
    """Write a file that must not exist yet: exactly one of several concurrent writers wins
    (the publish is a hard link, which fails on an existing name)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise OutputError(f"{what} {path} already exists; pick another name or remove it")
    check_target(path, what, "file")
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                    suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(name, _mode(0o666))
        try:
            os.link(name, path)
        except FileExistsError:
            raise OutputError(f"{what} {path} already exists (written by another process)") from None
    finally:
        os.unlink(name)
