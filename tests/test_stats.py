"""Tests for bench/stats.py: the streaming statistics equal their closed forms, whatever the
batching, through the forward pre-hook too."""
from __future__ import annotations

import torch
from torch import nn

from bench.stats import StatAccumulator


def _correlated_inputs(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d ** 0.5 + torch.eye(d)
    scale = torch.rand(d, generator=g) * 4 + 0.1             # uneven feature scales
    return (torch.randn(n, d, generator=g) @ mix) * scale     # [n, d]


def _accumulate(x: torch.Tensor, kind: str, cuts: list[int]) -> StatAccumulator:
    acc = StatAccumulator(x.shape[-1], kind, torch.device("cpu"))
    for chunk in x.split(cuts):
        acc.add(chunk)
    return acc


def test_hessian_matches_the_closed_form() -> None:
    """The streaming accumulator (BLAS syrk on CPU) equals 2 X^T X / n over all batches."""
    x = _correlated_inputs(300, 48, seed=10)
    acc = StatAccumulator(48, "hessian", torch.device("cpu"))
    for chunk in x.split(70):
        acc.add(chunk.reshape(2, -1, 48) if chunk.shape[0] % 2 == 0 else chunk)   # [..., in]
    stats = acc.finish()
    torch.testing.assert_close(stats.hessian, 2 * x.t() @ x / 300, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(stats.act_sq, (x * x).sum(0), rtol=1e-5, atol=1e-4)
    assert stats.n_tokens == 300 and torch.equal(stats.hessian, stats.hessian.t())


def test_activation_norms_alone_match_the_closed_form() -> None:
    x = _correlated_inputs(200, 32, seed=3)
    stats = _accumulate(x, "act_sq", [50, 150]).finish()
    assert stats.hessian is None and stats.n_tokens == 200
    want = (x.double() ** 2).sum(0).float()                   # float64 sums, rounded once
    assert torch.equal(stats.act_sq, want)


def test_statistics_do_not_depend_on_the_batching() -> None:
    """float64 sums rounded once: the same tokens cut differently give the same float32 bits."""
    x = _correlated_inputs(240, 40, seed=5)
    for kind in ("hessian", "act_sq"):
        a = _accumulate(x, kind, [240]).finish()
        b = _accumulate(x, kind, [7, 100, 33, 100]).finish()
        assert torch.equal(a.act_sq, b.act_sq)
        if kind == "hessian":
            torch.testing.assert_close(a.hessian, b.hessian, rtol=0, atol=0)


def test_the_forward_pre_hook_sees_the_layer_input() -> None:
    x = _correlated_inputs(64, 16, seed=7).reshape(4, 16, 16)  # [batch, seq, in]
    lin = nn.Linear(16, 8)
    acc = StatAccumulator(16, "hessian", torch.device("cpu"))
    handle = lin.register_forward_pre_hook(acc.hook)
    lin(x)
    handle.remove()
    direct = _accumulate(x.reshape(-1, 16), "hessian", [64]).finish()
    hooked = acc.finish()
    assert hooked.n_tokens == 64 and torch.equal(hooked.hessian, direct.hessian)


def test_no_tokens_gives_zero_statistics() -> None:
    stats = StatAccumulator(8, "hessian", torch.device("cpu")).finish()
    assert stats.n_tokens == 0 and not stats.hessian.any() and not stats.act_sq.any()
