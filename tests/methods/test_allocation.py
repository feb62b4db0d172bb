"""OWL, the non-uniform layer allocation (methods/allocation.py, bench/allocation.py): the
allocation follows the outlier ratios and meets the global target exactly; `<method>_owl`
variants pass the method contract end to end (per-layer sparsities checked on saved weights)."""
from __future__ import annotations

import pytest
import torch

from bench.adapters import adapter_for
from bench.allocation import owl_allocation, owl_ratios
from bench.engine import prune_layerwise
from bench.tools.contract import contract_for
from methods import registry
from methods.allocation import block_patterns, outlier_ratio, owl_sparsities
from methods.base import PruneBenchError, parse_pattern
from methods.wanda import wanda_scores
from tests.conftest import tiny_model


def test_outlier_ratio_closed_form() -> None:
    # 10 scores, mean (9 * 1 + 91) / 10 = 10: with m = 5 only 91 is above 50; with m = 0.5, 91 too
    scores = [torch.ones(3, 3), torch.tensor([91.0])]
    assert outlier_ratio(scores, 5.0) == pytest.approx(0.1)
    assert outlier_ratio(scores, 0.05) == pytest.approx(1.0)
    assert outlier_ratio([torch.ones(4)], 1.0) == 0.0                     # none strictly above


def test_owl_sparsities_follow_the_ratios_and_meet_the_target() -> None:
    ratios, sizes = [0.010, 0.030, 0.020, 0.050], [100, 100, 300, 100]
    s = owl_sparsities(ratios, 0.7, 0.08, sizes)
    order = sorted(range(4), key=lambda b: ratios[b])
    assert [s[b] for b in order] == sorted(s, reverse=True)                 # more outliers, less pruned
    assert max(s) - min(s) == pytest.approx(2 * 0.08)
    assert sum(x * w for x, w in zip(s, sizes)) / sum(sizes) == pytest.approx(0.7, abs=1e-12)
    # equal sizes: the reference's formula, 1 - (r - mean r + 1 - target)
    d = torch.tensor(ratios)
    r = (d - d.min()) / (d.max() - d.min()) * 0.16
    want = 1 - (r - r.mean() + 0.3)
    assert owl_sparsities(ratios, 0.7, 0.08) == pytest.approx(want.tolist(), abs=1e-6)
    assert owl_sparsities([0.02] * 3, 0.5, 0.08) == [0.5] * 3               # no spread: uniform
    with pytest.raises(PruneBenchError, match="outside"):
        owl_sparsities([0.0, 1.0], 0.95, 0.08)


def test_block_patterns() -> None:
    u50 = parse_pattern("unstructured-50")
    assert block_patterns(u50, 2, None) == [u50, u50]
    assert [p.sparsity for p in block_patterns(u50, 2, [0.4, 0.6])] == [0.4, 0.6]
    with pytest.raises(PruneBenchError, match="unstructured"):
        block_patterns(parse_pattern("2of4"), 2, [0.5, 0.5])


def test_variants_of_any_unstructured_layerwise_method() -> None:
    for base in ("magnitude", "wanda", "sparsegpt", "apt", "ria"):
        cls = registry.get(base + "_owl")
        assert cls.allocation == "owl" and cls.capabilities.kinds == {"unstructured"}
        assert cls.capabilities.needs_calibration and registry.origin(base + "_owl") == registry.origin(base)
    assert registry.create("sparsegpt_owl", {"blocksize": 64, "owl_m": 7.0}).params.blocksize == 64
    assert "wanda_owl" not in registry.available()                           # made on demand
    with pytest.raises(PruneBenchError, match="unknown method"):
        registry.get("llm_pruner_owl")                                       # not layer-wise
    with pytest.raises(PruneBenchError, match="owl_lambda"):
        registry.create("wanda_owl", {"owl_lambda": 0.7})


@pytest.mark.parametrize("arch", ["llama", "mamba"])
def test_owl_on_a_tiny_model(arch: str) -> None:
    """The ratios are those of the dense model's Wanda scores; the pruned blocks carry their
    allocated sparsity and the prunable weights together exactly the target."""
    model = tiny_model(arch)
    adapter = adapter_for(model)
    ids = torch.randint(0, model.config.vocab_size, (8, 32), generator=torch.Generator().manual_seed(0))
    method = registry.create("wanda_owl", {"owl_m": 3.0, "owl_lambda": 0.1})
    pattern = parse_pattern("unstructured-60")
    ratios, sizes = owl_ratios(model, adapter, ids, 4, 3.0, progress=False)
    assert len(ratios) == len(adapter.blocks(model)) and len(set(ratios)) > 1
    alloc = owl_allocation(model, adapter, method, pattern, ids, 4, progress=False)
    assert alloc["outlier_ratio"] == ratios and alloc["block_params"] == sizes
    prune_layerwise(model, adapter, method, pattern, ids, 4, progress=False,
                    block_sparsity=alloc["block_sparsity"])
    zeros = total = 0
    for bi, block in enumerate(adapter.blocks(model)):
        n = z = 0
        for group in adapter.groups:
            for name in group:
                w = block.get_submodule(name).weight
                n, z = n + w.numel(), z + int((w == 0).sum())
        widest = min(block.get_submodule(g[0]).in_features for g in adapter.groups)
        assert abs(z / n - alloc["block_sparsity"][bi]) <= 0.5 / widest + 1e-9
        zeros, total = zeros + z, total + n
    assert abs(zeros / total - 0.6) <= 0.5 / 16 + 1e-9


def test_ratios_are_wanda_outliers_of_the_dense_block() -> None:
    """Block 0's ratio equals the share of its layers' Wanda scores above m x mean, scored on
    the block's own dense inputs."""
    model = tiny_model("llama")
    adapter = adapter_for(model)
    ids = torch.randint(0, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(1))
    acts: dict[str, torch.Tensor] = {}
    block = adapter.blocks(model)[0]
    hooks = [block.get_submodule(name).register_forward_pre_hook(
        lambda mod, args, n=name: acts.__setitem__(n, acts.get(n, 0) + args[0].pow(2).flatten(0, -2).sum(0)))
        for group in adapter.groups for name in group]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    scores = [wanda_scores(block.get_submodule(n).weight, acts[n]) for g in adapter.groups for n in g]
    ratios, _ = owl_ratios(model, adapter, ids, 2, 2.0, progress=False)
    assert ratios[0] == pytest.approx(outlier_ratio(scores, 2.0), abs=1e-3)


class TestContract_wanda_owl(contract_for("wanda_owl")):
    method = "wanda_owl"
    params = {"owl_m": 3.0}


class TestContract_sparsegpt_owl(contract_for("sparsegpt_owl")):
    method = "sparsegpt_owl"
    archs = ("llama",)
