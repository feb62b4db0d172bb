"""DarwinLM's evolutionary search over per-layer pruning levels (arXiv 2502.07780).

Owns the search only, not the models: a candidate assigns each layer a LEVEL (how many ladder
steps of its structured-pruning ladder are removed, see methods.structured_obs), grouped by layer
TYPE ("attn", "mlp", ...). The total level per type is fixed (it sets the compression), so the
search only moves levels between layers of the same type. Fitness is supplied by the caller as a
list of stage callables (lower is better); later stages are meant to use more calibration tokens
and see fewer candidates (multi-stage selection). Pure Python: `random.Random` for randomness,
deterministic for a fixed seed, ties broken by position (the parent first).
"""
from __future__ import annotations

import logging
import random
from typing import Callable

from tqdm.auto import tqdm

Candidate = dict[str, list[int]]          # layer type -> level of each layer of that type
Stage = Callable[[list[Candidate]], list[float]]

log = logging.getLogger(__name__)


def copy_candidate(cand: Candidate) -> Candidate:
    return {t: list(levels) for t, levels in cand.items()}


def uniform_start(n_layers: dict[str, int], totals: dict[str, int],
                  max_level: dict[str, int]) -> Candidate:
    """Levels as equal as possible per type, summing to totals[type]; the remainder's +1s go to
    evenly spaced layers (layer floor((i + 0.5) * L / r) for i < r)."""
    cand: Candidate = {}
    for t, n in n_layers.items():
        total, top = totals[t], max_level[t]
        if n < 1 or not 0 <= total <= n * top:
            raise ValueError(f"{t}: total {total} impossible for {n} layers of max level {top}")
        base, rem = divmod(total, n)
        levels = [base] * n
        for i in range(rem):
            levels[int((i + 0.5) * n / rem)] += 1
        cand[t] = levels
    return cand


def _legal_types(cand: Candidate, max_level: dict[str, int]) -> list[str]:
    """Types with a donor i (level > 0) and another layer j != i (level < max)."""
    out = []
    for t, levels in cand.items():
        donors = [i for i, lv in enumerate(levels) if lv > 0]
        receivers = [j for j, lv in enumerate(levels) if lv < max_level[t]]
        if donors and receivers and (len(receivers) > 1 or donors != receivers):
            out.append(t)
    return out


def _move(cand: Candidate, rng: random.Random, max_level: dict[str, int]) -> bool:
    """One level step from one layer to another of the same type, in place; False if none legal."""
    types = _legal_types(cand, max_level)
    if not types:
        return False
    t = types[rng.randrange(len(types))]
    levels = cand[t]
    receivers = [j for j, lv in enumerate(levels) if lv < max_level[t]]
    donors = [i for i, lv in enumerate(levels)
              if lv > 0 and len(receivers) - (i in receivers) > 0]
    i = donors[rng.randrange(len(donors))]
    choices = [j for j in receivers if j != i]
    j = choices[rng.randrange(len(choices))]
    levels[i] -= 1
    levels[j] += 1
    return True


def mutate(parent: Candidate, rng: random.Random, max_level: dict[str, int],
           n_moves: int = 1) -> Candidate:
    """A child `n_moves` level moves away from the parent (per-type totals and bounds kept).

    If the moves happen to cancel out, one more move is made, so the child differs from the
    parent whenever any legal move exists.
    """
    if n_moves < 1:
        raise ValueError(f"n_moves must be >= 1, got {n_moves}")
    child = copy_candidate(parent)
    for _ in range(n_moves):
        if not _move(child, rng, max_level):
            return child
    if child == parent:
        _move(child, rng, max_level)
    return child


def _validate(stages: list[Stage], survivors: list[int], generations: int,
              offspring: int) -> None:
    if not stages or len(stages) != len(survivors):
        raise ValueError(f"need one survivor count per stage, got {len(stages)} stages and "
                         f"{len(survivors)} survivor counts")
    if any(s < 1 for s in survivors) or any(a < b for a, b in zip(survivors, survivors[1:])):
        raise ValueError(f"survivors must be positive and non-increasing, got {survivors}")
    if survivors[-1] != 1:
        raise ValueError(f"the last stage must keep exactly 1 candidate, got {survivors[-1]}")
    if offspring < 1:
        raise ValueError(f"offspring must be >= 1, got {offspring}")
    if generations < 0:
        raise ValueError(f"generations must be >= 0, got {generations}")


def evolve(start: Candidate, stages: list[Stage], survivors: list[int], generations: int,
           offspring: int, rng: random.Random, max_level: dict[str, int], n_moves: int = 1,
           progress: bool = True) -> tuple[Candidate, list[dict]]:
    """(1 + offspring) evolution with multi-stage selection. Returns (best candidate, history).

    Each generation: population = [parent] + `offspring` mutants of it; stage i scores the
    remaining candidates (one call per stage, so it may batch) and keeps the best survivors[i]
    (stable: ties go to the earlier candidate, i.e. the parent); the last stage's single survivor
    is the next parent. history[g] = {"generation", "best_fitness" (one per stage), "parent"}.
    """
    _validate(stages, survivors, generations, offspring)
    parent = copy_candidate(start)
    history: list[dict] = []
    for g in tqdm(range(generations), desc="evolution", disable=not progress):
        pop = [parent] + [mutate(parent, rng, max_level, n_moves) for _ in range(offspring)]
        best: list[float] = []
        for stage, keep in zip(stages, survivors):
            fits = [float(f) for f in stage(pop)]
            if len(fits) != len(pop):
                raise ValueError(f"a stage returned {len(fits)} fitnesses for {len(pop)} "
                                 "candidates")
            ranked = sorted(range(len(pop)), key=lambda k: (fits[k], k))[:keep]
            best.append(fits[ranked[0]])
            pop = [pop[k] for k in ranked]
        parent = copy_candidate(pop[0])
        history.append({"generation": g, "best_fitness": best, "parent": copy_candidate(parent)})
        log.info("generation %d: best fitness per stage %s", g,
                 ", ".join(f"{f:.6g}" for f in best))
    return parent, history
