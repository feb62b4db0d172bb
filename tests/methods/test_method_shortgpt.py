"""ShortGPT (methods/shortgpt.py) and depth surgery (bench/structure/depth.py): Block Influence
equals its direct computation, the removed blocks are exactly those with the lowest influence,
and the shallower model reloads with plain transformers and computes what the dense model does
with those blocks skipped; the method contract, at structured-50 (the tiny models have 2 blocks)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from bench.adapters import adapter_for
from bench.engine import capture_block_inputs
from bench.structure.depth import drop_blocks, kept_layers
from bench.tools.contract import contract_for
from methods import registry
from methods.base import ModelData, PruneBenchError, parse_pattern
from methods.shortgpt import block_influence, blocks_to_remove
from tests.conftest import TINY_CONFIGS, tiny_model

ARCHS = list(TINY_CONFIGS)


def _ids(model: torch.nn.Module, n: int = 4, seq: int = 16) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (n, seq), generator=torch.Generator().manual_seed(0))


def test_blocks_to_remove() -> None:
    bi = [0.9, 0.1, 0.3, 0.1, 0.8]
    assert blocks_to_remove(bi, [1] * 5, 0.4) == [1, 3]                 # two lowest, ties by index
    assert blocks_to_remove(bi, [1] * 5, 0.5) == [1, 3]                  # 0.4 and 0.6: fewer on a tie
    assert blocks_to_remove(bi, [1] * 5, 0.55) == [1, 2, 3]
    assert blocks_to_remove(bi, [1] * 5, 1.0) == [1, 2, 3, 4]            # one block always stays


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_block_influence_is_one_minus_the_mean_cosine(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    ids = _ids(model)
    got = block_influence(model, adapter, ids, batch_size=2, progress=False)
    cap = capture_block_inputs(model, adapter, ids, 4)                   # one batch: direct
    h = cap.hidden[0]
    for b, block in enumerate(adapter.blocks(model)):
        out = block(h, **cap.kwargs[b][0])
        y = out[0] if isinstance(out, tuple) else out
        cos = torch.nn.functional.cosine_similarity(h.double(), y.double(), dim=-1)
        assert got[b] == pytest.approx(1 - float(cos.mean()), abs=1e-6)
        h = y


@pytest.mark.parametrize("arch", ARCHS)
def test_shortgpt_removes_the_lowest_and_reloads_plainly(arch: str, tmp_path: Path) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    n = len(adapter.blocks(model))
    ids = _ids(model)
    influence = block_influence(model, adapter, ids, 4, progress=False)
    reference = tiny_model(arch)                                          # same seed, same weights
    method = registry.create("shortgpt")
    method.progress = False
    pattern = parse_pattern("structured-50")
    res = method.prune_model(model, adapter, ModelData(ids, lambda *a: ids), pattern)
    removed = res.report["removed_blocks"]
    assert removed == sorted(sorted(range(n), key=lambda b: (influence[b], b))[:len(removed)])
    assert abs(len(removed) / n - 0.5) <= 0.5 / n
    kept = [b for b in range(n) if b not in removed]
    assert kept_layers(res.model.config, n - len(removed)) == kept
    assert res.model.config.num_hidden_layers == len(kept)
    # the dense model with the removed blocks made identities computes the same logits
    for b in removed:
        adapter.blocks(reference)[b].forward = lambda *args, **kw: args[0] if args else kw["hidden_states"]
    with torch.no_grad():
        want = reference(input_ids=ids).logits
        got = res.model(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    res.model.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()   # no registration
    assert type(again).__name__ == type(res.model).__name__
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, got, rtol=1e-5, atol=1e-5)
        gen = again.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)       # cache slots renumbered
    assert gen.shape == (1, 7)


def test_drop_blocks_refuses_bad_indices() -> None:
    model = tiny_model("llama")
    adapter = adapter_for(model)
    n = len(adapter.blocks(model))
    with pytest.raises(PruneBenchError, match="distinct indices"):
        drop_blocks(model, adapter, [0, 0])
    with pytest.raises(PruneBenchError, match="all"):
        drop_blocks(model, adapter, list(range(n)))


class TestContract_shortgpt(contract_for("shortgpt")):
    method = "shortgpt"
    e2e_patterns = {"structured": "structured-50"}
