"""The method registry: method files in methods/, the `@register` decorator, entry-point plugins.

Owns: name -> Method class, and where each came from. Every module file in the methods/ package
is imported on first use (drop a file in, it is registered: no list to edit); outside packages
register through the entry-point group `prunebench.methods` (each entry point names a Method
subclass, or a module whose import registers its methods). Duplicate names raise; unknown names
say "did you mean"; a method file or plugin that fails to import is reported by name with its
error and does not break the others.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import methods
from methods import allocation as allocation_mod
from methods import dsnot as dsnot_mod
from methods.base import LayerwiseMethod, Method, PruneBenchError, did_you_mean

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "prunebench.methods"
# modules of the methods/ package that hold shared code, never a method
SUPPORT_MODULES = frozenset({"base", "registry", "masks", "units", "hessian", "evolution",
                             "structured_obs", "level_db", "allocation", "dsnot", "permutation"})

_REGISTRY: dict[str, type[Method]] = {}
_ORIGIN: dict[str, str] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_loading_origin: str | None = None
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
    module = cls.__module__
    in_tree = module.startswith("methods.") and module.count(".") == 1
    _ORIGIN.setdefault(cls.name, module.replace(".", "/") + ".py" if in_tree
                       else _loading_origin or module)
    return cls


def method_modules() -> list[str]:
    """Every module of the methods/ package that may define methods, sorted."""
    return sorted(f"methods.{m.name}" for m in pkgutil.iter_modules(methods.__path__)
                  if not m.name.startswith("_") and m.name not in SUPPORT_MODULES)


def _import_as(origin: str | None, load: Any) -> Any:
    global _loading_origin
    _loading_origin = origin
    try:
        return load()
    finally:
        _loading_origin = None


def _load_files() -> None:
    for module in method_modules():
        origin = module.replace(".", "/") + ".py"
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken method file must not break the others
            key = module.rsplit(".", 1)[1]
            _PLUGIN_ERRORS[key] = f"{origin}: {type(exc).__name__}: {exc}"
            log.warning("method file %s failed to import: %s", origin, exc)


def _load_plugins() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        origin = f"{dist.name} {dist.version}" if dist is not None else ep.value
        try:
            obj = _import_as(origin, ep.load)
            if isinstance(obj, type) and issubclass(obj, Method):
                _import_as(origin, lambda: register(obj))
            elif not isinstance(obj, ModuleType):
                raise PruneBenchError(f"entry point {ep.value} is neither a Method subclass "
                                      f"nor a module")
        except Exception as exc:  # a broken plugin must not break the others
            _PLUGIN_ERRORS[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("method plugin '%s' (%s) failed to load: %s", ep.name, ep.value, exc)


def ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    _load_files()
    _load_plugins()


def available() -> dict[str, type[Method]]:
    ensure_loaded()
    return dict(sorted(_REGISTRY.items()))


def origin(name: str) -> str:
    """Where a registered method comes from: 'methods/<file>.py' or '<distribution> <version>'."""
    get(name)
    return _ORIGIN[name]


def label(name: str) -> str:
    """How errors name a method: "method 'x' (methods/x.py)" or "(distribution version)"."""
    return f"method '{name}' ({_ORIGIN.get(name, 'not registered')})"


def plugin_errors() -> dict[str, str]:
    ensure_loaded()
    return dict(_PLUGIN_ERRORS)


def _variant(name: str) -> type[Method] | None:
    """`<method>_owl` (the OWL-allocated variant, methods/allocation.py) and `<method>_dsnot`
    (the DSnoT-refined one, methods/dsnot.py) of a layer-wise method, made on first use with
    its base's origin; suffixes compose (`wanda_owl_dsnot`). Variants are not listed by
    `available()`, so what it lists never depends on what was asked for before."""
    makers = {suffix: (lambda b, a=allocation: allocation_mod.with_allocation(b, a))
              for allocation, suffix in allocation_mod.SUFFIX.items()}
    makers[dsnot_mod.SUFFIX] = dsnot_mod.with_dsnot
    for suffix, make in makers.items():
        if not name.endswith(suffix) or len(name) == len(suffix):
            continue
        base_name = name[:-len(suffix)]
        try:
            base = get(base_name)
        except PruneBenchError:
            return None
        if not issubclass(base, LayerwiseMethod):
            return None
        cls = make(base)
        _ORIGIN.setdefault(name, _ORIGIN[base_name])
        return cls
    return None


def get(name: str) -> type[Method]:
    ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    variant = _variant(name)
    if variant is not None:
        return variant
    if name in _PLUGIN_ERRORS:
        raise PruneBenchError(f"method plugin '{name}' failed to load: {_PLUGIN_ERRORS[name]}")
    broken = f" (failed to load: {'; '.join(_PLUGIN_ERRORS.values())})" if _PLUGIN_ERRORS else ""
    raise PruneBenchError(f"unknown method '{name}'{did_you_mean(name, list(_REGISTRY))}{broken}")


def create(name: str, params: dict[str, Any] | None = None) -> Method:
    return get(name)(params)
