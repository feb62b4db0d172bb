"""Helpers the Snakefile calls at parse time: the effective config file and rule inputs.

Owns: writing the validated config where every job reads it (work/configs/{name}.json, only
rewritten when its content changes, so unchanged protocols cause no reruns), and the input list
of a prune job (the calibration file only for methods that need calibration).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    if registry.get(method).capabilities.needs_calibration:
        inputs.append(f"work/calib/{model}.safetensors")
    return inputs
