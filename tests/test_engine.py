"""Engine: block-by-block outputs equal the model's own hidden states; methods run end to end."""
from __future__ import annotations

import pytest
import torch
import transformers
from conftest import tiny_model

from bench.adapters import ArchAdapter, adapter_by_arch, adapter_for, layer_sparsity
from bench.engine import capture_block_inputs, prune_layerwise
from methods.base import LayerResult, LayerwiseMethod, MethodError, Pattern, parse_pattern
from methods import registry


class NoOpHessian(LayerwiseMethod):
    """Asks for the most expensive statistic and changes nothing."""

    name = "noop-test"
    stat = "hessian"
    capabilities = registry.get("dense").capabilities

    def prune_layer(self, weight, stats, pattern, name="layer"):
        assert stats is not None and stats.hessian is not None and stats.n_tokens > 0
        return LayerResult(weight.clone(), torch.ones_like(weight, dtype=torch.bool))


def _own_block_outputs(model, adapter, ids):
    outs: dict[int, torch.Tensor] = {}
    handles = [blk.register_forward_hook(
        lambda m, a, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o))
        for i, blk in enumerate(adapter.blocks(model))]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return outs


@pytest.mark.parametrize("batch_size,sequential,lockstep",
                         [(4, False, True), (2, True, False), (2, True, True), (6, True, True)])
def test_engine_equals_model_forward(arch, batch_size, sequential, lockstep):
    """Every schedule: block-parallel, sequential one pass per group, sequential lockstep over
    several batches, sequential single batch."""
    model = tiny_model(arch)
    adapter = adapter_for(model)
    ids = torch.randint(0, 128, (6, 32), generator=torch.Generator().manual_seed(1))
    expected = _own_block_outputs(model, adapter, ids)
    got: dict[int, torch.Tensor] = {}
    prune_layerwise(model, adapter, NoOpHessian(), Pattern("dense", "dense", 0.0), ids,
                    batch_size=batch_size, sequential=sequential, progress=False,
                    lockstep=lockstep, on_block_output=lambda i, hs: got.__setitem__(i, torch.cat(hs)))
    assert sorted(got) == sorted(expected) == list(range(len(adapter.blocks(model))))
    for i in expected:
        torch.testing.assert_close(got[i], expected[i], rtol=1e-5, atol=1e-5)


def test_every_method_prunes_every_pattern(arch):
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(2))
    for method_name in ("magnitude", "wanda", "sparsegpt", "apt"):
        for slug in ("unstructured-50", "unstructured-70", "2of4", "4of8"):
            model = tiny_model(arch)
            adapter = adapter_for(model)
            pattern = parse_pattern(slug)
            method = registry.create(method_name)
            prune_layerwise(model, adapter, method, pattern, ids, batch_size=2, progress=False)
            sp = layer_sparsity(model, adapter)
            assert len(sp) == 2 * len(adapter.layer_names())
            lins = adapter.prunable(model)
            for name, s in sp.items():   # per-row counts: tiny rows (Mamba dt_proj, 8) round
                tol = max(0.02, 1.0 / lins[name].in_features)
                assert abs(s - pattern.sparsity) < tol, (method_name, slug, name, s)
            out = model(input_ids=ids[:1]).logits
            assert torch.isfinite(out).all()


def test_sequential_mode_runs(arch):
    model = tiny_model(arch)
    adapter = adapter_for(model)
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(3))
    rep = prune_layerwise(model, adapter, registry.create("sparsegpt"), parse_pattern("2of4"), ids,
                          batch_size=2, sequential=True, progress=False)
    assert all(abs(k - 0.5) < 1e-6 for k in rep.layer_keep.values())


def test_lockstep_equals_one_pass_per_group(arch):
    """Lockstep (one forward per block, batches stopping at every group) accumulates the same
    statistics in the same order as one pass per group: bit-identical pruned weights. One big
    batch agrees up to float summation order."""
    ids = torch.randint(0, 128, (6, 32), generator=torch.Generator().manual_seed(4))
    for method_name in ("wanda", "sparsegpt", "apt"):
        for slug in ("unstructured-50", "2of4"):
            pruned = []
            for batch_size, lockstep in ((2, True), (2, False), (6, True)):
                model = tiny_model(arch)
                adapter = adapter_for(model)
                # APT's exact least squares on 192 tokens amplifies float noise: ridge it here
                params = {"lsq_damp": 0.01} if method_name == "apt" else {}
                prune_layerwise(model, adapter, registry.create(method_name, params),
                                parse_pattern(slug), ids, batch_size=batch_size, sequential=True,
                                progress=False, lockstep=lockstep)
                pruned.append({n: lin.weight.detach().clone()
                               for n, lin in adapter.prunable(model).items()})
            for name, w in pruned[0].items():
                assert torch.equal(w, pruned[1][name]), (method_name, slug, name)
                assert torch.equal(w == 0, pruned[2][name] == 0), (method_name, slug, name)
                torch.testing.assert_close(w, pruned[2][name], rtol=1e-4, atol=1e-5)


