"""DSnoT (methods/dsnot.py): a refinement cycle never raises a row's expected reconstruction
error, rows keep their counts, the swap rule on a hand-made row, the moments statistic, and
`wanda_dsnot` through the method contract."""
from __future__ import annotations

import pytest
import torch

from bench.stats import StatAccumulator
from bench.tools.contract import contract_for
from methods import registry
from methods.base import LayerStats, PruneBenchError, parse_pattern
from methods.dsnot import dsnot_refine, row_errors
from methods.masks import keep_per_row
from methods.wanda import wanda_scores


def _layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 64, generator=g) * torch.rand(64, generator=g) + torch.randn(64, generator=g)
    return torch.randn(32, 64, generator=g), x                         # W [out, in], X [tokens, in]


def test_error_never_rises_across_a_cycle_and_rows_keep_their_counts() -> None:
    w, x = _layer()
    act_sq, mean, var = (x * x).sum(0), x.mean(0), x.var(0, unbiased=False)
    keep0 = keep_per_row(wanda_scores(w, act_sq), 0.5)
    keep, trace = dsnot_refine(w, keep0, act_sq, mean, var, cycles=50, threshold=0.0)
    assert len(trace) > 2 and not torch.equal(keep, keep0)                # it did swap
    for before, after in zip(trace, trace[1:]):
        assert bool((after <= before).all())                             # per row, per cycle
    assert bool((trace[-1] < trace[0]).any())
    assert torch.equal(keep.sum(1), keep0.sum(1))                        # counts unchanged
    torch.testing.assert_close(row_errors(w, keep, mean).abs(), trace[-1])


def test_the_swap_rule_on_a_hand_made_row() -> None:
    """c = W * mu = [1, 2, -3, 4]; Wanda (equal norms) prunes 1 and 2: e = 3. Cycle 1 regrows
    the largest same-sign pruned (2) and prunes the weakest opposite-sign kept (-3): e = -2.
    Cycle 2 would regrow -3 and prune 2: e = 3, larger, refused: the row stops."""
    w = torch.tensor([[1.0, 2.0, -3.0, 4.0]])
    ones = torch.ones(4)
    keep0 = torch.tensor([[False, False, True, True]])
    keep, trace = dsnot_refine(w, keep0, ones, ones, ones, threshold=0.0)
    assert keep.tolist() == [[False, True, False, True]]
    assert [float(t) for t in trace] == [3.0, 2.0, 2.0]
    keep, _ = dsnot_refine(w, keep0, ones, ones, ones, threshold=0.0, same_sign=True)
    assert torch.equal(keep, keep0)                                      # -2 changes the sign
    keep, _ = dsnot_refine(w, keep0, ones, ones, ones, threshold=3.0)
    assert torch.equal(keep, keep0)                                      # |e| not above it


def test_moments_statistic_is_batch_invariant_and_exact() -> None:
    _, x = _layer(1)
    acc = StatAccumulator(64, "act_moments", torch.device("cpu"))
    for part in x.split(100):
        acc.add(part.unsqueeze(0))
    st = acc.finish()
    torch.testing.assert_close(st.act_mean, x.double().mean(0).float())
    torch.testing.assert_close(st.act_var, x.double().var(0, unbiased=False).float())
    torch.testing.assert_close(st.act_sq, (x.double() ** 2).sum(0).float())


def test_variant_keeps_the_base_sparsity_and_honours_skip() -> None:
    w, x = _layer(2)
    stats = LayerStats(n_tokens=512, act_sq=(x * x).sum(0), act_mean=x.mean(0),
                       act_var=x.var(0, unbiased=False))
    u50 = parse_pattern("unstructured-50")
    base = registry.create("wanda").prune_layer(w, stats, u50)
    res = registry.create("wanda_dsnot").prune_layer(w, stats, u50,
                                                     name="model.layers.0.self_attn.q_proj")
    assert torch.equal(res.keep.sum(1), base.keep.sum(1)) and not torch.equal(res.keep, base.keep)
    assert torch.equal(res.weight, w * res.keep)                          # no weight update
    # the reference's default leaves the MLP layers of Llama-style blocks unrefined ...
    skipped = registry.create("wanda_dsnot").prune_layer(
        w, stats, u50, name="model.layers.0.mlp.up_proj")
    assert torch.equal(skipped.keep, base.keep)
    # ... and matches no OPT or Mamba layer; an empty list refines every layer
    for name in ("model.decoder.layers.0.fc1", "backbone.layers.0.mixer.in_proj"):
        assert not torch.equal(registry.create("wanda_dsnot").prune_layer(
            w, stats, u50, name=name).keep, base.keep)
    every = registry.create("wanda_dsnot", {"dsnot_skip": []}).prune_layer(
        w, stats, u50, name="model.layers.0.mlp.up_proj")
    assert torch.equal(every.keep, res.keep)
    with pytest.raises(PruneBenchError, match="updates no weights"):
        registry.get("sparsegpt_dsnot")


class TestContract_wanda_dsnot(contract_for("wanda_dsnot")):
    method = "wanda_dsnot"
