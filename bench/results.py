"""One self-describing, versioned JSON file per run: results/runs/{model}/{method}/{pattern}.json.

Owns: the run schema (`RUN_SCHEMA`, JSON Schema draft 2020-12, `SCHEMA_VERSION`), the path
rule (`run_path`), validated atomic writing (`write_run`), validated reading (`load_run`,
`load_all`) with one-line errors naming the file and the field, and the helpers that fill
the `environment` and `code` sections. Non-finite metrics (a diverged perplexity) are
stored as null: the files are strict JSON, readable by browsers.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema

from bench import outputs
from bench.zoo import ARCHS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# a per-example file's name beside its run file (no folder): what `evaluate --out` names may use
EXAMPLES_NAME = "^[A-Za-z0-9][A-Za-z0-9_.-]*\\.examples\\.json\\.gz$"

_STR: dict[str, Any] = {"type": "string", "minLength": 1}
_INT0: dict[str, Any] = {"type": "integer", "minimum": 0}
_NUM0: dict[str, Any] = {"type": "number", "minimum": 0}
_FRACTION: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}


def _obj(props: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A closed object: every property required (unless optional), nothing else allowed."""
    return {"type": "object", "properties": props, "additionalProperties": False,
            "required": sorted(k for k in props if k not in optional)}


RUN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "PruneBench run",
    **_obj({
        "schema_version": {"const": SCHEMA_VERSION},
        "model": _obj({
            "key": _STR, "arch": {"enum": list(ARCHS)},
            "source": {"type": "object", "required": ["kind"]},
            "trained_here": {"type": "boolean"}, "n_layers": {"type": "integer", "minimum": 1}}),
        "method": _obj({
            "name": _STR, "params": {"type": "object"},
            "kind": {"enum": ["layerwise", "model", "baseline"]},
            # where the code came from: 'methods/<file>.py' or '<distribution> <version>'
            "origin": _STR,
            # layer-wise methods: the engine's schedule (methods.base.LayerwiseMethod.sequential)
            "sequential": {"type": "boolean"}}, optional=("origin", "sequential")),
        "pattern": {**_obj({
            "slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]*$"},
            "kind": {"enum": ["dense", "unstructured", "nm", "structured"]},
            "sparsity": _FRACTION,
            "n": {"type": ["integer", "null"], "minimum": 1},
            "m": {"type": ["integer", "null"], "minimum": 1}}),
            "if": {"properties": {"kind": {"const": "nm"}}},
            "then": {"properties": {"n": {"type": "integer"}, "m": {"type": "integer"}}},
            "else": {"properties": {"n": {"type": "null"}, "m": {"type": "null"}}}},
        "sparsity": _obj({
            "achieved": _FRACTION,
            "per_layer": {"type": "object", "additionalProperties": _FRACTION},
            "prunable_params": _INT0}),
        "params": _obj({"total": _INT0, "nonzero": _INT0}),
        "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "metrics_meta": {"type": "object", "additionalProperties": {"type": "object"}},
        "cost": _obj({"prune_seconds": _NUM0, "peak_rss_mb": _NUM0, "eval_seconds": _NUM0,
                      "device": _STR}),
        "calibration": {"anyOf": [{"type": "null"}, _obj({
            "source": _STR, "n_samples": {"type": "integer", "minimum": 1},
            "seqlen": {"type": "integer", "minimum": 1}, "seed": {"type": "integer"},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "corpus_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
            optional=("corpus_sha256",))]},
        "environment": _obj({
            "python": _STR, "torch": _STR, "transformers": _STR,
            "lm_eval": {"type": ["string", "null"]}, "device": _STR, "platform": _STR,
            "cpu_count": {"type": ["integer", "null"], "minimum": 1}}),
        "code": _obj({"git_commit": {"type": ["string", "null"], "pattern": "^[0-9a-f]{40,64}$"},
                      "git_dirty": {"type": "boolean"}}),
        "created_at": {"type": "string",
                       "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$"},
        # structured runs: per-layer unit counts and parameter counts, dense and pruned
        "structure": {"type": "object", "required": ["layer_units", "dense_layer_units", "params",
                                                     "dense_params"]},
        # measured speed (structured: latency of the smaller model vs dense, same machine)
        "speed": {"type": "object", "required": ["kind"]},
        # model-level methods: what the method reports (removed units, the searched layout)
        "method_report": {"type": "object"},
        # the per-example file beside the run JSON (bench/evaluation/examples.py): its file name
        "examples": {"type": "string", "pattern": EXAMPLES_NAME},
    }, optional=("structure", "speed", "method_report", "examples")),
}

