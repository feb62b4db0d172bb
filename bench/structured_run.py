"""The structured-pruning parts of a run, kept out of the generic driver (bench.pipeline).

Owns: the `ModelData` a model-level method receives (calibration ids plus seeded text of the
calibration corpus), the structure record written at prune time (per-layer unit counts and
parameter counts, dense and pruned), the structured sparsity measured on the saved weights at
evaluation time (removed fraction of the structured-prunable parameters, per block and kind,
checked against the pattern), and the latency comparison of the pruned model with its dense
original on the same machine (`speed` in the run JSON).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench import data, outputs
from bench.zoo import models
from bench.evaluation import latency as lat
from bench.adapters import ArchAdapter, adapter_for
from bench.data.calibration import load_calibration_for
from bench.packages import work_dir
from bench.structure import describe, structured_params
from bench.structure.depth import kept_layers
from bench.zoo import spec_for
from methods import level_db, registry
from methods.base import ModelData, Pattern, PruneBenchError

log = logging.getLogger(__name__)
TOLERANCE = 0.02      # |achieved - target| allowed for structured patterns (unit granularity)


def model_data(calib_ids: torch.Tensor | None, tok: Any, cfg: dict[str, Any],
               model_key: str) -> ModelData:
    """Calibration ids and a sampler of more text from the calibration corpus (seeded)."""
    corpus_name = cfg["calibration"]["corpus"]
    ids = calib_ids if calib_ids is not None else torch.empty(0, 0, dtype=torch.long)

    def text_ids(n: int, seqlen: int, seed: int) -> torch.Tensor:
        if seed == cfg["calibration"]["seed"]:
            raise PruneBenchError("model data: use a seed other than the calibration seed for "
                                  "extra text, or the 'extra' text repeats the calibration set")
        return data.sample_calibration(tok, data.load_corpus(corpus_name), n, seqlen, seed)

    return ModelData(calib_ids=ids, text_ids=text_ids, work_dir=work_dir(), model_key=model_key)


def level_db_path(model_key: str) -> Path:
    return work_dir() / "darwinlm" / f"{model_key}.safetensors"


def build_level_db(model_key: str, cfg: dict[str, Any], out: Path | None = None,
                   progress: bool = True) -> Path:
    """DarwinLM's level database of a zoo model on its calibration ids (methods.level_db)."""
    percdamp = registry.create("darwinlm", cfg["methods"].get("darwinlm", {})).params.percdamp
    spec = spec_for(cfg, model_key)
    default = out is None
    out = Path(out) if out else level_db_path(model_key)
    outputs.check_target(out, "level database" if default else "--out", "file",
                         level_db.is_level_db, create_parent=default)
    model, tok = models.load_model(models.prepare(spec), models.DTYPES[cfg["engine"]["dtype"]])
    ids, _ = load_calibration_for(model_key, cfg, None, tok)
    level_db.load_or_build(out, model, adapter_for(model), ids, percdamp, progress)
    return out


def structure_record(dense: dict[str, Any], model: nn.Module, adapter: ArchAdapter) -> dict[str, Any]:
    return {"dense": dense, "pruned": describe(model, adapter)}


def structured_sparsity(model: nn.Module, adapter: ArchAdapter, record: dict[str, Any],
                        pattern: Pattern) -> dict[str, Any]:
    """Removed fraction of the structured-prunable parameters, measured on the loaded weights."""
    dense = record["dense"]
    now = describe(model, adapter)
    per_block = structured_params(model, adapter)
    per_layer: dict[str, float] = {}
    # depth-pruned models (bench/structure/depth.py) name the dense block each block was
    kept = kept_layers(model.config, len(now["layer_units"]))
    units_of = dict(zip(kept, now["layer_units"]))
    for i, units_dense in enumerate(dense["layer_units"]):
        units_now = units_of.get(i)                                     # None: block removed
        for kind, n in units_dense.items():
            per_layer[f"{adapter.blocks_path}.{i}.{kind}"] = (
                1.0 - units_now[kind] / n if units_now is not None else 1.0)
    achieved = 1.0 - now["structured_params"] / dense["structured_params"]
    tolerance = TOLERANCE
    if len(kept) < len(dense["layer_units"]):        # whole (equal) blocks went: the target is
        tolerance = max(TOLERANCE, 0.5 / len(dense["layer_units"]) + 1e-9)   # met to half a block
    if abs(achieved - pattern.sparsity) > tolerance:
        raise PruneBenchError(f"structured model removed {achieved:.4f} of the structured "
                              f"parameters, target {pattern.sparsity:.4f} ({pattern.slug})")
    return {"achieved": achieved, "per_layer": per_layer, "prunable_params": dense["structured_params"],
            "structure": {"dense_layer_units": dense["layer_units"], "layer_units": now["layer_units"],
                          "dense_params": dense["total_params"], "params": now["total_params"],
                          "dense_structured_params": dense["structured_params"],
                          "structured_params": now["structured_params"],
                          "blocks_params": sum(per_block.values())}}


def latency(model: nn.Module, model_key: str, cfg: dict[str, Any], dtype: torch.dtype,
            progress: bool) -> dict[str, Any] | None:
    """Prefill tokens/s and decode ms/token of `model` vs the dense zoo model, interleaved."""
    settings = cfg["evaluation"].get("latency")
    if not settings:
        return None
    spec = spec_for(cfg, model_key)
    source = models.prepare(spec)
    dense, _ = models.load_model(source, dtype)
    dense.to(next(model.parameters()).device)
    out = lat.compare(dense, model, progress=progress, **settings)
    return {"kind": "structured_latency", **out}
