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
    # one KV head (like Gemma-3-270M), a sliding-window layer (window 4) then a global one
    "gemma3": dict(model_type="gemma3_text", vocab_size=128, hidden_size=64,
                   intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                   sliding_window=4, layer_types=["sliding_attention", "full_attention"]),
}


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = dict(TINY_CONFIGS[arch])
    config = transformers.AutoConfig.for_model(**cfg)
    model = transformers.AutoModelForCausalLM.from_config(config)
    return model.eval()


@pytest.fixture(params=list(TINY_CONFIGS))
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def install_plugins(target: Path) -> dict[str, str]:
    """pip-install the outside packages of tests/plugins into `target` (a copy of each source
    is built, so the tree stays clean) and return an environment that puts them on the path."""
    import shutil
    import subprocess

    for name in ("example", "broken"):
        src = target.parent / f"src-{name}"
        shutil.copytree(ROOT / "tests" / "plugins" / name, src, dirs_exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--no-build-isolation", "--target", str(target), str(src)],
                       check=True, capture_output=True, text=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which the example plugin (and a broken one) are installed."""
    return install_plugins(tmp_path_factory.mktemp("plugins") / "site")
