"""bench.train: the training loop learns, the schedule is sane, and the shipped artefact loads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.train import Recipe, Trainer, _finish, heldout_ppl, lr_at, main, train_chunks, \
    train_tokenizer

TEXT = "\n\n".join(
    f"The {c} cat number {i} sat on the {m} mat, and then it ran to the {c} house near the river."
    for i in range(300) for c, m in [("red", "blue"), ("green", "small")])


def tiny_recipe(**kw) -> Recipe:
    base = dict(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, ffn_dim=64, seqlen=32,
                batch_size=4, steps=40, lr=3e-3, warmup_steps=5, compile=False,
                bf16_autocast=False, eval_seqlen=32, eval_tokens=512)
    return Recipe(**{**base, **kw})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("zoo") / "opt-test"
    r = tiny_recipe()
    tok = train_tokenizer(TEXT, r.vocab_size, out, 64)
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])  # [N]
    return r, tok, out, train_chunks(ids, r.seqlen), ids[:512]


def test_tokenizer_roundtrip(setup):
    from transformers import AutoTokenizer

    _, tok, out, _, _ = setup
    loaded = AutoTokenizer.from_pretrained(str(out))
    enc = loaded("the red cat")["input_ids"]
    assert enc[0] == loaded.bos_token_id and loaded.pad_token_id is not None
    assert loaded.decode(enc, skip_special_tokens=True) == "the red cat"


def test_lr_schedule():
    r = tiny_recipe(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, r) == pytest.approx(0.1) and lr_at(9, r) == pytest.approx(1.0)
    assert lr_at(10, r) == pytest.approx(1.0) and lr_at(100, r) == pytest.approx(0.1)
    assert all(lr_at(s, r) >= lr_at(s + 1, r) for s in range(10, 100))


def test_training_reduces_loss_and_ships_a_loadable_model(setup):
    from transformers import AutoModelForCausalLM

    r, tok, out, chunks, eval_ids = setup
    t = Trainer(r, tok, chunks)
    before = heldout_ppl(t.model, eval_ids, r.eval_seqlen)
    losses = [t.step() for _ in range(r.steps)]
    after = heldout_ppl(t.model, eval_ids, r.eval_seqlen)
    assert sum(losses[-5:]) < sum(losses[:5]) and after < before / 2
    card = _finish(r, out, t.model, "0" * 64, t.state, after, eval_ids.numel(), len(tok), "test")
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.model_type == "opt" and model.config.do_layer_norm_before
    assert model.config.word_embed_proj_dim == model.config.hidden_size
    assert model.get_output_embeddings().weight.data_ptr() == \
        model.get_input_embeddings().weight.data_ptr()  # tied
    assert next(AutoModelForCausalLM.from_pretrained(str(out), dtype="auto").parameters()).dtype \
        == torch.float16
    saved = json.loads((out / "model_card.json").read_text())
    assert saved == json.loads(json.dumps(card)) and saved["trained_here"] is True
    assert saved["tokens_seen"] == r.steps * r.batch_size * r.seqlen
    reload_ppl = heldout_ppl(model.float(), eval_ids, r.eval_seqlen)
    assert reload_ppl == pytest.approx(after, rel=1e-4)


def test_same_seed_same_training(setup):
    r, tok, _, chunks, _ = setup
    a, b = Trainer(r, tok, chunks), Trainer(r, tok, chunks)
    assert [a.step() for _ in range(3)] == [b.step() for _ in range(3)]


def test_resume_is_exact(setup, tmp_path: Path):
    r, tok, _, chunks, _ = setup
    ref = Trainer(r, tok, chunks)
    ref_losses = [ref.step() for _ in range(6)]
    first = Trainer(r, tok, chunks)
    [first.step() for _ in range(3)]
    first.save(tmp_path / "ckpt.pt")
    second = Trainer(r, tok, chunks)
    second.try_resume(tmp_path / "ckpt.pt")
    assert second.state["step"] == 3
    assert [second.step() for _ in range(3)] == pytest.approx(ref_losses[3:], rel=1e-5)


def test_bad_arch_is_rejected(setup):
    r, tok, _, chunks, _ = setup
    with pytest.raises(ValueError, match="choose 'opt' or 'mamba'"):
        Trainer(tiny_recipe(arch="llama"), tok, chunks)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path: Path):
    """The real entry point on the real corpus, a few steps (tokenises the train corpus: ~1 min)."""
    out = tmp_path / "opt-cli"
    main(["--out", str(out), "--steps", "3", "--warmup-steps", "1", "--hidden-size", "32",
          "--num-layers", "1", "--num-heads", "2", "--ffn-dim", "64", "--seqlen", "64",
          "--batch-size", "2", "--eval-tokens", "1024", "--vocab-size", "512", "--no-compile"])
    card = json.loads((out / "model_card.json").read_text())
    assert card["recipe"]["steps"] == 3 and card["heldout"]["n_tokens"] == 1024
