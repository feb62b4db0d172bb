"""The method registry: built-in methods, the `@register` decorator, and entry-point plugins.

Owns: name -> Method class. Built-ins are the modules in methods/ listed in BUILTIN_MODULES;
outside packages register through the entry-point group `prunebench.methods` (each entry point
points at a Method subclass). Duplicate names raise; unknown names say "did you mean"; a plugin
that fails to import is reported by name with its error and does not break the others.
"""
from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from methods.base import Method, PruneBenchError, did_you_mean

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "prunebench.methods"
BUILTIN_MODULES = ("methods.dense", "methods.magnitude", "methods.wanda", "methods.sparsegpt",
                   "methods.apt", "methods.llm_pruner", "methods.darwinlm")

_REGISTRY: dict[str, type[Method]] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_loaded = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass to the registry under `cls.name`."""
    if not isinstance(cls, type) or not issubclass(cls, Method):
        raise TypeError(f"{cls!r} is not a Method subclass")
    if not cls.name:
        raise PruneBenchError(f"method class {cls.__name__} has no name")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise PruneBenchError(f"method name '{cls.name}' registered twice "
                              f"({existing.__module__}.{existing.__name__} and "
                              f"{cls.__module__}.{cls.__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_plugins() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Method):
                register(obj)
        except Exception as exc:  # a broken plugin must not break the others
            _PLUGIN_ERRORS[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("method plugin '%s' (%s) failed to load: %s", ep.name, ep.value, exc)


def ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    _load_plugins()


def available() -> dict[str, type[Method]]:
    ensure_loaded()
    return dict(sorted(_REGISTRY.items()))


def plugin_errors() -> dict[str, str]:
    ensure_loaded()
    return dict(_PLUGIN_ERRORS)


def get(name: str) -> type[Method]:
    ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _PLUGIN_ERRORS:
        raise PruneBenchError(f"method plugin '{name}' failed to load: {_PLUGIN_ERRORS[name]}")
    raise PruneBenchError(f"unknown method '{name}'{did_you_mean(name, list(_REGISTRY))}")


def create(name: str, params: dict[str, Any] | None = None) -> Method:
    return get(name)(params)
