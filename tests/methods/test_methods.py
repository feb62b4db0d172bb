"""Properties of the layer-wise methods on random matrices: exact patterns, closed forms, ordering."""
from __future__ import annotations

import pytest
import torch

from methods import registry
from methods.base import LayerStats, PruneBenchError, parse_pattern
from methods.magnitude import magnitude_prune
from methods.sparsegpt import sparsegpt_prune
from methods.wanda import wanda_prune


def _correlated_inputs(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d ** 0.5 + torch.eye(d)
    scale = torch.rand(d, generator=g) * 4 + 0.1             # uneven feature scales
    return (torch.randn(n, d, generator=g) @ mix) * scale     # [n, d]


def _stats(x: torch.Tensor) -> LayerStats:
    return LayerStats(n_tokens=x.shape[0], act_sq=(x * x).sum(0), hessian=2 * x.t() @ x / x.shape[0])


def _recon_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ w.t() - x @ w_hat.t()) ** 2).sum())


@pytest.mark.parametrize("slug", ["2of4", "4of8", "1of4"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_exact_nm_structure(method: str, slug: str) -> None:
    pattern = parse_pattern(slug)
    x = _correlated_inputs(256, 64)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1))
    res = registry.create(method).prune_layer(w, _stats(x), pattern)
    groups = (res.weight != 0).reshape(48, 64 // pattern.m, pattern.m).sum(-1)
    assert (groups <= pattern.n).all()
    keep_groups = res.keep.reshape(48, 64 // pattern.m, pattern.m).sum(-1)
    assert (keep_groups == pattern.n).all()
    assert torch.equal(res.weight == 0, ~res.keep) or (res.weight[~res.keep] == 0).all()


def test_wanda_per_row_sparsity_exact() -> None:
    x = _correlated_inputs(128, 100)
    w = torch.randn(30, 100)
    for slug, k in (("unstructured-50", 50), ("unstructured-70", 70), ("unstructured-60", 60)):
        res = wanda_prune(w, _stats(x).act_sq, parse_pattern(slug))
        assert ((~res.keep).sum(dim=1) == k).all()
        assert ((res.weight == 0).sum(dim=1) == k).all()


def test_wanda_uses_activation_norms() -> None:
    w = torch.ones(2, 4)
    act_sq = torch.tensor([1.0, 100.0, 4.0, 9.0])
    res = wanda_prune(w, act_sq, parse_pattern("unstructured-50"))
    assert res.keep.tolist() == [[False, True, False, True]] * 2


def test_magnitude_equals_closed_form() -> None:
    w = torch.randn(37, 53, generator=torch.Generator().manual_seed(4))
    res = magnitude_prune(w, parse_pattern("unstructured-60"))
    k = round(w.numel() * 0.6)
    thresh = w.abs().flatten().sort().values[k - 1]
    expected = torch.where(w.abs() > thresh, w, torch.zeros_like(w))
    torch.testing.assert_close(res.weight, expected)
    assert int((res.weight == 0).sum()) == k
    nm = magnitude_prune(w[:, :52], parse_pattern("2of4")).weight.reshape(37, 13, 4)
    top2 = w[:, :52].abs().reshape(37, 13, 4).topk(2, dim=-1).indices
    expected_nm = torch.zeros_like(nm).scatter_(-1, top2, w[:, :52].reshape(37, 13, 4).gather(-1, top2))
    torch.testing.assert_close(nm, expected_nm)


@pytest.mark.parametrize("slug", ["unstructured-50", "unstructured-70", "2of4", "4of8"])
def test_sparsegpt_reconstructs_better(slug: str) -> None:
    pattern = parse_pattern(slug)
    x = _correlated_inputs(512, 128, seed=5)
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(6))
    stats = _stats(x)
    err = {name: _recon_error(w, registry.create(name).prune_layer(w, stats, pattern).weight, x)
           for name in ("magnitude", "wanda", "sparsegpt")}
    assert err["sparsegpt"] < err["wanda"] < err["magnitude"] * 1.0001, err
    sp = (sparsegpt_prune(w, stats.hessian, pattern).weight == 0).float().mean()
    assert abs(float(sp) - pattern.sparsity) < 1e-3


def test_sparsegpt_unstructured_exact_per_block() -> None:
    x = _correlated_inputs(256, 256, seed=7)
    w = torch.randn(16, 256)
    res = sparsegpt_prune(w, _stats(x).hessian, parse_pattern("unstructured-50"), blocksize=128)
    for b in range(2):
        assert int((~res.keep[:, b * 128:(b + 1) * 128]).sum()) == 16 * 64


def test_sparsegpt_dead_inputs_and_damping_retry(caplog: pytest.LogCaptureFixture) -> None:
    w = torch.randn(8, 16)
    h = torch.eye(16)
    h[3, 3] = 0.0                                   # a dead input: weight zeroed, no failure
    res = sparsegpt_prune(w, h, parse_pattern("2of4"))
    assert (res.weight[:, 3] == 0).all()
    bad = -torch.eye(16)                            # never positive definite
    with pytest.raises(PruneBenchError, match="damping"):
        sparsegpt_prune(w, bad, parse_pattern("2of4"), max_damp_retries=2)
    assert "retrying" in caplog.text


def test_nm_indivisible_rejected() -> None:
    w = torch.randn(4, 10)
    with pytest.raises(PruneBenchError, match="not divisible"):
        magnitude_prune(w, parse_pattern("2of4"))


@pytest.mark.parametrize("slug,msg", [("unstructured-0", "sparsity"), ("unstructured-100", "sparsity"),
                                      ("unstructured-150", "sparsity"), ("4of4", "0 < N < M"),
                                      ("2of4x", "unknown pattern"), ("unstrctured-50", "did you mean")])
def test_bad_patterns(slug: str, msg: str) -> None:
    with pytest.raises(PruneBenchError, match=msg):
        parse_pattern(slug)


def test_pattern_parse() -> None:
    p = parse_pattern("2of4")
    assert (p.kind, p.n, p.m, p.sparsity) == ("nm", 2, 4, 0.5)
    assert parse_pattern("unstructured-70").sparsity == pytest.approx(0.7)
    assert parse_pattern("dense").kind == "dense"


@pytest.mark.parametrize("slug", ["unstructured-50", "2of4", "4of8"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_group_pruning_equals_layer_by_layer(method: str, slug: str) -> None:
    """prune_group (SparseGPT stacks q/k/v into one solve) must equal each layer pruned alone."""
    pattern = parse_pattern(slug)
    stats = _stats(_correlated_inputs(512, 128, seed=8))
    g = torch.Generator().manual_seed(9)
    weights = [torch.randn(rows, 128, generator=g) for rows in (64, 16, 16)]
    m = registry.create(method)
    together = m.prune_group(weights, stats, pattern, ["q", "k", "v"])
    for w, res in zip(weights, together):
        alone = m.prune_layer(w, stats, pattern)
        assert torch.equal(res.keep, alone.keep)
        torch.testing.assert_close(res.weight, alone.weight, rtol=1e-4, atol=1e-5)
        if pattern.kind == "unstructured":                # each layer keeps its own sparsity
            assert abs(float((~res.keep).float().mean()) - pattern.sparsity) < 1e-3
