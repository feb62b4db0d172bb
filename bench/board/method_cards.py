"""Method cards: what the site says about a method, snapshotted from the registry into results/.

Owns `card` (name, kind, description, paper, how it compares with its reference code, whether it
trains, capabilities, hyperparameter defaults, origin: all from the registered class),
`write_card` (results/methods/{name}.json, atomic, refusing a file this tool did not write) and
`load_cards`. The leaderboard reads the cards, never the registry, so the site stays a pure
function of results/ and builds where a method is not installed. Rule `method_card` writes them.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bench import outputs
from bench.results import schema_records
from methods import registry
from methods.base import TRAINING, PruneBenchError

SCHEMA = "prunebench.method-card/1"
KEYS = ("schema", "name", "training")


def _defaults(cls: type) -> Any:
    """The hyperparameters with their defaults (names only when one has no default)."""
    try:
        return json.loads(json.dumps(dataclasses.asdict(cls.Params()), default=str))
    except TypeError:
        return sorted(f.name for f in dataclasses.fields(cls.Params))


def card(name: str) -> dict[str, Any]:
    """The card of registered method `name`."""
    cls = registry.get(name)
    if cls.training not in TRAINING:
        raise PruneBenchError(f"method '{name}': training '{cls.training}' is not one of "
                              f"{', '.join(TRAINING)}")
    return {"schema": SCHEMA, "name": name, "kind": cls.kind, "description": cls.description,
            "paper": cls.paper, "fidelity": cls.fidelity, "training": cls.training,
            "capabilities": cls.capabilities.describe(), "defaults": _defaults(cls),
            "origin": registry.origin(name)}


def is_card(path: Path) -> bool:
    return outputs.json_object_with(path, KEYS)


def card_path(results_dir: Path, name: str) -> Path:
    return Path(results_dir) / "methods" / f"{name}.json"


def write_card(name: str, out: Path) -> Path:
    """Write `name`'s card to `out` (replacing only a card)."""
    text = json.dumps(card(name), indent=1, sort_keys=True) + "\n"
    with outputs.claim(Path(out), "--out", "file", is_card, create_parent=True) as claim:
        claim.tmp.write_text(text, encoding="utf-8")
    return Path(out)


def load_cards(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every card under results_dir/methods by method name; other files refused."""
    return {rec["name"]: rec
            for _, rec in schema_records(Path(results_dir) / "methods", "*.json", SCHEMA)}
