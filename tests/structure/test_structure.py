"""Structural surgery: coupled units, physically smaller models, save/reload with plain transformers."""
from __future__ import annotations

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from bench.adapters import adapter_for
from bench.structure.slim_models import register
from bench.structure import layer_units, shrink, slice_params, structured_params, total_params
from methods.base import PruneBenchError
from methods.units import allocate, layer_range, removed_fraction
from tests.conftest import TINY_CONFIGS, tiny_model


def _keep(units: list[dict[str, int]], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """A different random subset per block and kind (every block keeps a different count)."""
    g = torch.Generator().manual_seed(seed)
    return [{k: torch.randperm(n, generator=g)[: max(1, n // 2 + i)].sort().values
             for k, n in u.items()} for i, u in enumerate(units)]


@torch.no_grad()
def _zero_removed_inputs(model: torch.nn.Module, keep: list[dict[str, torch.Tensor]]) -> None:
    """Zero the consumers' input columns of every unit NOT kept: the units then contribute nothing."""
    adapter = adapter_for(model)
    units = layer_units(model, adapter)
    for i, block in enumerate(adapter.blocks(model)):
        for c in adapter.coupled:
            n = units[i][c.kind]
            gone = torch.ones(n, dtype=torch.bool)
            gone[keep[i][c.kind]] = False
            for name in c.consumers:
                w = block.get_submodule(name).weight          # [out, n * width]
                w.view(w.shape[0], n, -1)[:, gone] = 0


def test_every_slice_splits_into_units(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    n = layer_units(model, adapter)[0]
    for c in adapter.coupled:
        for t, dim, copies in slice_params(adapter.blocks(model)[0], c):
            assert t.shape[dim] % (copies * n[c.kind]) == 0


def test_removing_zeroed_units_leaves_outputs_unchanged(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    keep = _keep(layer_units(model, adapter))
    ids = torch.randint(0, 128, (2, 24))
    _zero_removed_inputs(model, keep)
    small = shrink(model, adapter, keep)
    with torch.no_grad():
        ref, out = model(ids).logits, small(ids).logits
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    assert layer_units(small, adapter) == [{k: int(v.numel()) for k, v in u.items()} for u in keep]
    assert total_params(small) < total_params(model)


def test_structured_param_count_is_exact(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    units = layer_units(model, adapter)
    before = structured_params(model, adapter)
    keep = _keep(units, seed=1)
    after = structured_params(shrink(model, adapter, keep), adapter)
    for i, u in enumerate(units):
        for k, n in u.items():
            per_unit = before[f"{i}.{k}"] // n
            assert before[f"{i}.{k}"] == per_unit * n
            assert after[f"{i}.{k}"] == per_unit * keep[i][k].numel()


def test_saved_model_reloads_with_plain_from_pretrained(arch: str, tmp_path) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    small = shrink(model, adapter, _keep(layer_units(model, adapter), seed=2))
    small.save_pretrained(tmp_path)
    register()
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config.model_type == f"prunebench_{arch}"
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, small(ids).logits)
    # generation with the cache works with per-layer widths (Mamba's conv/ssm states included)
    out = again.generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 20)


def test_shrinking_twice_composes(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    once = shrink(model, adapter, _keep(layer_units(model, adapter), seed=3))
    twice = shrink(once, adapter, [{k: torch.arange(max(1, n - 1)) for k, n in u.items()}
                                   for u in layer_units(once, adapter)])
    ids = torch.randint(0, 128, (1, 8))
    assert twice(ids).logits.shape == (1, 8, 128)


def test_cannot_remove_every_unit() -> None:
    model = tiny_model("llama")
    adapter = adapter_for(model)
    keep = [{k: torch.arange(n) for k, n in u.items()} for u in layer_units(model, adapter)]
    keep[0]["mlp"] = torch.empty(0, dtype=torch.long)
    with pytest.raises(PruneBenchError, match="every 'mlp' unit"):
        shrink(model, adapter, keep)


def test_allocate_hits_target_within_layer_range() -> None:
    units = [{"attn": 3, "mlp": 1536} for _ in range(30)]          # SmolLM2-135M's layout
    unit_params = [{"attn": 294_912, "mlp": 1728} for _ in range(30)]
    blocks = layer_range(30, 0.125, 0.9375)
    assert blocks == list(range(4, 28))
    for sparsity in (0.2, 0.5):
        remove = allocate(units, unit_params, blocks, sparsity)
        assert abs(removed_fraction(units, unit_params, remove) - sparsity) < 1e-3
        assert all(sum(remove[i].values()) == 0 for i in range(30) if i not in blocks)
        assert all(remove[i]["attn"] < 3 for i in blocks)
    with pytest.raises(PruneBenchError, match="layer range"):
        allocate(units, unit_params, [0], 0.5)


def test_a_query_head_unit_needs_a_single_kv_head() -> None:
    """Gemma3's attention unit is one query head (the KV head shared): with two KV heads,
    dropping query heads unevenly would move heads to another KV group, so shrink refuses."""
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**{**TINY_CONFIGS["gemma3"], "num_key_value_heads": 2})
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    adapter = adapter_for(model)
    keep = [{"attn": torch.tensor([0, 1, 2])} for _ in adapter.blocks(model)]
    with pytest.raises(PruneBenchError, match="'attn' needs num_key_value_heads = 1, this model has 2"):
        shrink(model, adapter, keep)
