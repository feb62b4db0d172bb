"""Registry: names, did-you-mean, duplicates, hyperparameter validation, broken plugins."""
from __future__ import annotations

import pkgutil
from importlib.metadata import EntryPoint

import pytest

import methods
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
    with pytest.raises(PruneBenchError, match="must be an integer"):
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


def test_a_dropped_file_registers_and_a_broken_file_is_named(tmp_path, monkeypatch) -> None:
    import sys
    import textwrap

    import methods

    (tmp_path / "dropped_rule.py").write_text(textwrap.dedent('''
        from methods.base import Capabilities, LayerwiseMethod
        from methods.registry import register

        @register
        class Dropped(LayerwiseMethod):
            name = "dropped_rule"
            capabilities = Capabilities(kinds=frozenset({"unstructured"}))
            description = "a file dropped into methods/"
    '''))
    (tmp_path / "broken_rule.py").write_text("raise RuntimeError('half-written')\n")
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    for name, value in (("_REGISTRY", dict(registry._REGISTRY)), ("_ORIGIN", dict(registry._ORIGIN)),
                        ("_PLUGIN_ERRORS", {}), ("_loaded", False)):
        monkeypatch.setattr(registry, name, value)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    for mod in ("methods.dropped_rule", "methods.broken_rule"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    assert "methods.dropped_rule" in registry.method_modules()
    assert "dropped_rule" in registry.available() and "wanda" in registry.available()
    assert registry.origin("dropped_rule") == "methods/dropped_rule.py"
    assert registry.plugin_errors()["broken_rule"] == "methods/broken_rule.py: RuntimeError: half-written"
    with pytest.raises(PruneBenchError, match="unknown method 'nope'.*failed to load: methods/broken_rule.py"):
        registry.get("nope")
    monkeypatch.delitem(sys.modules, "methods.dropped_rule", raising=False)


def test_a_method_line_without_runs_is_a_config_error() -> None:
    from bench.config import load_config, plan
    from bench.tools.contract import smoke_config

    raw = smoke_config()
    raw["patterns"] = ["structured-20"]
    raw["methods"] = {"wanda": {}, "llm_pruner": {"n_samples": 4, "seqlen": 64}}
    with pytest.raises(PruneBenchError, match="method 'wanda' has no run in this grid.*cannot do pattern"):
        plan(load_config(raw))


def test_every_module_of_methods_is_a_method_or_named_support() -> None:
    """A shared-code module missing from SUPPORT_MODULES would be imported as a method file (and
    `new-method` would accept its name); a method file in it would never be loaded."""
    origins = {registry.origin(name) for name in registry.available()}
    for m in pkgutil.iter_modules(methods.__path__):
        if m.name.startswith("_"):
            continue
        defines = any(o.startswith(f"methods/{m.name}.py") for o in origins)
        assert defines != (m.name in registry.SUPPORT_MODULES), m.name
