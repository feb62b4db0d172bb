"""Tests for bench/board/agreement.py: Kendall's tau against closed forms, and the verdicts of
its bootstrap interval on clearly ordered, reversed and indistinguishable methods."""
from __future__ import annotations

import math

import numpy as np

from bench.board import paired
from bench.board.agreement import agreement, kendall_tau


def test_kendall_tau_closed_forms() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert kendall_tau(x, x) == 1.0 and kendall_tau(x, -x) == -1.0
    # one swapped neighbour pair: 5 concordant, 1 discordant of 6
    assert math.isclose(kendall_tau(x, np.array([1.0, 3.0, 2.0, 4.0])), 4 / 6)
    # tau-b with a tie in y: (4 - 0) / sqrt(6 * 5)... pairs (1,2) tied in y
    assert math.isclose(kendall_tau(x, np.array([1.0, 1.0, 3.0, 4.0])), 5 / math.sqrt(6 * 5))


def _values(means: dict[str, float], n: int, noise: float, seed: int) -> dict[str, paired.Values]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, n)                        # shared per-window difficulty
    return {m: paired.Values((base + mu + rng.normal(0.0, noise, n),), np.exp)
            for m, mu in means.items()}


def test_verdicts() -> None:
    means = {"wanda": 3.0, "sparsegpt": 2.8, "apt": 2.6, "magnitude": 4.0}
    a = _values(means, 64, 0.01, 0)
    same = agreement(a, _values(means, 64, 0.01, 1))
    assert same["tau"] == 1.0 and same["lo"] == 1.0 and same["verdict"] == "agree"
    flipped = agreement(a, _values({m: -v for m, v in means.items()}, 64, 0.01, 2))
    assert flipped["tau"] == -1.0 and flipped["verdict"] == "disagree"
    flat = {m: 3.0 for m in means}
    noisy = agreement(_values(flat, 64, 1.0, 3), _values(flat, 64, 1.0, 4))
    assert noisy["lo"] < 0 < noisy["hi"] and noisy["verdict"] == "unresolved"
    few = agreement({k: a[k] for k in ("wanda", "apt")}, a)
    assert few["methods"] == ["apt", "wanda"] and few["tau"] is None and few["verdict"] is None


def test_real_models_are_the_pretrained_ones() -> None:
    from bench.board.agreement import real_models

    def run(key: str, kind: str, trained: bool = False) -> dict:
        return {"model": {"key": key, "source": {"kind": kind}, "trained_here": trained}}

    runs = [run("smollm2-135m", "pypi_gguf"), run("gemma3-270m", "pypi_gguf"),
            run("opt-tiny", "local", True), run("tiny-llama", "random"), run("opt-125m", "hub")]
    assert real_models(runs) == ["gemma3-270m", "opt-125m", "smollm2-135m"]
