"""LLM-Pruner: Taylor importance against closed forms, budgets, layer range, recovery."""
from __future__ import annotations

import pytest
import torch

from bench.adapters import adapter_for
from bench.structure import layer_units, slice_params, structured_params, unit_view
from methods import registry
from methods.base import ModelData, PruneBenchError, parse_pattern
from methods.llm_pruner import gradient_importance
from tests.conftest import tiny_model


def _data(n: int = 6, seq: int = 32) -> ModelData:
    ids = torch.randint(0, 128, (n, seq), generator=torch.Generator().manual_seed(0))
    # recovery text: two fixed rows repeated, so a few LoRA steps can measurably fit them
    rows = torch.randint(0, 128, (2, 64), generator=torch.Generator().manual_seed(1))
    return ModelData(ids, lambda k, s, seed: rows[torch.arange(k) % 2, :s])


def _method(name: str = "llm_pruner", **params):
    method = registry.create(name, {"seqlen": 32, "n_samples": 4, "layer_start": 0.0,
                                    "layer_end": 1.0, **params})
    method.progress = False
    return method


@pytest.mark.parametrize("importance", ["taylor", "taylor2", "vector"])
def test_structured_targets_reached(arch: str, importance: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    dense = sum(structured_params(model, adapter).values())
    for slug in ("structured-20", "structured-50"):
        res = _method(importance=importance).prune_model(model, adapter, _data(), parse_pattern(slug))
        after = sum(structured_params(res.model, adapter).values())
        assert abs(1 - after / dense - parse_pattern(slug).sparsity) < 0.02
        assert res.model(torch.randint(0, 128, (1, 8))).logits.shape == (1, 8, 128)


def test_taylor_importance_equals_closed_form() -> None:
    model = tiny_model("llama")
    adapter = adapter_for(model)
    ids = _data().calib_ids[:3]
    scores = gradient_importance(model, adapter, ids, "taylor", "sum", progress=False)
    # reference: mean gradient over the samples, then sum |w * g| over every tensor of a unit
    model.zero_grad()
    for row in ids:
        (model(input_ids=row[None], labels=row[None]).loss / len(ids)).backward()
    block, c = adapter.blocks(model)[1], adapter.coupled_kind("mlp")
    n = layer_units(model, adapter)[1]["mlp"]
    ref = sum((unit_view(t.detach(), d, k, n) * unit_view(t.grad, d, k, n)).abs().sum(1)
              for t, d, k in slice_params(block, c))
    assert torch.allclose(scores[1]["mlp"].float(), ref, rtol=1e-4, atol=1e-9)
    model.zero_grad()
    vector = gradient_importance(model, adapter, ids, "vector", "sum", progress=False)
    assert (vector[1]["mlp"] <= scores[1]["mlp"] + 1e-9).all()        # |sum| <= sum |.|
    assert all(p.grad is None for p in model.parameters())


def test_dead_units_go_first() -> None:
    model = tiny_model("opt")
    adapter = adapter_for(model)
    block = adapter.blocks(model)[0]
    with torch.no_grad():                      # channels 0..9 of block 0: all weights zero
        block.fc1.weight[:10] = 0
        block.fc1.bias[:10] = 0
        block.fc2.weight[:, :10] = 0
    res = _method().prune_model(model, adapter, _data(), parse_pattern("structured-20"))
    removed = res.report["removed_units"][0]["mlp"]
    assert removed >= 10
    kept = layer_units(res.model, adapter)[0]["mlp"]
    assert kept == 128 - removed


def test_layer_range_keeps_first_and_last_blocks() -> None:
    model = tiny_model("llama")
    adapter = adapter_for(model)
    res = _method(layer_start=0.5).prune_model(model, adapter, _data(), parse_pattern("structured-20"))
    assert res.report["pruned_blocks"] == [1]
    assert layer_units(res.model, adapter)[0] == layer_units(model, adapter)[0]


def test_recovery_lowers_training_loss_and_returns_a_plain_model(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    res = _method("llm_pruner_lora", lora_steps=16, lora_batch_size=2, lora_seqlen=16,
                  lora_lr=1e-2).prune_model(model, adapter, _data(), parse_pattern("structured-50"))
    rec = res.report["recovery"]
    assert rec["steps"] == 16 and rec["loss_last"] < rec["loss_first"]
    assert not any("lora" in name for name, _ in res.model.named_parameters())
    assert type(res.model).__name__.startswith("PruneBench")


def test_bad_hyperparameters_fail_early() -> None:
    for bad in ({"importance": "hessian"}, {"aggregate": "median"}, {"layer_start": 0.9,
                                                                     "layer_end": 0.5}):
        with pytest.raises(PruneBenchError):
            registry.create("llm_pruner", bad)
    with pytest.raises(PruneBenchError, match="cannot do pattern"):
        registry.create("llm_pruner").check(parse_pattern("2of4"), "llama")
    with pytest.raises(PruneBenchError, match="calibration"):
        _method(seqlen=999).prune_model(tiny_model("llama"), adapter_for(tiny_model("llama")),
                                        _data(), parse_pattern("structured-20"))
