"""Method cards (results/methods/): snapshotted from the registry, read by the site without it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.board.method_cards import SCHEMA, card, card_path, load_cards, write_card
from bench.outputs import OutputError
from methods import registry
from methods.base import TRAINING


def test_cards_say_which_methods_train() -> None:
    tags = {name: card(name)["training"] for name in registry.available()}
    assert set(tags.values()) <= set(TRAINING)
    assert tags["darwinlm"] == "search with training" and tags["llm_pruner_lora"] == "recovery training"
    assert tags["wanda"] == tags["sparsegpt"] == tags["llm_pruner"] == "one-shot"
    c = card("sparsegpt")
    assert c["schema"] == SCHEMA and c["defaults"]["blocksize"] == 128 and c["origin"] == "methods/sparsegpt.py"


def test_write_and_load_and_refuse_a_foreign_file(tmp_path: Path) -> None:
    path = write_card("wanda", card_path(tmp_path, "wanda"))
    assert load_cards(tmp_path) == {"wanda": json.loads(path.read_text())}
    foreign = card_path(tmp_path, "magnitude")
    foreign.write_text('{"mine": true}')
    with pytest.raises(OutputError):
        write_card("magnitude", foreign)
    assert foreign.read_text() == '{"mine": true}'


def test_committed_cards_match_the_registry() -> None:
    """results/methods/ is what `snakemake` (rule method_card) would write now."""
    from bench.packages import REPO_ROOT

    cards = load_cards(REPO_ROOT / "results")
    assert cards and all(c == card(name) for name, c in cards.items())
