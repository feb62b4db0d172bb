"""Registry: names, did-you-mean, duplicates, hyperparameter validation, broken plugins."""
from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from methods import registry
from methods.base import Capabilities, LayerwiseMethod, PruneBenchError, parse_pattern


def test_builtins_registered() -> None:
    names = set(registry.available())
    assert {"dense", "magnitude", "wanda", "sparsegpt"} <= names


def test_unknown_method_did_you_mean() -> None:
    with pytest.raises(PruneBenchError, match="did you mean 'wanda'"):
        registry.get("wandaa")


def test_duplicate_name_raises() -> None:
    class Other(LayerwiseMethod):
        name = "wanda"
        capabilities = Capabilities(kinds=frozenset({"unstructured"}))

    with pytest.raises(PruneBenchError, match="registered twice"):
        registry.register(Other)


def test_unknown_hyperparameter_rejected() -> None:
    with pytest.raises(PruneBenchError, match="unknown hyperparameter 'blocksz'.*did you mean 'blocksize'"):
        registry.create("sparsegpt", {"blocksz": 64})
    with pytest.raises(PruneBenchError, match="unknown hyperparameter"):
        registry.create("wanda", {"alpha": 1})
    with pytest.raises(PruneBenchError, match="must be int"):
        registry.create("sparsegpt", {"blocksize": "big"})
    assert registry.create("sparsegpt", {"percdamp": 1}).params.percdamp == 1.0


def test_pattern_capability_check() -> None:
    with pytest.raises(PruneBenchError, match="cannot do pattern 'structured-20'"):
        registry.create("wanda").check(parse_pattern("structured-20"), "llama")
    with pytest.raises(PruneBenchError, match="cannot do pattern '2of4'"):
        registry.create("dense").check(parse_pattern("2of4"), "opt")


def test_broken_plugin_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    good = EntryPoint("mygood", "methods.magnitude:Magnitude", registry.ENTRY_POINT_GROUP)
    bad = EntryPoint("mybroken", "no_such_module_xyz:Method", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [bad, good])
    monkeypatch.setattr(registry, "_PLUGIN_ERRORS", {})
    registry._load_plugins()
    errors = registry.plugin_errors()
    assert "mybroken" in errors and "ModuleNotFoundError" in errors["mybroken"]
    with pytest.raises(PruneBenchError, match="plugin 'mybroken' failed to load"):
        registry.get("mybroken")
    assert registry.get("magnitude") is not None
