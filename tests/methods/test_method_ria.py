"""RIA's defining property: its score is the closed form on a hand-made matrix, and the cut
follows that score (the method contract runs in test_method_contract.py)."""
from __future__ import annotations

import math

import pytest
import torch

from methods import registry
from methods.base import LayerStats, PruneBenchError, parse_pattern
from methods.ria import relative_importance, ria_scores

W = torch.tensor([[1.0, -2.0, 0.0],
                  [3.0, 0.0, -1.0]])                  # row sums 3, 4; column sums 4, 2, 1
ACT_SQ = torch.tensor([4.0, 9.0, 16.0])               # ||X_j||_2 = 2, 3, 4


def test_relative_importance_closed_form() -> None:
    want = torch.tensor([[1 / 3 + 1 / 4, 2 / 3 + 2 / 2, 0.0],
                         [3 / 4 + 3 / 4, 0.0, 1 / 4 + 1 / 1]])
    torch.testing.assert_close(relative_importance(W), want)


@pytest.mark.parametrize("a", [0.0, 0.5, 1.0])
def test_score_closed_form(a: float) -> None:
    ri = relative_importance(W)
    norms = torch.tensor([2.0, 3.0, 4.0])
    torch.testing.assert_close(ria_scores(W, ACT_SQ, a), ri * norms ** a)
    assert ria_scores(W, ACT_SQ, 0.5)[0, 1].item() == pytest.approx((2 / 3 + 1) * math.sqrt(3))


def test_zero_rows_and_columns_score_zero_not_nan() -> None:
    w = torch.tensor([[0.0, 0.0], [0.0, 5.0]])
    assert torch.equal(relative_importance(w), torch.tensor([[0.0, 0.0], [0.0, 2.0]]))


def test_the_cut_follows_the_score() -> None:
    """Per layer (the default) unstructured-50 keeps the 3 best of the 6 scores; 2:4 keeps the 2
    best of each group, where a strong activation beats a larger relative importance."""
    stats = LayerStats(n_tokens=1, act_sq=ACT_SQ)
    scores = ria_scores(W, ACT_SQ, 0.5)                # [[1.17, 2.89, 0], [3.0, 0, 5.0]]
    res = registry.create("ria").prune_layer(W, stats, parse_pattern("unstructured-50"))
    assert torch.equal(res.keep, scores >= scores.flatten().sort().values[3])
    assert torch.equal(res.weight, W * res.keep)
    w4 = torch.tensor([[4.0, 1.0, 2.0, 3.0]] * 2)
    stats4 = LayerStats(n_tokens=1, act_sq=torch.tensor([1.0, 1.0, 100.0, 1.0]))
    res = registry.create("ria").prune_layer(w4, stats4, parse_pattern("2of4"))
    assert res.keep.tolist() == [[True, False, True, False]] * 2      # RI 0.9 0.6 0.7 0.8; x 1, 1, 3.16, 1


def test_params_are_checked() -> None:
    assert registry.create("ria", {"a": 1.0, "per_row": True}).params.per_row
    with pytest.raises(PruneBenchError, match="a must be"):
        registry.create("ria", {"a": -1.0})
