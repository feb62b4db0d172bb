"""Helpers the Snakefile calls at parse time: the effective config file and rule inputs.

Owns: writing the validated config where every job reads it (work/configs/{name}.json, only
rewritten when its content changes, so unchanged protocols cause no reruns), and the input list
of a prune job (the calibration file only for methods that need calibration), and the weights
of models trained here (regenerated from their zoo recipe when missing).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.packages import REPO_ROOT
from methods import registry


def write_effective_config(cfg: dict[str, Any], work: str = "work") -> str:
    path = Path(work) / "configs" / f"{cfg['name']}.json"
    blob = json.dumps(cfg, sort_keys=True, indent=1) + "\n"
    if not path.exists() or path.read_text() != blob:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(blob)
        tmp.replace(path)
    return str(path)


def prune_inputs(model: str, method: str) -> list[str]:
    inputs = [f"work/prepared/{model}.json"]
    cls = registry.get(method)
    if cls.capabilities.needs_calibration:
        inputs.append(f"work/calib/{model}.safetensors")
    inputs += [p.format(model=model) for p in getattr(cls, "cache_inputs", ())]
    return inputs


def job_threads(method: str, pattern: str, default: int, cores: int) -> int:
    """Model-level methods (gradients, search, training) and structured evaluations (latency is
    timed, so nothing may run beside it) take every core; other jobs take `default`."""
    if registry.get(method).kind == "model" or pattern.startswith("structured-"):
        return cores
    return default


def prepare_inputs(model: str, zoo_path: str) -> list[str]:
    """A model trained here depends on its weights, which the `train_tiny` rule regenerates."""
    from bench.models import get_spec, load_zoo

    spec = get_spec(model, load_zoo(REPO_ROOT / zoo_path))
    if spec.trained_here and spec.recipe and spec.source.get("kind") == "local":
        return [str(REPO_ROOT / spec.source["path"] / "model.safetensors")]
    return []


def train_recipe(model_dir: str, zoo_path: str) -> str:
    """The recipe of the zoo model whose local path is `model_dir` (for the train_tiny rule)."""
    from bench.models import load_zoo

    for spec in load_zoo(REPO_ROOT / zoo_path).values():
        if spec.recipe and REPO_ROOT / spec.source.get("path", "") == REPO_ROOT / model_dir:
            return spec.recipe
    raise ValueError(f"no zoo model with a training recipe lives in {model_dir}")
