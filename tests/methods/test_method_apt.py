"""APT (methods/apt.py): exact multi-weight updates, least-squares optimality, exact patterns."""
from __future__ import annotations

import pytest
import torch

from methods import registry
from methods.apt import APTParams, _remove_jointly, apt_prune_group, least_squares_rows
from methods.base import LayerStats, PruneBenchError, parse_pattern
from methods.sparsegpt import inverse_hessian_cholesky, sparsegpt_prune


def _inputs(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d ** 0.5 + torch.eye(d)
    return (torch.randn(n, d, generator=g) @ mix) * (torch.rand(d, generator=g) * 3 + 0.2)


def _hessian(x: torch.Tensor) -> torch.Tensor:
    return 2 * x.t() @ x / x.shape[0]


def _err(w: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x.double() @ (w - v).double().t()) ** 2).sum())


def test_least_squares_equals_brute_force() -> None:
    """Kept weights = the least-squares fit of each row's output on the calibration inputs."""
    x = _inputs(400, 24, seed=0).double()
    w = torch.randn(6, 24, generator=torch.Generator().manual_seed(1)).double()
    keep = torch.rand(6, 24, generator=torch.Generator().manual_seed(2)) > 0.5
    got = least_squares_rows(w, _hessian(x), keep).double()
    for r in range(6):
        k = keep[r].nonzero().squeeze(1)
        sol = torch.linalg.lstsq(x[:, k], x @ w[r]).solution       # brute force on X
        torch.testing.assert_close(got[r, k], sol.to(got.dtype), rtol=1e-4, atol=1e-4)
        assert (got[r, ~keep[r]] == 0).all()


def test_joint_removal_matches_closed_form() -> None:
    """On the first group (no frozen columns) the update is dw = -w_Q [Hinv_QQ]^-1 Hinv_Q,:."""
    x = _inputs(300, 16, seed=3)
    h = _hessian(x)
    u = inverse_hessian_cholesky(h, 0.01)
    hinv = u.t() @ u                                                 # (H + damp)^-1
    w = torch.randn(5, 16, generator=torch.Generator().manual_seed(4))
    counts = torch.full((5,), 2)
    removed, coef = _remove_jointly(w[:, :4], u[:4, :4], counts)
    dw = -coef @ u[:4, :]
    for r in range(5):
        q = removed[r].nonzero().squeeze(1)
        assert q.numel() == 2
        expected = -w[r, q] @ torch.linalg.inv(hinv[q][:, q]) @ hinv[q]
        torch.testing.assert_close(dw[r], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close((w[r] + dw[r])[q], torch.zeros(2), atol=1e-5, rtol=0)
        losses = {}                                                   # the chosen pair is optimal
        for a in range(4):
            for b in range(a + 1, 4):
                s = torch.tensor([a, b])
                losses[(a, b)] = float(w[r, s] @ torch.linalg.inv(hinv[s][:, s]) @ w[r, s])
        assert losses[tuple(q.tolist())] <= min(losses.values()) + 1e-6


@pytest.mark.parametrize("slug", ["unstructured-50", "unstructured-70", "2of4", "4of8"])
def test_same_mask_never_worse_than_sparsegpt(slug: str) -> None:
    pattern = parse_pattern(slug)
    for seed in range(3):
        x = _inputs(512, 64, seed=10 + seed)
        w = torch.randn(32, 64, generator=torch.Generator().manual_seed(20 + seed))
        sgpt = sparsegpt_prune(w, _hessian(x), pattern)
        refit = least_squares_rows(w, _hessian(x), sgpt.keep)
        assert _err(w, refit, x) <= _err(w, sgpt.weight, x) * (1 + 1e-6)


@pytest.mark.parametrize("slug", ["unstructured-50", "unstructured-70", "2of4", "4of8"])
def test_patterns_exact_and_error_below_sparsegpt(slug: str) -> None:
    pattern = parse_pattern(slug)
    x = _inputs(1024, 96, seed=30)
    ws = [torch.randn(rows, 96, generator=torch.Generator().manual_seed(rows)) for rows in (40, 24)]
    res = registry.create("apt").prune_group(ws, LayerStats(1024, None, _hessian(x)), pattern,
                                             ["a", "b"])
    for w, r in zip(ws, res):
        assert (r.weight[~r.keep] == 0).all()
        if pattern.kind == "nm":
            kept = r.keep.reshape(w.shape[0], -1, pattern.m).sum(-1)
            assert (kept == pattern.n).all()
        else:
            assert abs(float((~r.keep).float().mean()) - pattern.sparsity) < 1e-3
        assert _err(w, r.weight, x) < _err(w, sparsegpt_prune(w, _hessian(x), pattern).weight, x)


def test_dead_inputs_and_damping_retry(caplog: pytest.LogCaptureFixture) -> None:
    x = _inputs(256, 16, seed=40)
    x[:, 5] = 0.0                                                    # a dead input
    w = torch.randn(8, 16)
    res = apt_prune_group([w], _hessian(x), parse_pattern("2of4"))[0]
    assert (res.weight[:, 5] == 0).all() and torch.isfinite(res.weight).all()
    with pytest.raises(PruneBenchError, match="damping"):
        apt_prune_group([w], -torch.eye(16), parse_pattern("2of4"),
                        APTParams(max_damp_retries=1))
    assert "retrying" in caplog.text


def test_bad_hyperparameters() -> None:
    with pytest.raises(PruneBenchError, match="group"):
        registry.create("apt", {"group": 20})
    with pytest.raises(PruneBenchError, match="unknown hyperparameter"):
        registry.create("apt", {"blocks": 3})


def test_least_squares_chunking_never_changes_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """LSQ_CHUNK_BYTES bounds the batched solve's memory; rows are independent, so a chunk of
    one row gives bit-identical weights to the default chunk."""
    from methods import apt

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    h = x.t() @ x / 256                                          # [in, in]
    w = torch.randn(16, 32, generator=g)                         # [out, in]
    keep = torch.rand(16, 32, generator=g) > 0.5
    want = apt.least_squares_rows(w, h, keep)
    monkeypatch.setattr(apt, "LSQ_CHUNK_BYTES", 1)
    assert torch.equal(apt.least_squares_rows(w, h, keep), want)