_VALIDATOR = jsonschema.Draft202012Validator(RUN_SCHEMA)


def _field(err: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in err.absolute_path]
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [k for k in err.validator_value if k not in err.instance]
        parts += missing[:1]
    elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        parts += sorted(k for k in err.instance if k not in allowed)[:1]
    return ".".join(parts) or "<root>"


def validate_run(run: Any, where: str = "run") -> None:
    """Raise ValueError('{where}: field 'a.b': message') for the first problem, else return."""
    if not isinstance(run, dict):
        raise ValueError(f"{where}: a run must be a JSON object, got {type(run).__name__}")
    version = run.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{where}: field 'schema_version': unsupported schema_version {version!r} "
                         f"(this code reads {SCHEMA_VERSION})")
    errors = sorted(_VALIDATOR.iter_errors(run), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        message = " ".join(err.message.split())[:200]
        raise ValueError(f"{where}: field '{_field(err)}': {message}")


def _finite(value: Any, where: str) -> Any:
    """Copy of value with non-finite floats in metrics replaced by None; elsewhere an error."""
    if isinstance(value, float) and not math.isfinite(value):
        if where.startswith("metrics."):
            return None
        raise ValueError(f"run: field '{where}': non-finite number {value}")
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{where}.{i}") for i, v in enumerate(value)]
    return value


def _safe_name(kind: str, name: str) -> str:
    if not name or name in {".", ".."} or any(c in name for c in "/\\\0") or name.startswith("."):
        raise ValueError(f"{kind} name {name!r} cannot be used in a results path")
    return name


def run_path(results_dir: Path, model: str, method: str, pattern: str) -> Path:
    """results_dir/runs/{model}/{method}/{pattern}.json (names must be safe path parts)."""
    return (Path(results_dir) / "runs" / _safe_name("model", model) / _safe_name("method", method)
            / f"{_safe_name('pattern', pattern)}.json")


def dump_run(run: dict[str, Any], where: str = "run") -> str:
    """The text of a run file: validated, strict JSON, sorted keys, indent 2, a final newline."""
    run = _finite(run, "")
    validate_run(run, where)
    try:
        return json.dumps(run, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: run is not JSON-serialisable: {exc}") from exc


def is_run_file(path: Path) -> bool:
    """A run file of this tool (any schema version): may be replaced by a newer run."""
    return outputs.json_object_with(path, ("schema_version", "model", "method", "pattern"))


def write_run(path: Path, run: dict[str, Any]) -> None:
    """Validate, then write atomically through bench.outputs (never over a foreign file)."""
    outputs.write_text(Path(path), dump_run(run, str(path)), "run file", is_run_file,
                       create_parent=True)


def load_run(path: Path) -> dict[str, Any]:
    """Parse and validate one run file; errors name the file and the failing field."""
    path = Path(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: run file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    validate_run(run, str(path))
    return run


def load_all(results_dir: Path) -> list[dict[str, Any]]:
    """Every run under results_dir/runs, sorted by (model, method, pattern); [] if none."""
    runs_dir = Path(results_dir) / "runs"
    seen: dict[tuple[str, str, str], Path] = {}
    runs = []
    for path in sorted(runs_dir.rglob("*.json")) if runs_dir.is_dir() else []:
        run = load_run(path)
        key = (run["model"]["key"], run["method"]["name"], run["pattern"]["slug"])
        if key in seen:
            raise ValueError(f"{path}: duplicate run {key} (also in {seen[key]})")
        seen[key] = path
        if path.relative_to(runs_dir).parts != (key[0], key[1], f"{key[2]}.json"):
            log.warning("%s holds run %s/%s/%s: not where run_path puts it", path, *key)
        runs.append(run)
    return sorted(runs, key=lambda r: (r["model"]["key"], r["method"]["name"], r["pattern"]["slug"]))


def example_run(model: str = "tiny-llama", method: str = "magnitude", pattern: str = "unstructured-50",
                ppl: float | None = 42.0) -> dict[str, Any]:
    """A small valid run (documents the schema; used by tests of code that reads runs)."""
    dense = pattern == "dense"
    nm = pattern.split("of") if "of" in pattern else None
    sparsity = 0.0 if dense else 0.5 if nm else int(pattern.rsplit("-", 1)[-1]) / 100
    kind = "dense" if dense else "nm" if nm else pattern.rsplit("-", 1)[0]
    total, prunable = 1000, 800
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"key": model, "arch": "llama", "source": {"kind": "random", "seed": 0},
                  "trained_here": False, "n_layers": 2},
        "method": {"name": "dense" if dense else method, "params": {},
                   "kind": "baseline" if dense else "layerwise"},
        "pattern": {"slug": pattern, "kind": kind, "sparsity": sparsity,
                    "n": int(nm[0]) if nm else None, "m": int(nm[1]) if nm else None},
        "sparsity": {"achieved": sparsity, "per_layer": {"model.layers.0.mlp.up_proj": sparsity},
                     "prunable_params": prunable},
        "params": {"total": total, "nonzero": total - round(prunable * sparsity)},
        "metrics": {"ppl/wiki": ppl},
        "metrics_meta": {"ppl/wiki": {"seqlen": 512, "n_tokens": 4096, "n_windows": 8, "bos": False}},
        "cost": {"prune_seconds": 0.0 if dense else 1.5, "peak_rss_mb": 512.0, "eval_seconds": 3.0,
                 "device": "cpu"},
        "calibration": None if dense else {"source": "austen", "n_samples": 8, "seqlen": 128, "seed": 0,
                                           "sha256": "0" * 64},
        "environment": {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.23.0", "lm_eval": None,
                        "device": "cpu", "platform": "Linux", "cpu_count": 2},
        "code": {"git_commit": "a" * 40, "git_dirty": False},
        "created_at": "2026-11-23T12:00:00Z",
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment_info(device: str | None = None) -> dict[str, Any]:
    """The `environment` section: versions, device (default: cuda name or 'cpu'), platform."""
    import torch
    import transformers

    if device is None:
        device = f"cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "lm_eval": _version("lm_eval"),
            "device": device, "platform": platform.platform(), "cpu_count": os.cpu_count()}


def schema_records(folder: Path, glob: str, schema: str) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) of every file of `folder` matching `glob`, sorted; each must carry
    `"schema": schema` (anything else there is a ValueError naming the file). [] without folder."""
    out = []
    for path in sorted(Path(folder).glob(glob)) if Path(folder).is_dir() else []:
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict) or rec.get("schema") != schema:
            got = rec.get("schema") if isinstance(rec, dict) else None
            raise ValueError(f"{path}: not a {schema} record (schema {got!r})")
        out.append((path, rec))
    return out


def git_info(repo: Path) -> dict[str, Any]:
    """The `code` section: HEAD commit (None outside git or before the first commit) and
    whether tracked files differ from it (results/ and untracked files are ignored).
    PRUNEBENCH_COMMIT, when set, names the commit a copied tree was made from and wins: the GPU
    machine gets a copy of a clean committed tree whose .git, if any, is not that commit's
    (seen: a stale HEAD; bench/speed/gpu_check.py)."""
    copied = os.environ.get("PRUNEBENCH_COMMIT")
    if copied:
        return {"git_commit": copied, "git_dirty": False}

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)

    try:
        head = git("rev-parse", "--verify", "-q", "HEAD")
    except OSError:  # git not installed
        return {"git_commit": copied, "git_dirty": not copied}
    if head.returncode != 0:
        return {"git_commit": copied, "git_dirty": not copied}
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"git_commit": head.stdout.strip(), "git_dirty": status.returncode != 0 or bool(status.stdout.strip())}


def write_bench_json(data: dict[str, Any], default: Path, out: str | Path | None = None,
                     keys: tuple[str, ...] = ()) -> Path:
    """Atomically write a benchmark result (bench/*.py scripts, speed records) to `out` or
    `default`; an existing file is replaced only when it is a JSON object with `keys`."""
    path = Path(out) if out else default
    outputs.write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n", "--out",
                       lambda p: outputs.json_object_with(p, keys), create_parent=out is None or path == default)
    return path
