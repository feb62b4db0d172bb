"""Mamba: our exact selective scan, the dt_proj input tap, training and the load-time path log."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

import transformers.models.mamba.modeling_mamba as mm
from bench.zoo import mamba_scan
from bench.adapters import adapter_for
from bench.engine import prune_layerwise
from methods import registry
from methods.base import LayerResult, LayerwiseMethod, Pattern, parse_pattern


def naive_scan(x, dt, A, B, C, D, z, bias):
    """The recurrence written out step by step in the input's precision (float64 here)."""
    dt = F.softplus(dt + bias[:, None])                              # [b, d, T]
    h = torch.zeros(x.shape[0], x.shape[1], A.shape[1], dtype=x.dtype)
    ys = []
    for t in range(x.shape[2]):
        h = torch.exp(dt[:, :, t, None] * A) * h + dt[:, :, t, None] * B[:, None, :, t] * x[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1) + x * D[None, :, None]
    return y * F.silu(z), h


def _inputs(b, d, n, T, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_()  # noqa: E731
    A = (-torch.rand(d, n, generator=g, dtype=dtype) * 4).requires_grad_()
    return mk(b, d, T), mk(b, d, T), A, mk(b, n, T), mk(b, n, T), mk(d), mk(b, d, T), mk(d)


@pytest.mark.parametrize("T", [1, 7, mamba_scan.CHUNK, 2 * mamba_scan.CHUNK + 5])
def test_scan_and_its_gradients_equal_the_recurrence(T):
    """float64: forward, last state and all eight gradients agree to rounding (several chunks)."""
    args = _inputs(2, 6, 4, T, torch.float64)
    y1, h1 = naive_scan(*args)
    x, dt, A, B, C, D, z, bias = args
    y2, h2 = mamba_scan.selective_scan(x, dt, A, B, C, D=D, z=z, delta_bias=bias,
                                       delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(y2, y1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, h1, rtol=1e-12, atol=1e-12)
    wy, wh = torch.randn_like(y1), torch.randn_like(h1)
    g1 = torch.autograd.grad((y1 * wy).sum() + (h1 * wh).sum(), args)
    g2 = torch.autograd.grad((y2 * wy).sum() + (h2 * wh).sum(), args)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_model_logits_match_transformers_own_scan(monkeypatch):
    """The whole tiny model with our scan vs transformers' torch scan: within 1e-5."""
    model = tiny_model("mamba")
    ids = torch.randint(0, 128, (2, 80), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(mm, "mamba_selective_scan", mamba_scan.reference_scan())
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    monkeypatch.setattr(mm, "mamba_selective_scan", mamba_scan.selective_scan)
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    assert (ours - ref).abs().max().item() < 1e-5


def test_install_logs_the_path_once(caplog):
    mamba_scan._STATE["logged"] = False
    with caplog.at_level(logging.INFO, logger="bench.zoo.mamba_scan"):
        path = mamba_scan.install()
        mamba_scan.install()
    assert "no mamba-ssm" in path or "CUDA" in path
    assert sum("Mamba: using" in r.message for r in caplog.records) == 1


class _Recorder(LayerwiseMethod):
    name = "record-test"
    stat = "hessian"
    capabilities = registry.get("dense").capabilities

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, torch.Tensor] = {}

    def prune_layer(self, weight, stats, pattern, name="layer"):
        self.seen[name] = stats.hessian.clone()
        return LayerResult(weight.clone(), torch.ones_like(weight, dtype=torch.bool))


def test_dt_proj_statistic_is_its_true_input():
    """dt_proj's forward never runs (the mixer uses its weight directly), so the engine taps
    x_proj's output: the Hessian it gets must be that of x_proj(...)[..., :rank]."""
    model = tiny_model("mamba")
    adapter = adapter_for(model)
    ids = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(1))
    mixer = adapter.blocks(model)[1].mixer
    rank = mixer.dt_proj.in_features
    seen: list[torch.Tensor] = []
    h = mixer.x_proj.register_forward_hook(lambda m, a, o: seen.append(o[..., :rank].detach()))
    with torch.no_grad():
        model(input_ids=ids)
    h.remove()
    x = seen[0].reshape(-1, rank).double()
    expected = 2 * x.T @ x / x.shape[0]
    rec = _Recorder()
    prune_layerwise(model, adapter, rec, Pattern("dense", "dense", 0.0), ids, batch_size=3,
                    sequential=True, progress=False)
    got = rec.seen["backbone.layers.1.mixer.dt_proj"].double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "apt"])
def test_every_layer_wise_method_prunes_mamba_2of4(method):
    model = tiny_model("mamba")
    adapter = adapter_for(model)
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(2))
    prune_layerwise(model, adapter, registry.create(method), parse_pattern("2of4"),
                    ids, batch_size=2, sequential=True, progress=False)
    for name, lin in adapter.prunable(model).items():
        groups = (lin.weight != 0).reshape(lin.out_features, -1, 4).sum(-1)
        assert (groups <= 2).all(), name
    assert model.backbone.layers[0].mixer.conv1d.weight.ne(0).all()   # conv1d stays dense
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids[:1]).logits).all()


def test_mamba_trains_and_ships_a_loadable_model(tmp_path):
    """bench.train --arch mamba: the loss falls, the artefact reloads as MambaForCausalLM."""
    from test_train import TEXT, tiny_recipe
    from transformers import AutoModelForCausalLM

    from bench.train import Trainer, _finish, heldout_ppl, train_chunks, train_tokenizer

    torch.manual_seed(0)
    r = tiny_recipe(arch="mamba", hidden_size=32, num_layers=2, state_size=4, steps=30)
    tok = train_tokenizer(TEXT, r.vocab_size, tmp_path, 64)
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])  # [N]
    t = Trainer(r, tok, train_chunks(ids, r.seqlen))
    before = heldout_ppl(t.model, ids[:512], r.eval_seqlen)
    losses = [t.step() for _ in range(r.steps)]
    after = heldout_ppl(t.model, ids[:512], r.eval_seqlen)
    assert sum(losses[-5:]) < sum(losses[:5]) and after < before / 2
    _finish(r, tmp_path, t.model, "0" * 64, t.state, after, 512, len(tok), "test")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert model.config.model_type == "mamba"
    assert heldout_ppl(model.float(), ids[:512], r.eval_seqlen) == pytest.approx(after, rel=1e-3)


def test_pattern_check_allows_per_row_rounding_on_narrow_layers():
    """dt_proj has few inputs (8 here, 16 in mamba-tiny): 70% per row is round(5.6) = 6 of 8."""
    from bench.evaluation.evaluate import check_pattern

    from methods.base import PruneBenchError

    model = tiny_model("mamba")
    adapter = adapter_for(model)
    pattern = parse_pattern("unstructured-70")
    per_layer = {name: 0.7 for name in adapter.prunable(model)}
    dt = "backbone.layers.0.mixer.dt_proj"
    check_pattern(model, adapter, pattern, {**per_layer, dt: 0.75})          # 6 of 8: nearest
    with pytest.raises(PruneBenchError, match="dt_proj"):
        check_pattern(model, adapter, pattern, {**per_layer, dt: 0.5})       # 4 of 8: too few
    with pytest.raises(PruneBenchError, match="in_proj"):                      # 64 wide: strict
        check_pattern(model, adapter, pattern,
                      {**per_layer, "backbone.layers.0.mixer.in_proj": 0.68})
