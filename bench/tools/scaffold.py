"""`python -m bench new-method NAME`: a ready-to-edit method file and its test file.

Owns the scaffold: name checks (a lowercase identifier no method, method file or test file
already uses), the two templates (bench/tools/templates: a layer-wise scoring method and a model-level
structured method, both working as written), the test file that runs the method contract
(bench/tools/contract.py), and writing both atomically, never over an existing file (of two concurrent
scaffolds of one name, exactly one wins). The registry imports every file in methods/,
so the new method is registered, listed by `python -m bench list` and usable in a grid config
at once.
"""
from __future__ import annotations

import importlib
import keyword
import logging
import re
from pathlib import Path
from string import Template

from bench import outputs
from bench.packages import REPO_ROOT
from methods import registry
from methods.base import PruneBenchError

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
KINDS = ("layerwise", "model")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_EXAMPLES = {
    "layerwise": '''def test_alpha_zero_keeps_the_largest_weights_of_each_row() -> None:
    import torch

    from methods.base import parse_pattern
    from methods.$name import ${name}_prune

    w = torch.tensor([[1.0, -4.0, 2.0, 3.0], [5.0, 1.5, -1.0, 0.5]])          # [out, in]
    res = ${name}_prune(w, torch.ones(4), parse_pattern("unstructured-50"), alpha=0.0)
    assert res.keep.tolist() == [[False, True, False, True], [True, True, False, False]]
''',
    "model": '''def test_a_unit_scores_the_norm_of_all_its_weights() -> None:
    import torch

    from methods.$name import unit_scores

    views = [{"mlp": [torch.tensor([[3.0, 0.0], [1.0, 0.0]]), torch.tensor([[4.0], [0.0]])]}]
    assert unit_scores(views, 2.0)[0]["mlp"].tolist() == [5.0, 1.0]
''',
}


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) or "Method"


def check_name(name: str, methods_dir: Path, tests_dir: Path) -> None:
    """Raise a one-line PruneBenchError unless `name` is free and usable as a module name."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise PruneBenchError(f"method name '{name}': use a lowercase Python identifier "
                              f"(letters, digits, underscores; e.g. 'row_magnitude')")
    if name in registry.SUPPORT_MODULES:
        raise PruneBenchError(f"method name '{name}' is a support module of methods/")
    if name in registry.available():
        raise PruneBenchError(f"method '{name}' already exists ({registry.origin(name)})")
    for path in (methods_dir / f"{name}.py", tests_dir / f"test_method_{name}.py"):
        if path.exists():
            raise PruneBenchError(f"{path} already exists; pick another name or remove it")


def render(name: str, kind: str) -> tuple[str, str]:
    """(method file, test file) text for a new method."""
    if kind not in KINDS:
        raise PruneBenchError(f"unknown method kind '{kind}'; choose one of: {', '.join(KINDS)}")
    values = {"name": name, "Class": class_name(name),
              "contract": "LayerwiseContract" if kind == "layerwise" else "MethodContract"}
    values["example"] = Template(_EXAMPLES[kind]).substitute(values)
    method = Template((TEMPLATES / f"method_{kind}.py.tmpl").read_text()).substitute(values)
    test = Template((TEMPLATES / "test_method.py.tmpl").read_text()).substitute(values)
    return method, test


def new_method(name: str, kind: str = "layerwise", methods_dir: Path | None = None,
               tests_dir: Path | None = None) -> tuple[Path, Path]:
    """Write methods/NAME.py and tests/methods/test_method_NAME.py; check the method registers."""
    methods_dir = Path(methods_dir or REPO_ROOT / "methods")
    tests_dir = Path(tests_dir or REPO_ROOT / "tests" / "methods")
    check_name(name, methods_dir, tests_dir)
    method_text, test_text = render(name, kind)
    method_path = methods_dir / f"{name}.py"
    test_path = tests_dir / f"test_method_{name}.py"
    outputs.create_new(method_path, method_text, "method file")
    try:
        outputs.create_new(test_path, test_text, "test file")
    except (OSError, PruneBenchError):
        method_path.unlink(missing_ok=True)      # ours: written a moment ago
        raise
    if methods_dir.resolve() == (REPO_ROOT / "methods").resolve():
        importlib.invalidate_caches()
        importlib.import_module(f"methods.{name}")              # registers it, or raises here
        registry.get(name)
    log.debug("wrote %s and %s", method_path, test_path)
    return method_path, test_path
