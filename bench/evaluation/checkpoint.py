"""A pruned checkpoint as the next step receives it: prune.json, its seal, and the checks that
the folder holds what prune.json says.

Owns: `PRUNE_JSON`; `identity` (architecture, vocabulary, width and depth of a config: what a
zoo key promises); `seal_record` (prune.json gains the sha256 of every file beside it and a
seal, the sha256 of the whole record, so an edited prune.json or a swapped weight file is
found); `is_checkpoint` (the ownership test `bench.outputs.claim` uses before it replaces a
folder: only a checkpoint this tool wrote, holding no file it did not write); `read` (parse,
seal and file hashes, before any model is loaded) and `verify` (the checkpoint's config against
the record and against the zoo model the record names; the method registered, of the recorded
kind and able to do the pattern); `IN_PERMS`, the sealed file of the input permutations under
which a layer's N:M mask holds (methods/permutation.py), written and read here.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bench import outputs
from bench.zoo import fits, models
from bench.adapters import adapter_for
from bench.packages import REPO_ROOT, sha256_bytes, sha256_file
from bench.structure.depth import dense_layers
from bench.zoo import load_zoo
from methods import registry
from methods.base import PruneBenchError, parse_pattern

log = logging.getLogger(__name__)

PRUNE_JSON = "prune.json"
IN_PERMS = "prunebench_in_perms.safetensors"     # layer name -> [in] int64 input permutation
REQUIRED = ("model", "method", "pattern", "created_at")
# names transformers' save_pretrained writes (checkpoints of PruneBench before the seal)
_LEGACY = re.compile(r"^(config\.json|generation_config\.json|model(-\d+-of-\d+)?\.safetensors|"
                     r"model\.safetensors\.index\.json|tokenizer(_config)?\.json|tokenizer\.model|"
                     r"special_tokens_map\.json|added_tokens\.json|vocab\.json|merges\.txt|"
                     r"chat_template\.(jinja|json)|prune\.json)$")
_WEIGHTS = re.compile(r"\.(safetensors|bin|pt|pth|gguf)$")


def identity(config: Any) -> dict[str, Any]:
    """What a zoo key promises about a model: architecture, vocabulary, width, depth. Pruning
    keeps every one of them (structured pruning narrows heads and channels; depth pruning
    removes blocks but records the dense depth)."""
    arch = adapter_for(SimpleNamespace(config=config)).arch
    return {"arch": arch, "vocab_size": getattr(config, "vocab_size", None),
            "hidden_size": getattr(config, "hidden_size", None),
            # a depth-pruned model (bench/structure/depth.py) promises its dense depth
            "num_hidden_layers": dense_layers(config)}


def _canonical(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "seal"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def seal_record(folder: Path, info: dict[str, Any], config: Any) -> dict[str, Any]:
    """prune.json's record for the files now in `folder`: their sha256, the config's identity
    and the seal. `info` is made JSON-native first (what the file will hold)."""
    record = json.loads(json.dumps(info, default=str))
    files = {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir())
             if p.is_file() and p.name != PRUNE_JSON}
    record["checkpoint"] = {"files": files, "identity": identity(config)}
    record["seal"] = sha256_bytes(_canonical(record))
    return record


def _parse(folder: Path) -> dict[str, Any] | None:
    record = outputs.json_object(folder / PRUNE_JSON)
    if record is None or not all(isinstance(record.get(k), (dict, str)) for k in REQUIRED):
        return None
    return record


def is_checkpoint(folder: Path) -> bool:
    """True for a folder this tool wrote as a checkpoint and nobody added anything to."""
    folder = Path(folder)
    record = _parse(folder) if (folder / PRUNE_JSON).is_file() else None
    if record is None:
        return False
    files = record.get("checkpoint", {}).get("files") if isinstance(record.get("checkpoint"),
                                                                     dict) else None
    names = {p.name for p in folder.iterdir()}
    if isinstance(files, dict):
        return names <= set(files) | {PRUNE_JSON} and all((folder / n).is_file() for n in names)
    return all(_LEGACY.match(n) and (folder / n).is_file() for n in names)


def read(checkpoint: Path) -> dict[str, Any]:
    """prune.json of `checkpoint`, checked against its seal and the files beside it."""
    folder = Path(checkpoint)
    path = folder / PRUNE_JSON
    if not folder.is_dir():
        raise PruneBenchError(f"checkpoint {folder} does not exist or is not a folder "
                              f"(no {PRUNE_JSON})")
    if not path.is_file():
        raise PruneBenchError(f"{folder} is not a PruneBench checkpoint (no {PRUNE_JSON})")
    record = _parse(folder)
    if record is None:
        raise PruneBenchError(f"corrupt {path}: not a JSON object with {', '.join(REQUIRED)}")
    if "seal" not in record or not isinstance(record.get("checkpoint"), dict):
        raise PruneBenchError(f"{path} predates checkpoint integrity records (no seal); prune "
                              f"this checkpoint again")
    if record["seal"] != sha256_bytes(_canonical(record)):
        raise PruneBenchError(f"{path} was changed after pruning (its seal does not match); "
                              f"prune this checkpoint again")
    files = record["checkpoint"].get("files", {})
    for name, digest in files.items():
        if not (folder / name).is_file():
            raise PruneBenchError(f"checkpoint {folder} lacks {name}, which prune.json records")
        if sha256_file(folder / name) != digest:
            raise PruneBenchError(f"checkpoint {folder}: {name} is not the file that was "
                                  f"pruned (sha256 differs from prune.json)")
    extra = sorted(p.name for p in folder.iterdir() if _WEIGHTS.search(p.name) and p.name not in files)
    if extra:
        raise PruneBenchError(f"checkpoint {folder} holds weights prune.json does not record: "
                              f"{', '.join(extra[:3])}")
    return record


def verify(record: dict[str, Any], config: Any, zoo_config: Any | None, where: Path) -> None:
    """The checkpoint's `config` (loaded from `where`) against its record, and against the
    config of the zoo model the record names (`zoo_config`, None when unavailable offline);
    the recorded method against the registry. One-line PruneBenchError on any mismatch."""
    mine = identity(config)
    said = record["model"].get("arch")
    if mine["arch"] != said:
        raise PruneBenchError(f"checkpoint {where} holds a {mine['arch']} model, but its "
                              f"prune.json says {said}")
    recorded = record["checkpoint"].get("identity")
    if recorded != mine:
        raise PruneBenchError(f"checkpoint {where}: its config {mine} differs from the one "
                              f"prune.json records {recorded}")
    key = record["model"].get("key")
    if zoo_config is not None:
        theirs = identity(zoo_config)
        if theirs != mine:
            diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
            raise PruneBenchError(f"checkpoint {where} is not a pruned '{key}' (its config differs "
                                  f"from the zoo model's: {diff})")
    name = record["method"].get("name")
    cls = registry.get(str(name))
    if record["method"].get("kind") != cls.kind:
        raise PruneBenchError(f"checkpoint {where}: prune.json says method '{name}' is of kind "
                              f"'{record['method'].get('kind')}', the registered one is '{cls.kind}'")
    pattern = parse_pattern(str(record["pattern"].get("slug")))
    if pattern.kind != "dense":
        cls(record["method"].get("params") or {}).check(pattern, mine["arch"])


def verify_against_zoo(record: dict[str, Any], where: Path, cfg: dict[str, Any]) -> Any:
    """`verify` with the checkpoint's own config.json and the zoo's config of the model its
    record names, plus the config's sequence lengths against it; returns the config. Reads no
    weights, so it runs before any model is loaded."""
    key = str(record["model"].get("key"))
    zoo = load_zoo(REPO_ROOT / cfg["zoo"])
    if key not in zoo:
        raise PruneBenchError(f"checkpoint {where}: prune.json names model '{key}', which is not "
                              f"in the zoo {cfg['zoo']}")
    config = models.checkpoint_config(where)
    zoo_config = fits.zoo_config(zoo[key])
    if zoo_config is None:
        log.warning("cannot check checkpoint %s against zoo model '%s': its config is not "
                    "available offline", where, key)
    verify(record, config, zoo_config, where)
    fits.check_lengths(cfg, key, config, [])
    return config


def write_in_perms(folder: Path, perms: dict[str, torch.Tensor]) -> str:
    """Save the layers' input permutations beside the weights (before the seal); its name."""
    save_file({name: p.to("cpu", torch.int64).contiguous() for name, p in perms.items()},
              str(Path(folder) / IN_PERMS))
    return IN_PERMS


def read_in_perms(folder: Path, record: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The input permutations a sealed checkpoint records (None when it has none)."""
    name = (record.get("cost", {}).get("engine") or {}).get("in_perm_file")
    if name is None:
        return None
    if name != IN_PERMS or name not in record["checkpoint"].get("files", {}):
        raise PruneBenchError(f"checkpoint {folder}: prune.json names input permutations "
                              f"'{name}' that its seal does not cover")
    return load_file(str(Path(folder) / name))
