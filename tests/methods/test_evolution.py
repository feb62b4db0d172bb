"""methods.evolution: level moves keep totals and bounds; the search improves a toy fitness."""
from __future__ import annotations

import random

import pytest

from methods.evolution import evolve, mutate, uniform_start

MAX = {"attn": 4, "mlp": 8}


def test_uniform_start_sums_and_spreads():
    cand = uniform_start({"attn": 6, "mlp": 5}, {"attn": 10, "mlp": 0}, MAX)
    assert cand["attn"] == [2, 1, 2, 2, 1, 2] and sum(cand["attn"]) == 10
    assert cand["mlp"] == [0] * 5
    assert sum(uniform_start({"mlp": 7}, {"mlp": 56}, MAX)["mlp"]) == 56
    with pytest.raises(ValueError):
        uniform_start({"attn": 2}, {"attn": 9}, MAX)


@pytest.mark.parametrize("n_moves", [1, 2, 3])
def test_mutate_keeps_totals_and_bounds(n_moves):
    rng = random.Random(0)
    parent = uniform_start({"attn": 5, "mlp": 4}, {"attn": 7, "mlp": 30}, MAX)
    for _ in range(500):
        child = mutate(parent, rng, MAX, n_moves)
        assert child != parent
        for t, levels in child.items():
            assert sum(levels) == sum(parent[t])
            assert all(0 <= lv <= MAX[t] for lv in levels)
        assert sum(abs(a - b) for t in child for a, b in zip(child[t], parent[t])) <= 2 * (
            n_moves + 1)
        parent = child


def test_mutate_edge_cases():
    rng = random.Random(1)
    stuck = {"attn": [4, 4], "mlp": [0, 0, 0]}           # no legal move anywhere
    assert mutate(stuck, rng, MAX) == stuck
    # the only legal moves undo each other; the child must still differ
    for _ in range(20):
        assert mutate({"attn": [1, 0]}, rng, {"attn": 1}, n_moves=2) == {"attn": [0, 1]}
    one_type = {"attn": [4, 4], "mlp": [8, 0, 3]}
    child = mutate(one_type, rng, MAX)
    assert child["attn"] == [4, 4] and sum(child["mlp"]) == 11


def _toy_problem():
    target = {"attn": [0, 4, 1, 3, 0, 4], "mlp": [8, 0, 2, 6, 1, 7]}

    def fitness(cands):
        return [sum((a - b) ** 2 for t in c for a, b in zip(c[t], target[t])) for c in cands]

    start = uniform_start({"attn": 6, "mlp": 6}, {t: sum(v) for t, v in target.items()}, MAX)
    return target, fitness, start


def test_evolve_improves_and_is_deterministic():
    target, fitness, start = _toy_problem()
    sizes: list[int] = []

    def stage0(cands):
        sizes.append(len(cands))
        return fitness(cands)

    runs = [evolve(start, [stage0, fitness], [3, 1], generations=60, offspring=8,
                   rng=random.Random(7), max_level=MAX, progress=False) for _ in range(2)]
    (best, history), (best2, history2) = runs
    assert best == best2 and history == history2
    assert sizes[0] == 9
    assert fitness([best])[0] < fitness([start])[0] / 4
    finals = [h["best_fitness"][-1] for h in history]
    assert all(b <= a for a, b in zip(finals, finals[1:]))   # elitism: never worse
    assert history[-1]["parent"] == best and len(history) == 60
    for t in best:
        assert sum(best[t]) == sum(target[t])
    other, _ = evolve(start, [fitness], [1], generations=60, offspring=8, rng=random.Random(8),
                      max_level=MAX, progress=False)
    assert fitness([other])[0] < fitness([start])[0]


def test_evolve_validation():
    _, fitness, start = _toy_problem()
    kw = dict(generations=2, offspring=4, rng=random.Random(0), max_level=MAX, progress=False)
    for stages, surv in [([fitness, fitness], [1, 2]), ([fitness], [2]), ([fitness], [1, 1]),
                         ([], []), ([fitness, fitness], [0, 1])]:
        with pytest.raises(ValueError):
            evolve(start, stages, surv, **kw)
    with pytest.raises(ValueError):
        evolve(start, [fitness], [1], **{**kw, "offspring": 0})
    with pytest.raises(ValueError):
        evolve(start, [lambda c: [0.0]], [1], **kw)
