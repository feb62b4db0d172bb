"""methods.structured_obs: greedy OBS unit removal agrees with closed-form reconstruction."""
from __future__ import annotations

import pytest
import torch

from methods.structured_obs import (damp_hessian, kept_units, obs_remove, reconstruct,
                                    reconstruction_error, removal_order, scatter_units)


def _problem(out: int = 12, n_in: int = 16, n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # correlated inputs, so the OBS update matters
    x = torch.randn(n, n_in, generator=g, dtype=torch.float64) @ \
        torch.randn(n_in, n_in, generator=g, dtype=torch.float64)
    w = torch.randn(out, n_in, generator=g, dtype=torch.float64)
    h = 2 * x.T @ x / n
    return w, h, x


def test_damp_hessian_adds_scaled_identity_and_fixes_dead_inputs():
    h = torch.diag(torch.tensor([2.0, 0.0, 4.0]))
    d = damp_hessian(h, 0.1)
    mean = (2 + 1 + 4) / 3
    assert torch.allclose(torch.diag(d), torch.tensor([2.0, 1.0, 4.0]) + 0.1 * mean)
    assert d.dtype == h.dtype


def test_reconstruct_equals_least_squares():
    w, h, x = _problem()
    keep = torch.tensor([0, 3, 5, 6, 9, 11, 14])
    got = reconstruct(w, h, keep, unit_cols=1, percdamp=0.0)
    # least squares: min_V || X W^T - X_K V^T ||
    ref = torch.linalg.lstsq(x[:, keep], x @ w.T).solution.T
    assert got.shape == (12, 7)
    assert torch.allclose(got, ref, rtol=1e-8, atol=1e-8)


def test_reconstruct_unit_order_and_dtype():
    w, h, _ = _problem()
    got = reconstruct(w.float(), h.float(), torch.tensor([3, 1]), unit_cols=4)
    ref = reconstruct(w.float(), h.float(), torch.tensor([1, 3]), unit_cols=4)
    assert got.dtype == torch.float32 and got.shape == (12, 8)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("unit_cols", [1, 2, 4])
def test_sequential_obs_ends_at_reconstruct_of_the_complement(unit_cols):
    w, h, _ = _problem()
    n_units = 16 // unit_cols
    k = n_units // 2
    order, errors, w_seq = obs_remove(w, h, unit_cols, percdamp=0.01, max_remove=k)
    keep = kept_units(order, k, n_units)
    w_rec = scatter_units(reconstruct(w, h, keep, unit_cols, 0.01), keep, unit_cols, n_units)
    # same weights, hence same error (under the raw and the damped Hessian alike)
    assert torch.allclose(w_seq, w_rec, rtol=1e-6, atol=1e-8)
    err_seq = reconstruction_error(w, w_seq, h)
    assert err_seq == pytest.approx(reconstruction_error(w, w_rec, h), rel=1e-4)
    # the step errors add up to the error under the damped Hessian
    hd = damp_hessian(h, 0.01)
    assert float(errors.double().sum()) == pytest.approx(reconstruction_error(w, w_seq, hd),
                                                         rel=1e-4)
    removed = torch.cat([torch.arange(u * unit_cols, (u + 1) * unit_cols) for u in order])
    assert torch.all(w_seq[:, removed] == 0)


@pytest.mark.parametrize("unit_cols", [1, 4])
def test_first_greedy_pick_is_the_brute_force_best_unit(unit_cols):
    w, h, _ = _problem(seed=1)
    n_units = 16 // unit_cols
    hd = damp_hessian(h, 0.01)
    errs = []
    for u in range(n_units):
        keep = torch.tensor([v for v in range(n_units) if v != u])
        full = scatter_units(reconstruct(w, h, keep, unit_cols), keep, unit_cols, n_units)
        errs.append(reconstruction_error(w, full, hd))
    order, errors = removal_order(w, h, unit_cols, max_remove=1)
    assert int(order[0]) == min(range(n_units), key=errs.__getitem__)
    assert float(errors[0]) == pytest.approx(min(errs), rel=1e-4)


@pytest.mark.parametrize("unit_cols", [1, 2])
def test_ladder_errors_are_non_decreasing(unit_cols):
    w, h, _ = _problem(seed=2)
    n_units = 16 // unit_cols
    order, errors = removal_order(w, h, unit_cols)
    assert sorted(order.tolist()) == list(range(n_units))
    assert torch.all(errors >= -1e-6)
    ladder = []
    for level in range(n_units + 1):
        keep = kept_units(order, level, n_units)
        full = scatter_units(reconstruct(w, h, keep, unit_cols), keep, unit_cols, n_units)
        ladder.append(reconstruction_error(w, full, h))
    assert ladder[0] == pytest.approx(0.0, abs=1e-6 * ladder[-1])
    assert all(b >= a - 1e-9 * ladder[-1] for a, b in zip(ladder, ladder[1:]))
    assert ladder[-1] == pytest.approx(reconstruction_error(w, torch.zeros_like(w), h))


@pytest.mark.parametrize("unit_cols", [1, 4])
def test_obs_beats_zeroing_the_same_units(unit_cols):
    w, h, _ = _problem(seed=3)
    n_units = 16 // unit_cols
    for k in range(1, n_units):
        order, _, w_seq = obs_remove(w, h, unit_cols, max_remove=k)
        zeroed = w.clone()
        for u in order.tolist():
            zeroed[:, u * unit_cols:(u + 1) * unit_cols] = 0
        assert reconstruction_error(w, w_seq, h) <= reconstruction_error(w, zeroed, h) + 1e-9


def test_dead_inputs_are_removed_first_for_free():
    w, h, _ = _problem(seed=4)
    h[5, :] = 0
    h[:, 5] = 0
    order, errors, w_new = obs_remove(w.float(), h.float(), unit_cols=1, max_remove=3)
    assert int(order[0]) == 5 and float(errors[0]) == 0.0
    assert w_new.dtype == torch.float32 and torch.isfinite(w_new).all()
    full = scatter_units(reconstruct(w, h, kept_units(order, 3, 16), 1), kept_units(order, 3, 16),
                         1, 16)
    assert torch.isfinite(full).all() and torch.all(full[:, 5] == 0)


def test_large_single_column_problem_is_fast():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 512, generator=g)
    order, errors = removal_order(torch.randn(256, 512, generator=g), 2 * x.T @ x / 2048, 1)
    assert order.numel() == 512 and len(set(order.tolist())) == 512


def test_bad_shapes_raise():
    w, h, _ = _problem()
    with pytest.raises(ValueError):
        removal_order(w, h, unit_cols=3)
    with pytest.raises(ValueError):
        removal_order(w, h[:8, :8], unit_cols=1)
    with pytest.raises(ValueError):
        removal_order(w, h, unit_cols=1, max_remove=17)
