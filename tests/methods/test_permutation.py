"""Channel permutation for N:M (methods/permutation.py, `ria_cp`): the reallocation's closed
form, the assignment values against brute force, LSA never lowering the kept score, the mask
N:M exactly under the permutation, and the saved-weight check reading it."""
from __future__ import annotations

import itertools

import pytest
import torch

from bench.adapters import adapter_for
from bench.evaluation.evaluate import check_pattern
from methods import permutation as P
from methods import registry
from methods.base import LayerStats, PruneBenchError, parse_pattern
from methods.ria import ria_scores
from tests.conftest import tiny_model


def _scores(out: int = 12, cols: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(out, cols, generator=g) * torch.rand(1, cols, generator=g) * 4   # [out, in]


def test_heuristic_deals_one_input_of_each_quantile_to_every_group() -> None:
    """Column sums 0..7 in a shuffled order, M = 4: quantiles {0,1} {2,3} {4,5} {6,7}, the
    odd-numbered ones reversed, so the groups are (0, 3, 4, 7) and (1, 2, 5, 6)."""
    order = torch.tensor([5, 2, 7, 0, 6, 1, 4, 3])          # input j has column sum order[j]
    scores = order.float().unsqueeze(0).repeat(3, 1) / 3        # [3, 8]
    perm = P.heuristic_order(scores, 4)
    by_sum = {int(order[j]): j for j in range(8)}
    assert perm.tolist() == [by_sum[s] for s in (0, 3, 4, 7, 1, 2, 5, 6)]


def test_assignment_values_equal_brute_force() -> None:
    s = _scores()
    n, m = 2, 4
    for c in range(m):
        values = P._assignment_values(s, c, n, m)                                 # [G, G]
        for a, b in itertools.product(range(4), range(4)):
            perm = torch.arange(16)
            perm[b * m + c] = a * m + c          # group b's position c takes group a's input
            group = s[:, perm[b * m:(b + 1) * m]]                                 # [out, m]
            want = float(group.double().topk(n, dim=1).values.sum())
            assert values[a, b].item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_lsa_never_lowers_the_kept_score(n: int, m: int) -> None:
    for seed in range(3):
        s = _scores(24, 32, seed)
        start = P.heuristic_order(s, m)
        before = P.kept_score(s, start, n, m)
        perm = start
        for _ in range(2):
            perm = P.lsa_refine(s, perm, n, m)
            assert P.is_permutation(perm, 32)
            after = P.kept_score(s, perm, n, m)
            assert after >= before - 1e-9
            before = after


def test_lsa_is_bounded_by_the_brute_force_optimum() -> None:
    """Two groups of four: LSA lands between the reallocation it starts from and the best of
    all 8! orders (brute force)."""
    s = _scores(6, 8, 3)
    best = max(P.kept_score(s, torch.tensor(p), 2, 4) for p in itertools.permutations(range(8)))
    got = P.kept_score(s, P.channel_order(s, 2, 4, "lsa"), 2, 4)
    assert got <= best + 1e-9
    assert got >= P.kept_score(s, P.heuristic_order(s, 4), 2, 4) - 1e-9


def test_ria_cp_is_exactly_nm_under_its_permutation() -> None:
    w = torch.randn(12, 16, generator=torch.Generator().manual_seed(2))          # [out, in]
    stats = LayerStats(n_tokens=4, act_sq=torch.rand(16, generator=torch.Generator().manual_seed(3)))
    pattern = parse_pattern("2of4")
    res = registry.create("ria_cp").prune_layer(w, stats, pattern)
    assert res.in_perm is not None and P.is_permutation(res.in_perm, 16)
    groups = res.keep[:, res.in_perm].reshape(12, 4, 4).sum(-1)
    assert (groups == 2).all()
    assert torch.equal(res.weight, w * res.keep)
    plain = registry.create("ria").prune_layer(w, stats, pattern)
    assert plain.in_perm is None
    scores = ria_scores(w, stats.act_sq, 0.5)                                     # [out, in]
    assert P.kept_score(scores, res.in_perm, 2, 4) >= P.kept_score(
        scores, P.heuristic_order(scores, 4), 2, 4) - 1e-9
    with pytest.raises(PruneBenchError, match="permute must be one of"):
        registry.create("ria", {"permute": "random"})


def test_saved_weight_check_applies_the_permutation() -> None:
    """A layer N:M only under a permutation passes with it, fails without it or with a bad one."""
    model = tiny_model("llama")
    adapter = adapter_for(model)
    layers = adapter.prunable(model)
    name, lin = next(iter(layers.items()))
    pattern = parse_pattern("2of4")
    cols = lin.in_features
    perm = torch.randperm(cols, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for other in layers.values():            # every other layer plainly 2:4
            if other is not lin:
                other.weight.view(other.weight.shape[0], -1, 4)[:, :, 2:] = 0
        keep = torch.zeros(lin.weight.shape, dtype=torch.bool)
        keep[:, perm] = torch.tensor([True, True, False, False]).repeat(cols // 4)
        lin.weight.mul_(keep)
    per_layer = {n: 0.5 for n in layers}
    check_pattern(model, adapter, pattern, per_layer, in_perms={name: perm})
    with pytest.raises(PruneBenchError, match="violates 2of4"):
        check_pattern(model, adapter, pattern, per_layer)
    with pytest.raises(PruneBenchError, match="not a permutation"):
        check_pattern(model, adapter, pattern, per_layer, in_perms={name: perm[:-1]})
