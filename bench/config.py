"""Grid configs: load, validate against config/schema.yaml, fill defaults, and plan the runs.

Owns: `load_config` (YAML or an already-parsed dict, as Snakemake hands it over), schema and
semantic validation (models exist in the zoo, methods are registered, patterns parse,
hyperparameters are accepted) and `plan`: the (model, method, pattern) runs of a grid, with
every unsupported combination dropped and reported with its reason.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bench.packages import REPO_ROOT
from methods import registry
from methods.base import PruneBenchError, parse_pattern

log = logging.getLogger(__name__)

DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
DEFAULTS: dict[str, Any] = {
    "zoo": "config/models.yaml", "results_dir": "results", "site_dir": "site/_build",
    "keep_checkpoints": False,
}
ENGINE_DEFAULTS = {"batch_size": 8, "sequential": False, "device": "auto", "dtype": "float32",
                   "threads": None}


@dataclass(frozen=True)
class Run:
    model: str
    method: str
    pattern: str

    @property
    def id(self) -> str:
        return f"{self.model}/{self.method}/{self.pattern}"


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; a missing file or bad YAML is one clear line."""
    if not path.is_file():
        raise PruneBenchError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise PruneBenchError(f"{what} {path}: not valid YAML: {first}") from None


def load_config(source: str | Path | dict | None = None) -> dict[str, Any]:
    """Parse (if a path), validate and fill defaults. Raises PruneBenchError with one line."""
    if source is None:
        source = DEFAULT_CONFIG
    if isinstance(source, dict):
        raw = dict(source)
    else:
        raw = read_yaml(Path(source), "config file")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    try:
        jsonschema.validate(raw, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise PruneBenchError(f"config invalid at {where}: {exc.message}") from None
    cfg = {**DEFAULTS, **raw}
    cfg["engine"] = {**ENGINE_DEFAULTS, **raw.get("engine", {})}
    cfg["methods"] = {name: dict(params or {}) for name, params in raw["methods"].items()}
    cfg["evaluation"]["ppl"].setdefault("batch_size", 4)
    cfg["evaluation"]["ppl"].setdefault("max_tokens", None)
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: dict[str, Any]) -> None:
    from bench.models import load_zoo, get_spec

    zoo = load_zoo(REPO_ROOT / cfg["zoo"])
    for key in cfg["models"]:
        get_spec(key, zoo)
    for name, params in cfg["methods"].items():
        registry.create(name, params)        # unknown method / hyperparameter -> error
    for slug in cfg["patterns"]:
        parse_pattern(slug)
    if cfg["calibration"]["corpus"] == cfg["evaluation"]["ppl"]["corpus"]:
        raise PruneBenchError("config: calibration and evaluation corpora must differ")


def plan(cfg: dict[str, Any]) -> tuple[list[Run], list[tuple[Run, str]]]:
    """All runs of the grid and the dropped ones with their reasons. Baselines run once per model."""
    from bench.models import load_zoo

    zoo = load_zoo(REPO_ROOT / cfg["zoo"])
    runs: list[Run] = []
    dropped: list[tuple[Run, str]] = []
    for model in cfg["models"]:
        arch = zoo[model].arch
        for name, params in cfg["methods"].items():
            method = registry.create(name, params)
            slugs = ["dense"] if method.kind == "baseline" else cfg["patterns"]
            for slug in slugs:
                run = Run(model, name, slug)
                try:
                    method.check(parse_pattern(slug), arch)
                except PruneBenchError as exc:
                    dropped.append((run, str(exc)))
                    continue
                runs.append(run)
    for name in cfg["methods"]:            # a method line that yields nothing is a config error
        if not any(r.method == name for r in runs):
            why = next((w for r, w in dropped if r.method == name), "no model or pattern")
            raise PruneBenchError(f"config: method '{name}' has no run in this grid ({why})")
    return runs, dropped


def result_path(cfg: dict[str, Any], run: Run) -> Path:
    return Path(cfg["results_dir"]) / "runs" / run.model / run.method / f"{run.pattern}.json"
