"""Per-example records of a run: the raw material of paired intervals, KL and answer flips.

Owns the file next to each run JSON, `{pattern}.examples.json.gz` (gzip of one JSON object,
written deterministically: no timestamp in the gzip header, sorted keys), its schema, its
validation on load and the pairing of two runs' records:

    {"schema": "prunebench-examples/1",
     "run": {"model", "method", "pattern", "created_at"},
     "ppl": {"corpus", "token_ids_sha256", "seqlen", "window_ids": [W],
             "nll": [W] (mean NLL of each window's seqlen-1 predicted tokens),
             "kl": [W] | null (mean KL(dense || this run) of the same tokens)},
     "zeroshot": null | {"protocol": {...}, "tasks": {task: {
             "doc_ids": [D] (index into the task's evaluation split), "target": [D],
             "loglik": [D][choices], "acc": [D] (0/1), "acc_norm": [D] (0/1, tasks that have it)}}}}

Windows are identified by their index into the evaluation text (tokenized once, hash recorded)
and documents by their index into the task's split; two runs pair up only when these, the text
hash and the window length are identical (`paired_ppl`, `paired_task`): a mismatch is a one-line
error, never a silent subset.
"""
from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

from methods.base import PruneBenchError

SCHEMA = "prunebench-examples/1"
SUFFIX = ".examples.json.gz"


def path_for(run_json: Path) -> Path:
    """results/runs/M/METHOD/PATTERN.json -> results/runs/M/METHOD/PATTERN.examples.json.gz"""
    run_json = Path(run_json)
    return run_json.with_name(run_json.name[: -len(".json")] + SUFFIX)


def dumps(record: dict[str, Any]) -> bytes:
    """The gzip bytes of a record (validated first); identical records give identical bytes."""
    validate(record, "examples record")
    raw = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return buf.getvalue()


def load(path: Path) -> dict[str, Any]:
    """Read and validate an examples file; a missing, corrupt or malformed file is one line."""
    path = Path(path)
    if not path.is_file():
        raise PruneBenchError(f"examples file not found: {path}")
    try:
        record = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, ValueError) as exc:
        raise PruneBenchError(f"examples file {path} is corrupt ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    validate(record, f"examples file {path}")
    return record


def is_examples_file(path: Path) -> bool:
    """A file this tool wrote (for bench.outputs' ownership test)."""
    try:
        load(path)
    except PruneBenchError:
        return False
    return True


def _fail(what: str, why: str) -> PruneBenchError:
    return PruneBenchError(f"{what}: {why}")


def _numbers(values: Any, n: int, what: str, key: str, lo: float | None = None) -> None:
    if not isinstance(values, list) or len(values) != n:
        raise _fail(what, f"'{key}' must be a list of {n} numbers")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (lo is not None and v < lo):
            raise _fail(what, f"'{key}' holds {v!r}, not a finite number"
                              + (f" >= {lo}" if lo is not None else ""))


def validate(record: Any, what: str) -> None:
    """Raise a one-line PruneBenchError unless `record` follows the schema (see the docstring)."""
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise _fail(what, f"not a '{SCHEMA}' record")
    run = record.get("run")
    if not isinstance(run, dict) or not all(isinstance(run.get(k), str)
                                            for k in ("model", "method", "pattern")):
        raise _fail(what, "'run' must name model, method and pattern")
    ppl = record.get("ppl")
    if not isinstance(ppl, dict):
        raise _fail(what, "'ppl' section missing")
    ids = ppl.get("window_ids")
    if not isinstance(ids, list) or not ids or ids != sorted(set(ids)) \
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise _fail(what, "'ppl.window_ids' must be increasing integers")
    if not isinstance(ppl.get("seqlen"), int) or not isinstance(ppl.get("token_ids_sha256"), str):
        raise _fail(what, "'ppl' needs seqlen and token_ids_sha256")
    _numbers(ppl.get("nll"), len(ids), what, "ppl.nll")
    if ppl.get("kl") is not None:
        _numbers(ppl["kl"], len(ids), what, "ppl.kl", lo=0.0)
    zs = record.get("zeroshot")
    if zs is None:
        return
    if not isinstance(zs, dict) or not isinstance(zs.get("tasks"), dict) or not zs["tasks"]:
        raise _fail(what, "'zeroshot.tasks' must map task names to records")
    for task, rec in zs["tasks"].items():
        _validate_task(rec, f"zeroshot.tasks.{task}", what)


def _validate_task(rec: Any, key: str, what: str) -> None:
    if not isinstance(rec, dict):
        raise _fail(what, f"'{key}' is not a record")
    docs = rec.get("doc_ids")
    if not isinstance(docs, list) or not docs or docs != sorted(set(docs)):
        raise _fail(what, f"'{key}.doc_ids' must be increasing integers")
    n = len(docs)
    loglik = rec.get("loglik")
    if not isinstance(loglik, list) or len(loglik) != n or not all(
            isinstance(c, list) and len(c) >= 2 for c in loglik):
        raise _fail(what, f"'{key}.loglik' must hold >= 2 choices for each of {n} documents")
    for c in loglik:
        _numbers(c, len(c), what, f"{key}.loglik")
    target = rec.get("target")
    if not isinstance(target, list) or len(target) != n or not all(
            isinstance(t, int) and 0 <= t < len(c) for t, c in zip(target, loglik)):
        raise _fail(what, f"'{key}.target' must be a choice index per document")
    for metric in ("acc", "acc_norm"):
        if metric in rec:
            vals = rec[metric]
            if not isinstance(vals, list) or len(vals) != n or any(v not in (0, 1) for v in vals):
                raise _fail(what, f"'{key}.{metric}' must be 0/1 per document")
    if "acc" not in rec:
        raise _fail(what, f"'{key}.acc' missing")


def chance(rec: dict[str, Any]) -> float:
    """A task's chance accuracy: the mean over its documents of 1 / (number of choices)."""
    return sum(1.0 / len(c) for c in rec["loglik"]) / len(rec["loglik"])


def paired_ppl(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Raise unless the perplexity windows of records `a` and `b` are the same windows."""
    pa, pb = a["ppl"], b["ppl"]
    for key in ("token_ids_sha256", "seqlen", "window_ids"):
        if pa[key] != pb[key]:
            raise PruneBenchError(f"pairing mismatch: {_name(a)} and {_name(b)} differ in "
                                  f"ppl.{key}; their windows cannot be paired")


def paired_task(a: dict[str, Any], b: dict[str, Any], task: str) -> None:
    """Raise unless both records hold `task` on the same documents, in the same order."""
    ta = (a.get("zeroshot") or {}).get("tasks", {}).get(task)
    tb = (b.get("zeroshot") or {}).get("tasks", {}).get(task)
    if ta is None or tb is None:
        missing = _name(a) if ta is None else _name(b)
        raise PruneBenchError(f"pairing mismatch: {missing} has no zero-shot records of '{task}'")
    if ta["doc_ids"] != tb["doc_ids"] or ta["target"] != tb["target"]:
        raise PruneBenchError(f"pairing mismatch: {_name(a)} and {_name(b)} scored different "
                              f"documents of '{task}'")


def _name(record: dict[str, Any]) -> str:
    run = record["run"]
    return f"{run['model']}/{run['method']}/{run['pattern']}"
