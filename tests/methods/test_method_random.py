"""Tests of the random method: the contract every method passes, then its own properties."""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from bench.tools.contract import LayerwiseContract, layer_inputs
from methods import registry
from methods.base import parse_pattern
from methods.random import layer_generator, random_prune


class TestRandom(LayerwiseContract):
    """Registered, hyperparameters checked, patterns exact, end to end on the tiny models."""

    method: ClassVar[str] = "random"
    params: ClassVar[dict[str, Any]] = {}      # hyperparameters for the tiny-model runs


def test_same_count_per_row_and_draws_differ_by_seed_and_layer() -> None:
    w = torch.randn(16, 40)                                                   # [out, in]
    pattern = parse_pattern("unstructured-70")
    a = random_prune(w, pattern, layer_generator(0, "model.layers.0.mlp.up_proj"))
    assert ((~a.keep).sum(1) == 28).all()
    b = random_prune(w, pattern, layer_generator(1, "model.layers.0.mlp.up_proj"))
    c = random_prune(w, pattern, layer_generator(0, "model.layers.1.mlp.up_proj"))
    assert not torch.equal(a.keep, b.keep) and not torch.equal(a.keep, c.keep)
    # the mask never looks at the values
    d = random_prune(w * 100, pattern, layer_generator(0, "model.layers.0.mlp.up_proj"))
    assert torch.equal(a.keep, d.keep)


def test_every_weight_equally_likely_to_go() -> None:
    pattern = parse_pattern("unstructured-50")
    kept = torch.stack([random_prune(torch.ones(8, 32), pattern, layer_generator(s, "l")).keep
                        for s in range(400)]).float().mean(0)                 # [8, 32]
    assert (kept - 0.5).abs().max() < 0.12                 # 400 draws: 3 sigma is 0.075


def test_worse_than_magnitude_at_reconstruction() -> None:
    x = layer_inputs(512, 64, seed=3)                                         # [n, in]
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(7))       # [out, in]
    for slug in ("unstructured-50", "2of4"):
        err = {}
        for name in ("random", "magnitude"):
            pruned = registry.create(name).prune_layer(w, None, parse_pattern(slug)).weight
            err[name] = float(((x @ w.t() - x @ pruned.t()) ** 2).sum())
        assert err["magnitude"] < 0.8 * err["random"], (slug, err)
