"""The one mask-selection module (methods/masks.py): exact counts and the one tie rule."""
from __future__ import annotations

import pytest
import torch

from methods import masks
from methods.base import parse_pattern
from methods.sparsegpt import sparsegpt_prune


def test_ties_remove_the_lower_index_first_in_every_selector() -> None:
    tied = torch.ones(2, 8)                                           # every score equal
    # N:M: in each group of 4 the two lowest indices go
    keep = masks.keep_nm(tied, 2, 4)
    assert keep[0].tolist() == [False, False, True, True] * 2
    # per row: the first half of each row goes
    assert masks.keep_per_row(tied, 0.5)[1].tolist() == [False] * 4 + [True] * 4
    # per layer: the first flattened positions go
    assert masks.keep_per_layer(tied, 0.25).flatten().tolist() == [False] * 4 + [True] * 12


def test_the_reverse_rule_is_only_for_measuring() -> None:
    tied = torch.ones(1, 4)
    with masks.tie_rule("high-index-first"):
        assert masks.keep_nm(tied, 2, 4)[0].tolist() == [True, True, False, False]
    assert masks.keep_nm(tied, 2, 4)[0].tolist() == [False, False, True, True]   # restored
    with pytest.raises(ValueError, match="tie rule 'random'"):
        with masks.tie_rule("random"):
            pass


def test_lowest_follows_scores_before_ties_and_counts_exactly() -> None:
    scores = torch.tensor([[3.0, 1.0, 1.0, 0.5, 2.0, 1.0]])
    assert masks.lowest(scores, 3, dim=1).tolist() == [[3, 1, 2]]
    big = torch.randint(0, 3, (64, 128)).float()                      # many ties
    for sparsity in (0.3, 0.5, 0.7):
        assert int((~masks.keep_per_layer(big, sparsity)).sum()) == masks.n_pruned(big.numel(), sparsity)
        assert ((~masks.keep_per_row(big, sparsity)).sum(1) == masks.n_pruned(128, sparsity)).all()
    assert ((masks.keep_nm(big, 2, 4).reshape(64, -1, 4).sum(-1)) == 2).all()


def test_sparsegpt_breaks_saliency_ties_by_the_same_rule() -> None:
    """Equal weights and an identity Hessian: every saliency ties, so SparseGPT's own N:M sweep
    removes the first two columns of each group, as masks.keep_nm does."""
    weight = torch.ones(3, 8)
    res = sparsegpt_prune(weight, torch.eye(8), parse_pattern("2of4"), blocksize=8)
    assert res.keep[0].tolist() == [False, False, True, True] * 2
