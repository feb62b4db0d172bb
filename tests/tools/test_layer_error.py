"""bench.tools.layer_error: one engine run compares methods on identical layer inputs."""
from __future__ import annotations

import torch
from conftest import tiny_model

from bench.adapters import adapter_for
from bench.engine import prune_layerwise
from bench.tools.layer_error import Compare, relative_error, summarize
from methods import registry
from methods.base import parse_pattern


def test_relative_error_closed_form():
    x = torch.randn(50, 6, dtype=torch.float64)
    h = 2 * x.T @ x / 50
    w, new = torch.randn(3, 6), torch.randn(3, 6)
    expected = ((x @ (w - new).double().T) ** 2).sum() / ((x @ w.double().T) ** 2).sum()
    assert abs(relative_error(w, new, h) - float(expected)) < 1e-9


def test_compare_records_every_layer_and_keeps_the_first_methods_weights():
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(0))
    pattern = parse_pattern("2of4")
    model = tiny_model("llama")
    adapter = adapter_for(model)
    cmp = Compare([registry.create("sparsegpt"), registry.create("apt", {"lsq_damp": 0.01})])
    prune_layerwise(model, adapter, cmp, pattern, ids, batch_size=4, sequential=True,
                    progress=False)
    ref = tiny_model("llama")
    prune_layerwise(ref, adapter, registry.create("sparsegpt"), pattern, ids, batch_size=4,
                    sequential=True, progress=False)
    names = list(adapter.prunable(model))
    assert [r["layer"] for r in cmp.rows] == names
    assert all(0 < r["sparsegpt"] < 1 and 0 < r["apt"] < 1 for r in cmp.rows)
    for (name, lin), lin_ref in zip(adapter.prunable(model).items(), adapter.prunable(ref).values()):
        assert torch.equal(lin.weight, lin_ref.weight), name
    s = summarize(cmp.rows, "sparsegpt", "apt")
    assert s["layers"] == len(names) and 0 <= s["apt_wins"] <= len(names)
