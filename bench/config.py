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

from bench.zoo import fits
from bench.packages import REPO_ROOT
from bench.zoo import get_spec, license_problem, load_zoo, read_yaml  # noqa: F401 (read_yaml: config files too)
from methods import registry
from methods.base import PruneBenchError, parse_pattern

log = logging.getLogger(__name__)

DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
DEFAULTS: dict[str, Any] = {
    "zoo": "config/models.yaml", "results_dir": "results", "site_dir": "site/_build",
    "keep_checkpoints": False,
}
ENGINE_DEFAULTS = {"batch_size": 8, "device": "auto", "dtype": "float32", "threads": None}


@dataclass(frozen=True)
class Run:
    model: str
    method: str
    pattern: str

    @property
    def id(self) -> str:
        return f"{self.model}/{self.method}/{self.pattern}"


def load_config(source: str | Path | dict | None = None) -> dict[str, Any]:
    """Parse (if a path), validate and fill defaults. Raises PruneBenchError with one line."""
    if source is None:
        source = DEFAULT_CONFIG
    if isinstance(source, dict):
        raw = dict(source)
    else:
        raw = read_yaml(Path(source), "config file")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    if isinstance(raw.get("engine"), dict) and "sequential" in raw["engine"]:
        raise PruneBenchError("config: engine.sequential is gone: each layer-wise method runs its "
                              "reference schedule; add a '_seq' variant (e.g. sparsegpt_seq) to "
                              "methods for the true-sequential one")
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
    zoo = load_zoo(REPO_ROOT / cfg["zoo"])
    for key in cfg["models"]:
        get_spec(key, zoo)
    for name, params in cfg["methods"].items():
        registry.create(name, params)        # unknown method / hyperparameter -> error
    for slug in cfg["patterns"]:
        parse_pattern(slug)
    if cfg["calibration"]["corpus"] == cfg["evaluation"]["ppl"]["corpus"]:
        raise PruneBenchError("config: calibration and evaluation corpora must differ")
    for key in ("zoo", "results_dir", "site_dir"):
        check_workflow_path(f"config: {key}", str(cfg[key]))


# characters a Snakemake path pattern or a quoted shell argument cannot carry
_UNQUOTABLE = set("{}") | {chr(c) for c in range(32)} | {chr(127)}


def check_workflow_path(what: str, value: str) -> None:
    """Refuse a path the workflow cannot use: braces (Snakemake wildcards), control characters."""
    bad = sorted({c for c in value if c in _UNQUOTABLE})
    if bad or not value:
        shown = ", ".join(repr(c) for c in bad) or "an empty path"
        raise PruneBenchError(f"{what} {value!r}: the workflow cannot use this path ({shown}); "
                              f"choose one without braces or control characters")


def plan(cfg: dict[str, Any]) -> tuple[list[Run], list[tuple[Run, str]]]:
    """All runs of the grid and the dropped ones with their reasons. Baselines run once per model.

    Decided from each model's config, before any job: a sequence length beyond a model's
    positions is a config error; an N:M pattern whose M does not divide a layer's width drops
    that model's cells of the pattern (bench.zoo.fits); a model under terms the user has not
    accepted drops all its cells with that reason (its committed results stay on the site)."""
    zoo = load_zoo(REPO_ROOT / cfg["zoo"])
    methods = {name: registry.create(name, params) for name, params in cfg["methods"].items()}
    nm = any(parse_pattern(slug).kind == "nm" for slug in cfg["patterns"])
    runs: list[Run] = []
    dropped: list[tuple[Run, str]] = []
    for model in cfg["models"]:
        arch = zoo[model].arch
        if (gated := license_problem(zoo[model])) is not None:     # terms not accepted
            dropped += [(Run(model, name, slug), gated) for name, method in methods.items()
                        for slug in (["dense"] if method.kind == "baseline" else cfg["patterns"])]
            continue
        config = fits.zoo_config(zoo[model])
        fits.check_lengths(cfg, model, config, list(methods.values()))
        widths = fits.prunable_widths(config) if config is not None and nm else {}
        for name, method in methods.items():
            slugs = ["dense"] if method.kind == "baseline" else cfg["patterns"]
            for slug in slugs:
                run = Run(model, name, slug)
                pattern = parse_pattern(slug)
                try:
                    method.check(pattern, arch)
                except PruneBenchError as exc:
                    dropped.append((run, str(exc)))
                    continue
                why = fits.nm_problem(pattern, widths)
                if why is not None:
                    dropped.append((run, f"model '{model}': {why}"))
                    continue
                runs.append(run)
    for name in cfg["methods"]:            # a method line that yields nothing is a config error
        if not any(r.method == name for r in runs):
            why = next((w for r, w in dropped if r.method == name), "no model or pattern")
            raise PruneBenchError(f"config: method '{name}' has no run in this grid ({why})")
    return runs, dropped


@dataclass(frozen=True)
class SeedRun:
    """A grid cell pruned again on another calibration draw (results/seeds/)."""

    model: str
    method: str
    pattern: str
    seed: int

    @property
    def stem(self) -> str:
        return f"seeds/{self.model}/{self.method}/{self.pattern}/seed-{self.seed}"


def seed_runs(cfg: dict[str, Any], runs: list[Run]) -> list[SeedRun]:
    """The `seeds` entries of a config as runs; every cell must be a run of the grid and every
    seed must differ from the grid's calibration seed (that run is the grid's own)."""
    planned = {(r.model, r.method, r.pattern) for r in runs}
    out: list[SeedRun] = []
    for i, entry in enumerate(cfg.get("seeds") or []):
        for seed in entry["seeds"]:
            if seed == cfg["calibration"]["seed"]:
                raise PruneBenchError(f"config: seeds[{i}] repeats the grid's calibration seed "
                                      f"{seed} (that run is the grid's own)")
        for model in entry["models"]:
            for method in entry["methods"]:
                for pattern in entry["patterns"]:
                    if (model, method, pattern) not in planned:
                        raise PruneBenchError(f"config: seeds[{i}]: {model}/{method}/{pattern} "
                                              f"is not a run of this grid")
                    out += [SeedRun(model, method, pattern, s) for s in entry["seeds"]]
    return out


def with_seed(cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """The config of a calibration-seed run: the same protocol on calibration draw `seed`."""
    return {**cfg, "name": f"{cfg['name']}-seed{seed}",
            "calibration": {**cfg["calibration"], "seed": seed}}


def result_path(cfg: dict[str, Any], run: Run) -> Path:
    return Path(cfg["results_dir"]) / "runs" / run.model / run.method / f"{run.pattern}.json"
