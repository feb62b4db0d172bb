"""Perplexity's per-window NLL and KL against the dense model (bench/evaluation/evaluate.py)."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from bench.evaluation.evaluate import perplexity
from tests.conftest import tiny_model


def _ids(n: int = 4 * 32 + 5) -> torch.Tensor:
    return torch.randint(0, 100, (n,), generator=torch.Generator().manual_seed(0))


def test_windows_add_up_to_the_perplexity() -> None:
    model = tiny_model("llama")
    out = perplexity(model, _ids(), seqlen=32, batch_size=3, progress=False)
    assert out["n_windows"] == 4 and len(out["window_nll"]) == 4
    assert abs(math.exp(sum(out["window_nll"]) / 4) / out["ppl"] - 1) < 1e-6
    assert out["kl"] is None and out["window_kl"] is None


def test_kl_of_a_model_against_itself_is_zero() -> None:
    model = tiny_model("llama")
    same = perplexity(model, _ids(), 32, 2, False, reference=model)
    assert same["kl"] == 0.0 and same["window_kl"] == [0.0] * 4
    copied = perplexity(model, _ids(), 32, 2, False, reference=copy.deepcopy(model))
    assert copied["kl"] == 0.0                     # computed: identical logits give exactly 0


def test_kl_against_a_perturbed_model_equals_a_direct_computation() -> None:
    dense = tiny_model("llama")
    pruned = copy.deepcopy(dense)
    with torch.no_grad():
        for p in pruned.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    ids = _ids()
    out = perplexity(pruned, ids, 32, 3, False, reference=dense)
    windows = ids[: 4 * 32].view(4, 32)
    with torch.no_grad():
        p = F.softmax(dense(input_ids=windows).logits[:, :-1].double(), -1)     # [4, 31, V]
        q = F.softmax(pruned(input_ids=windows).logits[:, :-1].double(), -1)
    direct = (p * (p.log() - q.log())).sum(-1).mean(1)                          # [4]
    assert out["kl"] > 0
    for got, want in zip(out["window_kl"], direct.tolist()):
        assert abs(got - want) < 1e-5 * max(1.0, want)
    assert abs(out["kl"] - direct.mean().item()) < 1e-5


def test_under_the_bos_rule_each_window_is_the_bos_and_seqlen_minus_one_tokens() -> None:
    """Closed form: the windows are [BOS] + consecutive chunks of 15 text tokens; every text
    token of a window is scored (the first one from the BOS alone); without a BOS nothing moves."""
    model = tiny_model("gemma3")
    ids = torch.randint(3, 128, (100,), generator=torch.Generator().manual_seed(0))
    got = perplexity(model, ids, seqlen=16, batch_size=3, progress=False, bos=2)
    assert got["n_windows"] == 100 // 15 and got["n_tokens"] == 6 * 15
    windows = torch.cat([torch.full((6, 1), 2), ids[:90].view(6, 15)], dim=1)     # [6, 16]
    with torch.no_grad():
        logits = model(input_ids=windows).logits                                 # [6, 16, V]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, 128), windows[:, 1:].reshape(-1))
    assert math.isclose(got["nll"], float(nll), rel_tol=1e-5)
    plain = perplexity(model, ids, seqlen=16, batch_size=3, progress=False)
    assert plain["n_windows"] == 6 and plain["n_tokens"] == 6 * 15 and plain["nll"] != got["nll"]
