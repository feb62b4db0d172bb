"""Whether a grid cell can run on a model, decided from the model's config alone (no weights).

Owns `zoo_config` (a zoo model's transformers config without loading or building its weights:
a local checkpoint's config.json, a seeded random model's zoo config, the converted GGUF's
config or its `GRID_CONFIGS` snapshot, a hub id's cached config; None when it cannot be had
offline) and the checks the planner and the drivers run before any long work:
`check_lengths` (every sequence length of the protocol and of the methods' hyperparameters
within the model's maximum positions) and `nm_problem` (an N:M pattern whose M does not divide
some prunable layer's input width: the planner drops that cell with this reason).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bench.zoo import models
from bench.adapters import adapter_for
from bench.zoo.materialize import random_config
from bench.packages import work_dir
from bench.zoo.shapes import GRID_CONFIGS, grid_config, meta_model
from bench.zoo import ModelSpec, model_provenance
from methods.base import Method, Pattern, PruneBenchError

log = logging.getLogger(__name__)


def zoo_config(spec: ModelSpec) -> Any | None:
    """The transformers config of zoo model `spec` (see the module doc); None when unknown."""
    from transformers import AutoConfig

    kind = spec.kind
    try:
        if kind == "local":
            return AutoConfig.from_pretrained(models.prepare(spec))
        if kind == "random":
            return random_config(spec)
        if kind == "pypi_gguf":
            cached = work_dir() / "models" / spec.key
            prov = model_provenance(cached) if (cached / "config.json").is_file() else {}
            if prov.get("source", {}).get("file") == spec.source["file"]:
                return AutoConfig.from_pretrained(cached)
            return grid_config(spec.key) if spec.key in GRID_CONFIGS else None
        return AutoConfig.from_pretrained(spec.source["id"], local_files_only=True)
    except (OSError, ValueError) as exc:
        if kind == "local":
            raise
        log.debug("no offline config for %s: %s", spec.key, exc)
        return None


def max_positions(config: Any) -> int | None:
    """The longest sequence the model's position embeddings cover (None: no limit, e.g. Mamba)."""
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _method_lengths(method: Method) -> dict[str, int]:
    params = method.params
    return {f"methods.{method.name}.{f.name}": getattr(params, f.name)
            for f in dataclasses.fields(params)
            if f.name.endswith("seqlen") and isinstance(getattr(params, f.name), int)}


def lengths(cfg: dict[str, Any], methods: list[Method]) -> dict[str, int]:
    """Every sequence length a run of this config feeds a model, by the config key that sets it."""
    out = {"calibration.seqlen": cfg["calibration"]["seqlen"],
           "evaluation.ppl.seqlen": cfg["evaluation"]["ppl"]["seqlen"]}
    zs = cfg["evaluation"].get("zeroshot") or {}
    if zs.get("max_length"):
        out["evaluation.zeroshot.max_length"] = zs["max_length"]
    lat = cfg["evaluation"].get("latency") or {}
    if lat.get("prompt_len"):
        out["evaluation.latency.prompt_len + decode_tokens"] = (lat["prompt_len"]
                                                                + lat.get("decode_tokens", 0))
    for method in methods:
        out.update(_method_lengths(method))
    return out


def check_lengths(cfg: dict[str, Any], model_key: str, config: Any,
                  methods: list[Method]) -> None:
    """One-line PruneBenchError when a sequence length exceeds the model's maximum positions."""
    limit = max_positions(config) if config is not None else None
    if limit is None:
        return
    for where, n in lengths(cfg, methods).items():
        if n > limit:
            raise PruneBenchError(f"config: {where} = {n} exceeds the {limit} positions of "
                                  f"model '{model_key}' (max_position_embeddings)")


def prunable_widths(config: Any) -> dict[str, int]:
    """Input width of every prunable linear of the model of `config` (built on the meta device)."""
    model = meta_model(config)
    return {name: lin.in_features for name, lin in adapter_for(model).prunable(model).items()}


def nm_problem(pattern: Pattern, widths: dict[str, int]) -> str | None:
    """Why N:M `pattern` cannot be applied to layers of these input widths, or None."""
    if pattern.kind != "nm" or pattern.m is None:
        return None
    bad = [(name, w) for name, w in widths.items() if w % pattern.m]
    if not bad:
        return None
    name, width = bad[0]
    return (f"pattern '{pattern.slug}': M={pattern.m} does not divide the input width of "
            f"{len(bad)} prunable layer(s), e.g. {name} ({width})")
