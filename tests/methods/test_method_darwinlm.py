"""DarwinLM: the level database, stitching, and a search that beats the uniform start."""
from __future__ import annotations

import math

import pytest
import torch

from methods import level_db
from bench.adapters import adapter_for
from bench.structure import layer_units, structured_params
from methods import registry
from methods.base import ModelData, PruneBenchError, parse_pattern
from tests.conftest import tiny_model

TEXT = torch.randint(0, 128, (64, 64), generator=torch.Generator().manual_seed(1))
SMALL = {"levels": 8, "generations": 3, "offspring": 3, "seqlen": 32,
         "stage_tokens": [64, 128, 256], "train_tokens": [32, 64, 64]}


def _data(tmp_path, key: str) -> ModelData:
    ids = torch.randint(0, 128, (8, 64), generator=torch.Generator().manual_seed(0))
    return ModelData(ids, lambda n, s, seed: TEXT[(torch.arange(n) + seed) % 64, :s],
                     work_dir=tmp_path, model_key=key)


def _method(**params):
    method = registry.create("darwinlm", {**SMALL, **params})
    method.progress = False
    return method


def test_level_db_ladder_and_cache(arch: str, tmp_path) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    ids = _data(tmp_path, arch).calib_ids
    path = tmp_path / "db.safetensors"
    db = level_db.load_or_build(path, model, adapter, ids, 0.01, progress=False)
    units = layer_units(model, adapter)
    for i, per_kind in enumerate(units):
        for kind, n in per_kind.items():
            assert sorted(db.orders[f"{i}.{kind}"].tolist()) == list(range(n))   # a permutation
            same = db.consumer_weights(model, adapter, i, kind, 0)   # level 0: nothing changes
            for name, w in same.items():
                dense = adapter.blocks(model)[i].get_submodule(name).weight
                assert torch.allclose(w, dense, atol=1e-4)
    again = level_db.load_or_build(path, model, adapter, ids, 0.01, progress=False)
    assert all(torch.equal(again.orders[k], db.orders[k]) for k in db.orders)
    rebuilt = level_db.load_or_build(path, model, adapter, ids.flip(0), 0.01, progress=False)
    assert rebuilt.meta["calib_sha256"] != db.meta["calib_sha256"]     # stale cache rebuilt


@pytest.mark.parametrize("slug", ["structured-20", "structured-50"])
def test_targets_reached_and_layout_reported(arch: str, slug: str, tmp_path) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    res = _method(generations=1, offspring=2).prune_model(model, adapter, _data(tmp_path, arch),
                                                          parse_pattern(slug))
    dense = sum(structured_params(model, adapter).values())
    after = sum(structured_params(res.model, adapter).values())
    assert abs(1 - after / dense - parse_pattern(slug).sparsity) <= 0.07   # 8-step ladders
    layout = res.report["layout"]
    assert {k: sum(v) for k, v in layout.items()} == {k: sum(v) for k, v in
                                                      res.report["uniform_start"].items()}
    kept = layer_units(res.model, adapter)
    for i, per_kind in enumerate(res.report["removed_units"]):
        for kind, gone in per_kind.items():
            assert kept[i][kind] == layer_units(model, adapter)[i][kind] - gone


def test_search_beats_the_uniform_start(tmp_path) -> None:
    """Block 0's MLP is nearly silent, block 1's is loud: the search should prune block 0 more."""
    torch.manual_seed(0)
    model = tiny_model("llama")
    adapter = adapter_for(model)
    blocks = adapter.blocks(model)
    with torch.no_grad():
        blocks[0].mlp.down_proj.weight.mul_(0.01)
        blocks[1].mlp.down_proj.weight.mul_(5.0)
    res = _method(generations=4, offspring=4).prune_model(model, adapter, _data(tmp_path, "x"),
                                                          parse_pattern("structured-50"))
    rep = res.report
    assert rep["fitness_selected"] < rep["fitness_uniform"]
    assert rep["layout"]["mlp"][0] > rep["layout"]["mlp"][1]
    best = [h["best_fitness"][-1] for h in rep["history"]]
    assert all(b <= a + 1e-12 for a, b in zip(best, best[1:]))          # elitism: never worse


def test_seeded_search_is_deterministic(tmp_path) -> None:
    model = tiny_model("opt")
    adapter = adapter_for(model)
    runs = [_method(generations=2, offspring=2).prune_model(
        model, adapter, _data(tmp_path, "opt"), parse_pattern("structured-20")) for _ in range(2)]
    assert runs[0].report["layout"] == runs[1].report["layout"]
    ids = torch.randint(0, 128, (1, 16))
    assert torch.equal(runs[0].model(ids).logits, runs[1].model(ids).logits)


def test_a_float16_model_trains_in_float32_and_keeps_its_dtypes(tmp_path) -> None:
    """Candidates of a float16 model are trained with float32 master weights: fitness stays finite
    (plain float16 AdamW gave NaN for every candidate, on an H200 and on CPU)."""
    model = tiny_model("llama").half()
    adapter = adapter_for(model)
    before = {n: t.dtype for n, t in [*model.named_parameters(), *model.named_buffers()]}
    res = _method(generations=1, offspring=2).prune_model(model, adapter, _data(tmp_path, "h"),
                                                          parse_pattern("structured-20"))
    history = [f for h in res.report["history"] for f in h["best_fitness"]]
    assert all(math.isfinite(f) and f >= 0 for f in history + [res.report["fitness_selected"]])
    after = {n: t.dtype for n, t in [*res.model.named_parameters(), *res.model.named_buffers()]}
    assert after == before


def test_bad_hyperparameters_fail_early() -> None:
    for bad in ({"survivors": [2, 1], "stage_tokens": [64, 64, 64]}, {"levels": 1},
                {"stage_tokens": [8, 64, 64]}, {"population": 3}):
        with pytest.raises(PruneBenchError):
            registry.create("darwinlm", {**SMALL, **bad})
