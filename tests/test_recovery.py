"""LoRA recovery (bench/recovery.py): training, merge back to a plain model, settings validation."""
from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers

from bench.recovery import LoraSettings, lora_recover
from tests.conftest import tiny_model

TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "mamba": ["in_proj", "x_proj", "out_proj"],  # peft refuses out_proj on Mamba: dropped with a warning
    "gemma3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
FAST = LoraSettings(steps=25, batch_size=4, lr=1e-2, dropout=0.0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matmuls: one thread is faster, and much faster on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokens(n: int = 4, seqlen: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 128, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _no_peft(model: torch.nn.Module) -> bool:
    import peft
    return not hasattr(model, "peft_config") and not any(
        isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer) or "lora" in type(m).__name__.lower()
        for m in model.modules()) and not any("lora_" in k for k in model.state_dict())


@functools.cache
def _recovered(arch: str) -> tuple[torch.nn.Module, dict, dict, dict]:
    """One shared recovery run per arch (the tests below only read it)."""
    model = tiny_model(arch)
    model.get_input_embeddings().weight.requires_grad_(False)  # a frozen parameter must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    report = lora_recover(model, TARGETS[arch], _tokens(), FAST, progress=False)
    return model, before, grads, report


def test_loss_decreases(arch: str) -> None:
    report = _recovered(arch)[3]
    assert report["steps"] == FAST.steps and report["tokens_seen"] == FAST.steps * FAST.batch_size * 16
    assert report["loss_last"] < report["loss_first"] - 0.3, report
    assert report["peft"] and report["settings"]["lr"] == FAST.lr and report["seconds"] >= 0
    assert report["target_modules"] == [t for t in TARGETS[arch] if not (arch == "mamba" and t == "out_proj")]


def test_merged_plain_model(arch: str) -> None:
    model, before, _, _ = _recovered(arch)
    after = model.state_dict()
    assert type(model) is type(tiny_model(arch)) and not model.training
    assert list(after) == list(before)
    assert all(after[k].shape == before[k].shape and after[k].dtype == before[k].dtype for k in before)
    assert _no_peft(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(any(t in k for t in TARGETS[arch]) for k in changed), changed
    assert all(p.grad is None for p in model.parameters())


def test_requires_grad_restored(arch: str) -> None:
    model, _, grads, _ = _recovered(arch)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert not model.get_input_embeddings().weight.requires_grad


def test_save_reload_identical_logits(arch: str, tmp_path: Path) -> None:
    model = _recovered(arch)[0]
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    assert "peft" not in (tmp_path / "config.json").read_text()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    ids = _tokens(2, 16, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_mamba_mixers_take_module_path() -> None:
    """Mixers must not see training=True: the fused mamba_ssm kernel would bypass x_proj's LoRA."""
    model = tiny_model("mamba")
    seen: list[tuple[bool, bool]] = []
    model.backbone.layers[0].mixer.register_forward_pre_hook(
        lambda mod, args: seen.append((mod.training, model.training)))
    lora_recover(model, ["x_proj"], _tokens(), LoraSettings(steps=2, lr=1e-2), progress=False)
    assert seen == [(False, True)] * 2
    assert not model.training and not any(m.training for m in model.modules())


def test_pruned_widths_and_half_precision() -> None:
    """Per-layer different MLP widths (structured pruning) and a fp16 model: layout and dtypes kept."""
    model = tiny_model("llama")
    mlp = model.model.layers[0].mlp
    keep = torch.arange(0, 128, 2)
    for name, dim in (("gate_proj", 0), ("up_proj", 0), ("down_proj", 1)):
        old = getattr(mlp, name)
        new = torch.nn.Linear(*(old.in_features, 64) if dim == 0 else (64, old.out_features), bias=False)
        new.weight.data = old.weight.data.index_select(dim, keep).clone()
        setattr(mlp, name, new)
    model.half()
    before = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    lora_recover(model, TARGETS["llama"], _tokens(), LoraSettings(steps=2, lr=1e-2), progress=False)
    assert {k: (v.shape, v.dtype) for k, v in model.state_dict().items()} == before
    assert _no_peft(model)


def test_failed_training_leaves_model_untouched() -> None:
    model = tiny_model("opt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(IndexError):  # token id outside the vocabulary: fails in the first forward
        lora_recover(model, TARGETS["opt"], _tokens() + 1000, LoraSettings(steps=2), progress=False)
    assert _no_peft(model) and not model.training
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("bad", [dict(steps=0), dict(batch_size=0), dict(rank=0), dict(steps=1.5),
                                 dict(lr=0.0), dict(lr=-1e-4), dict(dropout=1.0), dict(dropout=-0.1)])
def test_bad_settings(bad: dict) -> None:
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="LoraSettings"):
        lora_recover(model, TARGETS["llama"], _tokens(), LoraSettings(**bad), progress=False)
    assert _no_peft(model)


def test_bad_inputs() -> None:
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="target_modules"):
        lora_recover(model, [], _tokens(), FAST, progress=False)
    with pytest.raises(ValueError, match="token_ids"):
        lora_recover(model, TARGETS["llama"], _tokens()[0], FAST, progress=False)
    half = tiny_model("llama").half()
    with pytest.raises(ValueError):  # peft: no module named like this; the model is left as it was
        lora_recover(half, ["no_such_proj"], _tokens(), FAST, progress=False)
    assert _no_peft(half) and all(p.dtype == torch.float16 for p in half.parameters())
    with pytest.raises(ValueError, match="Mamba"):
        lora_recover(tiny_model("mamba"), ["out_proj"], _tokens(), FAST, progress=False)


def test_seeded_recovery_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    """LoRA's init and dropout draw from the RNG: seeded per run, two runs give the same weights
    whatever the caller did to the global RNG before, and its state is handed back untouched."""
    settings = LoraSettings(steps=4, batch_size=2, lr=1e-2, dropout=0.1)
    weights = []
    for pre in (1, 2):
        model = tiny_model("llama")           # (seeds the RNG itself)
        torch.manual_seed(pre)                # a different global RNG state before each run
        state = torch.get_rng_state()
        lora_recover(model, TARGETS["llama"], _tokens(), settings, progress=False)
        assert torch.equal(torch.get_rng_state(), state)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
