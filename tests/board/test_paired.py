"""Paired bootstrap, ranks with ties, chance levels and power (bench/board/paired.py) against closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.board import paired


def _bernoulli(p: float, n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_paired_interval_of_two_bernoulli_sequences_is_the_closed_form() -> None:
    """The paired bootstrap of mean(a) - mean(b) is centred on the difference and its 95 %
    half-width is 1.96 * sd(a - b) / sqrt(n) (the normal approximation), within Monte Carlo error."""
    n = 400
    a, b = _bernoulli(0.6, n, 1), _bernoulli(0.5, n, 2)
    iv = paired.interval(paired.Values((a,)), paired.Values((b,)))
    d = a - b
    se = d.std() / math.sqrt(n)
    assert iv.diff == pytest.approx(d.mean())
    assert iv.half_width == pytest.approx(1.96 * se, rel=0.08)
    assert (iv.lo + iv.hi) / 2 == pytest.approx(d.mean(), abs=0.3 * se)


def test_pairing_removes_the_shared_noise() -> None:
    """Two runs that differ on 8 of 400 documents: the paired interval is far narrower than the
    unpaired one (the per-run standard errors combined)."""
    a = _bernoulli(0.5, 400, 3)
    b = a.copy()
    b[:8] = 1 - b[:8]
    iv = paired.interval(paired.Values((a,)), paired.Values((b,)))
    unpaired = 1.96 * math.hypot(a.std(), b.std()) / math.sqrt(400)
    assert iv.half_width < unpaired / 3


def test_the_interval_is_reproducible_and_stratified() -> None:
    strata = (np.arange(10, dtype=float), np.ones(5))
    v = paired.Values(strata)
    assert v.value() == pytest.approx((4.5 + 1.0) / 2)          # mean of the strata's means
    one = paired.interval(v, paired.Values((np.zeros(10), np.zeros(5))))
    two = paired.interval(v, paired.Values((np.zeros(10), np.zeros(5))))
    assert one == two
    with pytest.raises(ValueError, match="different units"):
        paired.interval(v, paired.Values((np.zeros(9), np.zeros(5))))


def test_perplexity_transform() -> None:
    nll = np.array([1.0, 2.0, 3.0])
    assert paired.Values((nll,), np.exp).value() == pytest.approx(math.exp(2.0))


def test_rank_shares_the_top_between_tied_methods() -> None:
    """a and b differ by noise, c is clearly worse: a and b share rank 1, c is behind both."""
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.5, 64)
    vals = {"a": paired.Values((base,)), "b": paired.Values((base + rng.normal(0, 0.05, 64),)),
            "c": paired.Values((base + 1.0,))}
    r = paired.rank(vals, lower_is_better=True)
    assert r["a"]["rank"] == 1 and r["b"]["rank"] == 1
    assert r["a"]["tied_with_best"] and r["b"]["tied_with_best"]
    assert r["c"]["rank"] == 3 and not r["c"]["tied_with_best"]
    # a noise floor larger than c's gap makes it a tie as well
    r = paired.rank(vals, lower_is_better=True, floor=0.5)
    assert all(x["rank"] == 1 for x in r.values())


def test_rank_higher_is_better() -> None:
    hi = paired.Values((np.ones(100),))
    lo = paired.Values((np.zeros(100),))
    r = paired.rank({"hi": hi, "lo": lo}, lower_is_better=False)
    assert r["hi"]["rank"] == 1 and r["lo"]["rank"] == 2 and r["lo"]["best"] == "hi"
    assert not r["hi"]["tied_with_best"]           # a leader no one ties is "1", not "1="


def test_chance_level_and_power_prediction() -> None:
    assert paired.chance_level([[4, 4], [2, 2, 2]]) == pytest.approx((0.25 + 0.5) / 2)
    assert paired.half_width_at(0.04, 100, 400) == pytest.approx(0.02)
