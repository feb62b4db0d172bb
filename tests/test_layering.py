"""The house rules of docs/architecture.md, checked on the source: no import circle among the
modules of bench/ and methods/, function-level imports of our own modules only where a command
stays light on purpose, and one list of architectures."""
from __future__ import annotations

import ast
from pathlib import Path

from bench import results
from bench.tools import contract
from bench.adapters import ADAPTERS
from bench.packages import REPO_ROOT
from bench.zoo import ARCHS

# the wing folders of bench/, in the order of docs/architecture.md: each imports only earlier ones
WINGS = ("structure", "zoo", "data", "evaluation", "speed", "board", "tools")
# function-level imports of our own modules allowed, and why
LAZY = {"bench.__main__": "each command imports only what it runs (a light --help)",
        "bench.evaluation.zeroshot": "bench.evaluation.zeroshot_lm subclasses lm-eval's HFLM, imported lazily itself"}


def _modules() -> dict[str, Path]:
    """Every module of bench/ (its wings too) and methods/ by dotted name (a package by its own)."""
    out = {}
    for pkg in ("bench", "methods"):
        for p in sorted((REPO_ROOT / pkg).rglob("*.py")):
            parts = p.relative_to(REPO_ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _with_parents(name: str) -> set[str]:
    """Importing a.b.c imports a.b first (a package's __init__ runs before its module)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)}


def _imports(path: Path, names: set[str]) -> tuple[set[str], set[str]]:
    """(module-level, function-level) imports of our own modules in one file."""
    tree = ast.parse(path.read_text())
    own = _own_package(path)       # a package is initialised before its module: never an edge
    top: set[str] = set()
    every: set[str] = set()
    for where, nodes in (("top", tree.body), ("all", list(ast.walk(tree)))):
        found = top if where == "top" else every
        for node in nodes:
            named = ({node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                     if isinstance(node, ast.ImportFrom) and node.module
                     else {a.name for a in node.names} if isinstance(node, ast.Import) else set())
            implied = set().union(*map(_with_parents, named)) - named - own
            found |= (named | implied) & names
    return top, every - top


def _own_package(path: Path) -> set[str]:
    """A module's own package and its parents (implied by importing a sibling)."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circles_and_no_hidden_imports() -> None:
    mods = _modules()
    top, inner = {}, {}
    for name, path in mods.items():
        top[name], inner[name] = (s - {name} for s in _imports(path, set(mods)))  # a package's
        # __init__ naming its own package (`from bench.structure.slicing import`) is no edge
    assert _cycle(top) is None, " -> ".join(_cycle(top) or [])
    every = {m: top[m] | inner[m] for m in mods}
    assert _cycle(every) is None, " -> ".join(_cycle(every) or [])
    hidden = {m: sorted(v) for m, v in inner.items() if v and m not in LAZY}
    assert hidden == {}, f"function-level imports of our own modules: {hidden}"


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "bench" and len(parts) > 1 and parts[1] in WINGS else None


def test_wings_import_only_the_wings_above_them() -> None:
    assert sorted(WINGS) == sorted(p.name for p in (REPO_ROOT / "bench").iterdir()
                                   if p.is_dir() and (p / "__init__.py").is_file())
    mods = _modules()
    upward = []
    for name, path in mods.items():
        here = _wing(name)
        if here is None:
            continue
        top, inner = _imports(path, set(mods))
        for target in sorted(top | inner):
            there = _wing(target)
            if there is not None and WINGS.index(there) > WINGS.index(here):
                upward.append(f"{name} -> {target}")
    assert upward == [], upward


def test_one_architecture_list() -> None:
    assert set(ADAPTERS) == set(ARCHS)
    assert results.RUN_SCHEMA["properties"]["model"]["properties"]["arch"]["enum"] == list(ARCHS)
    assert set(contract.TINY_MODELS) == set(ARCHS) and contract.MethodContract.archs == ARCHS
