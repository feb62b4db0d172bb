"""A model's calibration token ids: sampled once, cached, and verified every time they are used.

Owns: the cache path (work/calib/{model}.safetensors), what a calibration file must match (the
protocol, the model's current tokenizer), `make_calibration` (seeded sampling, written through
`bench.outputs`) and `load_calibration_for`, which checks a file before any model is loaded:
its ids against the sha256 recorded beside them, against the tokenizer's vocabulary, its
protocol and shape against the config. The default cache is sampled again (with a warning) when
stale or corrupt in content; a file given with `--calib` is refused instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from bench import data, outputs
from bench.zoo import models
from bench.packages import work_dir
from bench.zoo import spec_for
from methods.base import PruneBenchError

log = logging.getLogger(__name__)


def calib_path(model_key: str) -> Path:
    return work_dir() / "calib" / f"{model_key}.safetensors"


def tokenizer_digest(tok: Any) -> str:
    """sha256 of a tokenizer's full definition: calibration ids are only valid for this one."""
    backend = getattr(tok, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _tokenizer(model_key: str, cfg: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    spec = spec_for(cfg, model_key)
    return AutoTokenizer.from_pretrained(models.prepare(spec))


def _identity(model_key: str, cfg: dict[str, Any], tok: Any) -> dict[str, str]:
    """What a calibration file must match: the protocol and the model's current tokenizer."""
    c = cfg["calibration"]
    bos = data.bos_id(tok)        # recorded only where it applies: older files stay valid
    return {"model": model_key, "corpus": c["corpus"], "n_samples": str(c["n_samples"]),
            "seqlen": str(c["seqlen"]), "seed": str(c["seed"]),
            "tokenizer_sha256": tokenizer_digest(tok), **({"bos": str(bos)} if bos is not None else {})}


def is_calibration_file(path: Path) -> bool:
    """A file this tool wrote as calibration ids (readable header with our metadata)."""
    meta = data.safetensors_metadata(path)
    return meta is not None and {"sha256", "model", "tokenizer_sha256"} <= set(meta)


def make_calibration(model_key: str, cfg: dict[str, Any], out: Path | None = None,
                     tok: Any = None) -> Path:
    """Sample the model's calibration ids (seeded) and save them: work/calib/{model}.safetensors
    unless `out`. Waits for another writer of the default cache and reuses what it wrote."""
    default = out is None or Path(out) == calib_path(model_key)
    out = calib_path(model_key) if out is None else Path(out)
    c = cfg["calibration"]
    with outputs.claim(out, "calibration file" if default else "--out", "file",
                       is_calibration_file, create_parent=default, wait=default) as claim:
        tok = tok if tok is not None else _tokenizer(model_key, cfg)
        if default and _usable(out, _identity(model_key, cfg, tok), cfg, len(tok)):
            claim.abandon()                       # another process sampled it meanwhile
            return out
        corpus = data.load_corpus(c["corpus"])
        ids = data.sample_calibration(tok, corpus, c["n_samples"], c["seqlen"], c["seed"])
        meta = {"model": model_key, "corpus": c["corpus"], "corpus_sha256": corpus.sha256,
                "n_samples": str(c["n_samples"]), "seqlen": str(c["seqlen"]), "seed": str(c["seed"]),
                "sha256": data.token_ids_sha256(ids), "tokenizer_sha256": tokenizer_digest(tok)}
        if (bos := data.bos_id(tok)) is not None:
            meta["bos"] = str(bos)
        data.save_calibration(claim.tmp, ids, meta)
    log.info("calibration %s: %s tokens, sha256 %s", out, ids.numel(), meta["sha256"][:12])
    return out


def _usable(path: Path, want: dict[str, str], cfg: dict[str, Any], vocab: int) -> bool:
    try:
        return _problem(path, want, cfg, vocab) is None
    except ValueError:
        return False


def _problem(path: Path, want: dict[str, str], cfg: dict[str, Any], vocab: int) -> str | None:
    """Why the calibration file at `path` cannot be used for `want`, or None when it can."""
    if not path.is_file():
        return "missing"
    ids, meta = data.load_calibration(path)
    stale = sorted(k for k, v in want.items() if k != "model" and meta.get(k) != v)
    if meta.get("model", want["model"]) != want["model"]:
        return f"made for model '{meta.get('model')}'"
    if stale:
        return f"{', '.join(stale)} differ"
    if meta.get("sha256") != data.token_ids_sha256(ids):
        return "its token ids do not match the sha256 recorded beside them"
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        return f"token ids outside the tokenizer's vocabulary [0, {vocab})"
    c = cfg["calibration"]
    if tuple(ids.shape) != (c["n_samples"], c["seqlen"]):
        return f"shape {tuple(ids.shape)}, the config wants ({c['n_samples']}, {c['seqlen']})"
    return None


def check_explicit(path: Path | None) -> None:
    """A `--calib` file that does not exist: found before anything is loaded."""
    if path is not None and not Path(path).is_file():
        raise PruneBenchError(f"--calib: calibration file not found: {path}")


def load_calibration_for(model_key: str, cfg: dict[str, Any], path: Path | None,
                         tok: Any = None) -> tuple[torch.Tensor, dict]:
    """The model's calibration ids [n_samples, seqlen] (sampled on first use), verified. `tok`:
    the model's tokenizer when the caller has loaded it already (else it is loaded here)."""
    check_explicit(path)
    default = path is None or Path(path) == calib_path(model_key)
    path = calib_path(model_key) if path is None else Path(path)
    tok = tok if tok is not None else _tokenizer(model_key, cfg)
    want = _identity(model_key, cfg, tok)
    try:
        why = _problem(path, want, cfg, len(tok))
    except ValueError as exc:              # unreadable: never replaced, whoever wrote it
        raise PruneBenchError(f"{exc}; delete it to sample again" if default else str(exc)) from None
    if why is not None and not default:
        raise PruneBenchError(f"calibration file {path} cannot be used: {why}")
    if why is not None:
        if why != "missing":
            log.warning("calibration %s cannot be used (%s); sampling again", path, why)
        make_calibration(model_key, cfg, path, tok)
        why = _problem(path, want, cfg, len(tok))
        if why is not None:
            raise PruneBenchError(f"calibration file {path} cannot be used: {why}")
    return data.load_calibration(path)
