"""The house rules of docs/architecture.md, checked on the source: no import circle among the
modules of bench/ and methods/, function-level imports of our own modules only where a command
stays light on purpose, and one list of architectures."""
from __future__ import annotations

import ast
from pathlib import Path

from bench import contract, results
from bench.adapters import ADAPTERS
from bench.packages import REPO_ROOT
from bench.zoo import ARCHS

# function-level imports of our own modules allowed, and why
LAZY = {"bench.__main__": "each command imports only what it runs (a light --help)",
        "bench.zeroshot": "bench.zeroshot_lm subclasses lm-eval's HFLM, imported lazily itself"}


def _modules() -> dict[str, Path]:
    return {f"{pkg}.{p.stem}": p for pkg in ("bench", "methods")
            for p in sorted((REPO_ROOT / pkg).glob("*.py"))}


def _imports(path: Path, names: set[str]) -> tuple[set[str], set[str]]:
    """(module-level, function-level) imports of our own modules in one file."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    every: set[str] = set()
    for where, nodes in (("top", tree.body), ("all", list(ast.walk(tree)))):
        found = top if where == "top" else every
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module:
                found.update(f"{node.module}.{a.name}" if node.module in ("bench", "methods")
                             else node.module for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    return top & names, (every - top) & names


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
        top[name], inner[name] = _imports(path, set(mods))
    assert _cycle(top) is None, " -> ".join(_cycle(top) or [])
    every = {m: top[m] | inner[m] for m in mods}
    assert _cycle(every) is None, " -> ".join(_cycle(every) or [])
    hidden = {m: sorted(v) for m, v in inner.items() if v and m not in LAZY}
    assert hidden == {}, f"function-level imports of our own modules: {hidden}"


def test_one_architecture_list() -> None:
    assert set(ADAPTERS) == set(ARCHS)
    assert results.RUN_SCHEMA["properties"]["model"]["properties"]["arch"]["enum"] == list(ARCHS)
    assert set(contract.TINY_MODELS) == set(ARCHS) and contract.MethodContract.archs == ARCHS
