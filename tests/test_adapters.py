"""Tests for bench/adapters.py: one adapter per architecture of the zoo, prunable linears that
exist, groups whose members really share their input, structural slices that split evenly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.adapters import ADAPTERS, adapter_by_arch, adapter_for, layer_sparsity
from bench.structure.slicing import layer_units, unit_view
from bench.zoo import ARCHS
from methods.base import PruneBenchError
from tests.conftest import tiny_model


def test_one_adapter_per_architecture_of_the_zoo() -> None:
    assert tuple(ADAPTERS) == ARCHS
    for arch in ARCHS:
        assert adapter_by_arch(arch).arch == arch
    with pytest.raises(PruneBenchError, match="did you mean 'llama'"):
        adapter_by_arch("lama")


def test_the_adapter_is_picked_by_model_type(arch: str) -> None:
    model = tiny_model(arch)
    assert adapter_for(model).arch == arch
    model.config.model_type = "gpt_bigcode"
    with pytest.raises(PruneBenchError, match="no adapter for model_type 'gpt_bigcode'"):
        adapter_for(model)


def test_prunable_linears_exist_in_block_order(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    prunable = adapter.prunable(model)
    n_blocks = len(adapter.blocks(model))
    assert len(prunable) == n_blocks * len(adapter.layer_names())
    assert all(isinstance(lin, nn.Linear) for lin in prunable.values())
    blocks_in_order = [int(name.split(".")[len(adapter.blocks_path.split("."))])
                       for name in prunable]
    assert blocks_in_order == sorted(blocks_in_order)
    assert len(set(map(id, prunable.values()))) == len(prunable)         # no linear twice


def test_members_of_a_group_read_the_same_input(arch: str) -> None:
    """The engine collects one statistic per group: its members' inputs must be identical (a
    tapped linear's input is read from its source's output)."""
    model = tiny_model(arch)
    adapter = adapter_for(model)
    block = adapter.blocks(model)[0]
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name in adapter.layer_names():
        tap = adapter.tap(name)
        if tap is None:
            handles.append(block.get_submodule(name).register_forward_pre_hook(
                lambda m, args, n=name: seen.__setitem__(n, args[0].detach().clone())))
        else:
            width = block.get_submodule(name).in_features
            handles.append(block.get_submodule(tap.source).register_forward_hook(
                lambda m, args, out, n=name, s=tap.start, w=width: seen.__setitem__(
                    n, (out[0] if isinstance(out, tuple) else out)[..., s:s + w].detach().clone())))
    with torch.no_grad():
        model(torch.randint(0, model.config.vocab_size, (2, 12)))
    for h in handles:
        h.remove()
    assert set(seen) == set(adapter.layer_names())
    for group in adapter.groups:
        first = seen[group[0]]
        assert first.shape[-1] == block.get_submodule(group[0]).in_features
        for name in group[1:]:
            assert torch.equal(seen[name], first), (group, name)


def test_structural_slices_split_into_the_configured_units(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    block = adapter.blocks(model)[0]
    units = layer_units(model, adapter)[0]
    for coupled in adapter.coupled:
        n = units[coupled.kind]
        assert n > 0
        found = 0
        for path, dim, copies in coupled.slices:
            try:
                param = block.get_parameter(path)
            except AttributeError:
                continue                                   # a bias the config switched off
            found += 1
            assert unit_view(param, dim, copies, n).shape[0] == n
        assert found > 0, coupled.kind
        for consumer in coupled.consumers:
            assert isinstance(block.get_submodule(consumer), nn.Linear)


def test_layer_sparsity_counts_exact_zeros(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    name, lin = next(iter(adapter.prunable(model).items()))
    with torch.no_grad():
        lin.weight.view(-1)[: lin.weight.numel() // 4] = 0.0
    sp = layer_sparsity(model, adapter)
    assert sp[name] == pytest.approx(0.25, abs=1 / lin.weight.numel())
    assert all(v == 0.0 for k, v in sp.items() if k != name)
