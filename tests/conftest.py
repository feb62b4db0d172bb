"""Shared fixtures: tiny random Llama / OPT / Mamba models built from configs (no downloads)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY_CONFIGS = {
    "llama": dict(model_type="llama", vocab_size=128, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=128),
    "opt": dict(model_type="opt", vocab_size=128, hidden_size=64, ffn_dim=128,
                word_embed_proj_dim=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=128, do_layer_norm_before=True),
    # time_step_rank 8 (auto would give 4): dt_proj's input must divide into 4of8 groups
    "mamba": dict(model_type="mamba", vocab_size=128, hidden_size=64, state_size=8,
                  num_hidden_layers=2, expand=2, conv_kernel=4, time_step_rank=8),
}


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = dict(TINY_CONFIGS[arch])
    config = transformers.AutoConfig.for_model(**cfg)
    model = transformers.AutoModelForCausalLM.from_config(config)
    return model.eval()


@pytest.fixture(params=["llama", "opt", "mamba"])
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