def test_lockstep_failure_is_raised_and_unwinds(arch):
    """A method that fails while the batches' forwards are suspended at the group surfaces as
    its own error, and the model is left without hooks."""

    class Boom(NoOpHessian):
        name = "boom-test"

        def prune_layer(self, weight, stats, pattern, name="layer"):
            raise RuntimeError("boom")

    model = tiny_model(arch)
    ids = torch.randint(0, 128, (6, 16), generator=torch.Generator().manual_seed(6))
    blocks = adapter_for(model).blocks_path
    with pytest.raises(MethodError, match=rf"method 'boom-test' .* on layer {blocks}\.0\..* "
                                          rf"failed: RuntimeError: boom") as info:
        prune_layerwise(model, adapter_for(model), Boom(), Pattern("dense", "dense", 0.0), ids,
                        batch_size=2, sequential=True, progress=False)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_sequential_differs_from_block_parallel_only_after_first_group(arch):
    """Sanity of the schedule: the first group sees the same (dense) inputs either way."""
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(5))
    first = [f"{adapter_for(tiny_model(arch)).blocks_path}.0.{n}"
             for n in adapter_for(tiny_model(arch)).groups[0]]
    weights = []
    for sequential in (False, True):
        model = tiny_model(arch)
        adapter = adapter_for(model)
        prune_layerwise(model, adapter, registry.create("sparsegpt"), parse_pattern("2of4"), ids,
                        batch_size=4, sequential=sequential, progress=False)
        weights.append({n: lin.weight.detach().clone() for n, lin in adapter.prunable(model).items()})
    for name in first:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(weights[0][n], weights[1][n]) for n in weights[0] if n not in first)


def _tiny_gemma3() -> tuple[torch.nn.Module, ArchAdapter]:
    """A random Gemma3 alternating sliding-window (window 4) and global layers, and an adapter
    for it written as data in the test (the zoo has no gemma3 entry yet)."""
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(
        "gemma3_text", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, vocab_size=128,
        max_position_embeddings=128, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * 2)
    adapter = ArchAdapter(arch="gemma3", model_types=("gemma3_text",), blocks_path="model.layers",
                          groups=adapter_by_arch("llama").groups)
    return transformers.AutoModelForCausalLM.from_config(config).eval(), adapter


@pytest.mark.parametrize("sequential,lockstep", [(False, True), (True, True), (True, False)])
def test_engine_equals_the_forward_of_a_model_whose_blocks_differ(sequential, lockstep):
    """Sliding-window and global layers get different masks and rotary embeddings from the
    model: the engine hands every block its own keyword arguments, not block 0's."""
    model, adapter = _tiny_gemma3()
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(2))
    expected = _own_block_outputs(model, adapter, ids)
    got: dict[int, torch.Tensor] = {}
    prune_layerwise(model, adapter, NoOpHessian(), Pattern("dense", "dense", 0.0), ids,
                    batch_size=2, sequential=sequential, progress=False, lockstep=lockstep,
                    on_block_output=lambda i, hs: got.__setitem__(i, torch.cat(hs)))
    assert sorted(got) == list(range(4))
    for i in expected:
        torch.testing.assert_close(got[i], expected[i], rtol=1e-5, atol=1e-5)


def test_capture_puts_every_block_forward_back():
    """The capture stubs replace nothing for good: a block's own instance-level forward (as
    accelerate's offloading installs) is restored, and the others use their class's again."""
    model, adapter = _tiny_gemma3()
    blocks = adapter.blocks(model)
    wrapper = blocks[1].forward
    blocks[1].forward = wrapper                     # an instance attribute, like accelerate's
    cap = capture_block_inputs(model, adapter, torch.randint(0, 128, (3, 8)), 2)
    assert [len(k) for k in cap.kwargs] == [2] * 4 and len(cap.hidden) == 2
    assert blocks[1].__dict__["forward"] is wrapper
    assert all("forward" not in b.__dict__ for i, b in enumerate(blocks) if i != 1)
    # sliding-window and global layers were handed different masks
    assert not torch.equal(cap.kwargs[0][0]["position_embeddings"][0],
                           cap.kwargs[1][0]["position_embeddings"][0])
