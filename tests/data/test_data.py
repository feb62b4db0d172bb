"""Corpora (wiki / calib / train), their disjointness, calibration sampling and calibration files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.data import (NGRAM, Corpus, bos_id, eval_token_ids, load_calibration, load_corpus,
                        sample_calibration, save_calibration, token_ids_sha256)


@pytest.fixture(scope="module")
def corpora() -> dict[str, Corpus]:
    return {name: load_corpus(name) for name in ("wiki", "calib", "train")}


@pytest.fixture(scope="module")
def tokenizer(corpora, tmp_path_factory):
    """A small byte-level BPE trained in a second on a slice of the calibration text."""
    from bench.train import train_tokenizer

    return train_tokenizer(corpora["calib"].text[:200_000], 512,
                           tmp_path_factory.mktemp("tok"), 512)


def _docs(c: Corpus) -> set[str]:
    return set(c.text.split("\n\n"))


def _grams(c: Corpus) -> set[str]:
    out: set[str] = set()
    for doc in c.text.split("\n\n"):
        w = doc.lower().split()
        out.update(" ".join(w[i:i + NGRAM]) for i in range(len(w) - NGRAM + 1))
    return out


def test_corpora_load_and_are_consistent(corpora):
    import hashlib

    for name, c in corpora.items():
        assert c.name == name and c.n_docs > 100 and len(c.text) > 1_000_000
        assert c.sha256 == hashlib.sha256(c.text.encode("utf-8")).hexdigest()
        assert len(c.text.split("\n\n")) == c.n_docs  # documents recoverable
        assert sum(s["n_docs"] for s in c.sources) == c.n_docs
        # documents are unique, except the declared repeats of upweighted sources
        assert len(_docs(c)) == sum(s["n_docs"] // s.get("repeats", 1) for s in c.sources)
        for s in c.sources:
            assert {"package", "version", "path", "field", "license", "n_docs"} <= set(s)


def test_cached_corpus_is_identical(corpora):
    again = load_corpus("wiki")
    assert again.sha256 == corpora["wiki"].sha256 and again.text == corpora["wiki"].text


def test_unknown_corpus_lists_names():
    with pytest.raises(ValueError, match="wiki.*calib.*train"):
        load_corpus("wikitext")


def test_calib_and_train_share_nothing_with_wiki(corpora):
    wiki_docs, wiki_grams = _docs(corpora["wiki"]), _grams(corpora["wiki"])
    for name in ("calib", "train"):
        assert not wiki_docs & _docs(corpora[name]), f"{name} shares a document with wiki"
        assert not wiki_grams & _grams(corpora[name]), f"{name} shares a {NGRAM}-gram with wiki"


def test_train_holds_no_zero_shot_task_data(corpora):
    paths = " ".join(s["path"] for s in corpora["train"].sources)
    for task in ("hellaswag", "piqa", "arc", "openbookqa", "winogrande", "boolq", "rte"):
        assert f"/{task}" not in paths, f"train uses {task}, a zero-shot evaluation task"
    assert {s["path"].split("/")[2] for s in corpora["train"].sources if s.get("repeats", 1) > 1}


def test_calib_is_part_of_train(corpora):
    assert _docs(corpora["calib"]) <= _docs(corpora["train"])


def test_calibration_sampling_is_deterministic(corpora, tokenizer):
    a = sample_calibration(tokenizer, corpora["calib"], n_samples=4, seqlen=64, seed=0)
    b = sample_calibration(tokenizer, corpora["calib"], n_samples=4, seqlen=64, seed=0)
    c = sample_calibration(tokenizer, corpora["calib"], n_samples=4, seqlen=64, seed=1)
    assert a.shape == (4, 64) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.max()) < len(tokenizer) and int(a.min()) >= 0
    with pytest.raises(ValueError):
        sample_calibration(tokenizer, corpora["calib"], n_samples=0, seqlen=64, seed=0)


def test_the_bos_rule_puts_the_bos_in_front_of_every_calibration_window(corpora, tokenizer):
    """The tokenizers trained here add `</s>` by default: each window is it and 63 consecutive
    text tokens from the same seeded starts; a tokenizer that adds nothing gets the plain
    windows of 64, as before the rule."""
    import copy

    from tokenizers import processors

    assert bos_id(tokenizer) == tokenizer.bos_token_id is not None
    ids = eval_token_ids(tokenizer, corpora["calib"], None)
    starts = torch.randint(0, ids.numel() - 63, (4,), generator=torch.Generator().manual_seed(0))
    got = sample_calibration(tokenizer, corpora["calib"], n_samples=4, seqlen=64, seed=0)
    assert got.shape == (4, 64) and (got[:, 0] == tokenizer.bos_token_id).all()
    assert torch.equal(got[:, 1:], ids[starts[:, None] + torch.arange(63)])
    plain = copy.deepcopy(tokenizer)
    plain.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    assert bos_id(plain) is None
    starts = torch.randint(0, ids.numel() - 64, (4,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_calibration(plain, corpora["calib"], n_samples=4, seqlen=64, seed=0),
                       ids[starts[:, None] + torch.arange(64)])


def test_eval_token_ids(corpora, tokenizer):
    ids = eval_token_ids(tokenizer, corpora["wiki"], 5000)
    assert ids.shape == (5000,) and ids.dtype == torch.int64
    assert int(ids[0]) != tokenizer.bos_token_id  # no special tokens
    assert torch.equal(ids, eval_token_ids(tokenizer, corpora["wiki"], 5000))
    assert token_ids_sha256(ids) == token_ids_sha256(ids.clone())
    assert token_ids_sha256(ids) != token_ids_sha256(ids[:-1])


def test_calibration_file_roundtrip(tmp_path: Path):
    ids = torch.arange(24, dtype=torch.int64).view(3, 8)
    path = tmp_path / "sub" / "calib.safetensors"
    save_calibration(path, ids, {"corpus": "calib", "seed": "0"})
    got, meta = load_calibration(path)
    assert torch.equal(got, ids) and meta == {"corpus": "calib", "seed": "0"}
    assert [p.name for p in path.parent.iterdir()] == ["calib.safetensors"]  # no tmp left


def test_bad_calibration_inputs_and_files(tmp_path: Path):
    with pytest.raises(ValueError, match="int64"):
        save_calibration(tmp_path / "x.safetensors", torch.zeros(2, 3), {})
    with pytest.raises(ValueError, match="str -> str"):
        save_calibration(tmp_path / "x.safetensors", torch.zeros(2, 3, dtype=torch.int64),
                         {"seed": 0})
    with pytest.raises(FileNotFoundError):
        load_calibration(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_calibration(corrupt)
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"input_ids": torch.zeros(5, dtype=torch.int64)}, str(wrong))
    with pytest.raises(ValueError, match="2-D int64"):
        load_calibration(wrong)


def test_stale_calibration_is_sampled_again(tmp_path, monkeypatch) -> None:
    """A cached calibration file made with another tokenizer (a retrained zoo model) holds ids of
    another vocabulary: the default file is sampled again, an explicit one is refused."""
    from bench import data
    from bench.data import calibration
    from bench.config import load_config
    from bench.packages import REPO_ROOT
    from methods.base import PruneBenchError

    cfg = load_config(REPO_ROOT / "config" / "smoke.yaml")
    monkeypatch.setattr(calibration, "calib_path", lambda key: tmp_path / f"{key}.safetensors")
    good, meta = calibration.load_calibration_for("tiny-llama", cfg, None)
    stale = dict(meta, tokenizer_sha256="0" * 64)
    data.save_calibration(tmp_path / "tiny-llama.safetensors", torch.zeros_like(good), stale)
    again, meta2 = calibration.load_calibration_for("tiny-llama", cfg, None)
    assert torch.equal(again, good) and meta2["tokenizer_sha256"] == meta["tokenizer_sha256"]
    data.save_calibration(tmp_path / "other.safetensors", good, stale)
    with pytest.raises(PruneBenchError, match="tokenizer_sha256"):
        calibration.load_calibration_for("tiny-llama", cfg, tmp_path / "other.safetensors")
