"""Registered transformers classes for structurally pruned models with per-layer widths.

Owns the `prunebench_llama`, `prunebench_opt`, `prunebench_mamba` and `prunebench_gemma3` model
types. transformers' Llama, OPT, Mamba and Gemma3 configs hold one width for every layer (and OPT ties its head count to
hidden_size), so a model whose layers lost different numbers of heads or channels needs one
extra config field: `layer_units`, per block the number of units of each kind (see
bench.adapters.Coupled). Each class is the stock transformers class plus one step after its
constructor: every block is sliced down to its first `layer_units[i]` units, so the saved
weights load into exactly matching shapes. `register()` (idempotent, called by
bench.zoo.models.load_model) makes plain `AutoModelForCausalLM.from_pretrained(dir)` load them,
with trust_remote_code off:

    from bench.structure.slim_models import register; register()
    model = AutoModelForCausalLM.from_pretrained("results/.../checkpoint")

The global width fields keep the dense model's values; `layer_units` overrides them per layer.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig,
                          LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM, OPTConfig,
                          OPTForCausalLM)

from bench.adapters import adapter_by_arch
from bench.structure.slicing import resize_block

log = logging.getLogger(__name__)


def _apply_layer_units(model: nn.Module, arch: str) -> None:
    """Slice each block of a freshly built model down to config.layer_units (first units kept)."""
    units = getattr(model.config, "layer_units", None)
    if not units:
        return
    adapter = adapter_by_arch(arch)
    blocks = adapter.blocks(model)
    if len(units) != len(blocks):
        raise ValueError(f"config.layer_units lists {len(units)} blocks, the model has {len(blocks)}")
    for block, per_kind in zip(blocks, units):
        for c in adapter.coupled:
            full = int(getattr(model.config, c.config_attrs[0]))
            if per_kind[c.kind] != full:
                resize_block(block, c, full, torch.arange(per_kind[c.kind]))


class PruneBenchLlamaConfig(LlamaConfig):
    model_type = "prunebench_llama"


class PruneBenchOPTConfig(OPTConfig):
    model_type = "prunebench_opt"


class PruneBenchMambaConfig(MambaConfig):
    model_type = "prunebench_mamba"


class PruneBenchGemma3Config(Gemma3TextConfig):
    model_type = "prunebench_gemma3"


class PruneBenchLlamaForCausalLM(LlamaForCausalLM):
    config_class = PruneBenchLlamaConfig

    def __init__(self, config: PruneBenchLlamaConfig) -> None:
        super().__init__(config)
        _apply_layer_units(self, "llama")


class PruneBenchOPTForCausalLM(OPTForCausalLM):
    config_class = PruneBenchOPTConfig

    def __init__(self, config: PruneBenchOPTConfig) -> None:
        super().__init__(config)
        _apply_layer_units(self, "opt")


class PruneBenchMambaForCausalLM(MambaForCausalLM):
    config_class = PruneBenchMambaConfig

    def __init__(self, config: PruneBenchMambaConfig) -> None:
        super().__init__(config)
        _apply_layer_units(self, "mamba")


class PruneBenchGemma3ForCausalLM(Gemma3ForCausalLM):
    config_class = PruneBenchGemma3Config

    def __init__(self, config: PruneBenchGemma3Config) -> None:
        super().__init__(config)
        _apply_layer_units(self, "gemma3")


CLASSES: dict[str, tuple[type, type]] = {
    "llama": (PruneBenchLlamaConfig, PruneBenchLlamaForCausalLM),
    "opt": (PruneBenchOPTConfig, PruneBenchOPTForCausalLM),
    "mamba": (PruneBenchMambaConfig, PruneBenchMambaForCausalLM),
    "gemma3": (PruneBenchGemma3Config, PruneBenchGemma3ForCausalLM),
}
_registered = False


def register() -> None:
    """Make AutoConfig / AutoModelForCausalLM know the prunebench_* types (idempotent)."""
    global _registered
    if _registered:
        return
    for config_cls, model_cls in CLASSES.values():
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)
    _registered = True


def slim_config(base: Any, arch: str, layer_units: list[dict[str, int]]) -> Any:
    """The registered config for `base`'s model with per-layer unit counts."""
    config_cls = CLASSES[arch][0]
    fields = base.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "layer_units"):
        fields.pop(key, None)
    if arch == "mamba":
        fields.pop("intermediate_size", None)     # derived from expand * hidden_size
    config = config_cls(**fields, layer_units=[dict(u) for u in layer_units])
    config._attn_implementation = base._attn_implementation
    return config


@torch.no_grad()
def rebuild(model: nn.Module, config: Any) -> nn.Module:
    """A fresh registered-class model from `config` holding `model`'s (already sliced) weights."""
    register()
    arch = next(a for a, (c, _) in CLASSES.items() if isinstance(config, c))
    model_cls = CLASSES[arch][1]
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    new = model_cls(config).to(dtype=dtype, device=device)
    state = model.state_dict()
    missing, unexpected = new.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight") and config.tie_word_embeddings}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"rebuild: missing {sorted(set(missing) - tied)[:5]} "
                           f"unexpected {sorted(unexpected)[:5]}")
    new.tie_weights()
    new.generation_config = getattr(model, "generation_config", new.generation_config)
    return new.eval()
