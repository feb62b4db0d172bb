"""Paired bootstrap statistics over per-example records: intervals, ranks with ties, chance.

Owns the statistics of `bench compare` and the leaderboard, as pure functions of arrays:
- a metric's value is a statistic of per-unit values grouped in strata (perplexity: the windows'
  mean NLL, one stratum, value exp(mean); KL: the windows' mean KL; a zero-shot average: one
  stratum per task, the mean of the tasks' accuracies; flips: the documents' 0/1 flips);
- `interval(a, b)`: the paired percentile bootstrap of value(a) - value(b). Units (windows,
  documents) are resampled with replacement inside each stratum, the SAME resample for both
  runs, `N_RESAMPLES` = 2,000 times from a fixed seed; the 95 % interval is the 2.5th and 97.5th
  percentile of the resampled differences;
- `own_interval(a)`: the same bootstrap of one run's value (is an accuracy above chance?);
- `rank`: methods whose interval against the best contains 0, or whose difference is smaller
  than the noise floor, share rank 1; any other method's rank is 1 + the number of methods that
  are separated from it and better.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

N_RESAMPLES = 2000
SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Values:
    """One run's per-unit values of a metric: strata [k] of arrays [n_i]; `transform` maps the
    mean of the strata's means to the metric (exp for perplexity, identity otherwise)."""

    strata: tuple[np.ndarray, ...]
    transform: Callable[[np.ndarray], np.ndarray] = lambda x: x

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.strata)

    def value(self) -> float:
        return float(self.transform(np.array(np.mean([s.mean() for s in self.strata]))))

    def resampled(self, idx: Sequence[np.ndarray]) -> np.ndarray:
        """idx: per stratum [B, n_i] -> the metric under each resample [B]."""
        means = np.mean([s[i].mean(axis=1) for s, i in zip(self.strata, idx)], axis=0)
        return self.transform(means)


def resample_indices(sizes: Sequence[int], n: int = N_RESAMPLES, seed: int = SEED
                     ) -> list[np.ndarray]:
    """Per stratum [n, size] indices drawn with replacement; fixed by (sizes, n, seed)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, size, size=(n, size)) for size in sizes]


def _percentiles(x: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    lo, hi = np.quantile(x, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Interval:
    diff: float          # value(a) - value(b) on the full data
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def contains(self, x: float = 0.0) -> bool:
        return self.lo <= x <= self.hi


def interval(a: Values, b: Values, n: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """Paired bootstrap interval of value(a) - value(b); a and b must be on the same units."""
    if a.sizes != b.sizes:
        raise ValueError(f"paired values on different units: {a.sizes} vs {b.sizes}")
    idx = resample_indices(a.sizes, n, seed)
    lo, hi = _percentiles(a.resampled(idx) - b.resampled(idx))
    return Interval(a.value() - b.value(), lo, hi)


def own_interval(a: Values, n: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """Bootstrap interval of value(a) itself (diff = the value)."""
    lo, hi = _percentiles(a.resampled(resample_indices(a.sizes, n, seed)))
    return Interval(a.value(), lo, hi)


def separated(iv: Interval, floor: float = 0.0, scale: float = 1.0) -> bool:
    """A finding: the interval excludes 0 AND the difference exceeds the noise floor
    (`floor` relative to `scale`, e.g. a relative ppl floor times the best ppl)."""
    return not iv.contains(0.0) and abs(iv.diff) > floor * abs(scale)


def rank(values: dict[str, Values], lower_is_better: bool, floor: float = 0.0
         ) -> dict[str, dict[str, object]]:
    """name -> {"rank", "best", "vs_best": Interval, "tied_with_best": bool}. Every pair is
    compared with the paired bootstrap; see the module docstring for the rule."""
    if not values:
        return {}
    sign = 1.0 if lower_is_better else -1.0
    best = min(values, key=lambda k: sign * values[k].value())
    scale = values[best].value()
    better: dict[str, int] = {k: 0 for k in values}
    names = list(values)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            iv = interval(values[x], values[y])
            if separated(iv, floor, scale):
                worse = x if sign * iv.diff > 0 else y
                better[worse] += 1
    out: dict[str, dict[str, object]] = {}
    for k in names:
        vs = interval(values[k], values[best])
        top = k == best or not separated(vs, floor, scale)
        out[k] = {"rank": 1 if top else 1 + better[k], "best": best, "vs_best": vs,
                  "tied_with_best": top}
    shared = sum(o["rank"] == 1 for o in out.values()) > 1
    for o in out.values():                  # a best that no other method ties is "1", not "1="
        o["tied_with_best"] = bool(o["tied_with_best"]) and shared
    return out


def chance_level(n_choices: Sequence[Sequence[int]]) -> float:
    """Chance accuracy of an average over tasks: per task the mean of 1/choices, then the mean."""
    return float(np.mean([np.mean([1.0 / c for c in task]) for task in n_choices]))


def half_width_at(measured: float, n_measured: int, n: int) -> float:
    """A paired half-width predicted for n units per stratum from one measured at n_measured
    (the standard error falls as 1/sqrt(n))."""
    return measured * math.sqrt(n_measured / n)
