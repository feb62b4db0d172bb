"""Core types every pruning method shares: patterns, capabilities, hyperparameters, methods.

Owns: `Pattern` (parsed from a path-safe slug), `Capabilities` (what a method can do),
hyperparameter dataclasses that reject unknown keys, and the two method kinds:
`LayerwiseMethod` (a pure function on one weight matrix plus the statistic it asked for, driven
by bench.engine) and `ModelMethod` (given the whole model and data). Nothing here touches a model.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

PatternKind = Literal["dense", "unstructured", "nm", "structured"]
StatKind = Literal["none", "act_norm", "hessian"]


class PruneBenchError(ValueError):
    """A user-facing error: bad input, unsupported combination. One line, no traceback needed."""


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} known: {', '.join(sorted(known))}"


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern. For N:M, `n` weights are KEPT in every group of `m` consecutive inputs."""

    slug: str
    kind: PatternKind
    sparsity: float
    n: int | None = None
    m: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_UNSTRUCTURED = re.compile(r"^unstructured-(\d+(?:\.\d+)?)$")
_STRUCTURED = re.compile(r"^structured-(\d+(?:\.\d+)?)$")
_NM = re.compile(r"^(\d+)of(\d+)$")
PATTERN_FORMS = ("dense", "unstructured-P", "structured-P", "NofM")


def parse_pattern(slug: str) -> Pattern:
    """Parse 'dense', 'unstructured-50', 'structured-20' (percent) or '2of4' (keep 2 of every 4)."""
    if slug == "dense":
        return Pattern("dense", "dense", 0.0)
    for regex, kind in ((_UNSTRUCTURED, "unstructured"), (_STRUCTURED, "structured")):
        match = regex.match(slug)
        if match:
            pct = float(match.group(1))
            if not 0.0 < pct < 100.0:
                raise PruneBenchError(
                    f"pattern '{slug}': sparsity must be in (0, 100) percent, got {pct:g}")
            return Pattern(slug, kind, pct / 100.0)  # type: ignore[arg-type]
    match = _NM.match(slug)
    if match:
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise PruneBenchError(f"pattern '{slug}': N:M needs 0 < N < M (N kept of every M)")
        return Pattern(slug, "nm", 1.0 - n / m, n, m)
    examples = ["dense", "unstructured-50", "unstructured-70", "2of4", "4of8", "structured-20"]
    raise PruneBenchError(f"unknown pattern '{slug}'{did_you_mean(slug, examples)} "
                          f"(forms: {', '.join(PATTERN_FORMS)})")


@dataclass(frozen=True)
class Capabilities:
    """What a method can do. `archs` None means every architecture with an adapter."""

    kinds: frozenset[str]
    archs: frozenset[str] | None = None
    needs_calibration: bool = True

    def describe(self) -> str:
        archs = "all" if self.archs is None else ",".join(sorted(self.archs))
        calib = "calibration" if self.needs_calibration else "data-free"
        return f"patterns={','.join(sorted(self.kinds))} archs={archs} {calib}"


@dataclass(frozen=True)
class NoParams:
    """Hyperparameters of a method that has none."""


def make_params(params_cls: type, overrides: dict[str, Any] | None, method: str) -> Any:
    """Build a frozen hyperparameter dataclass; unknown keys and wrong types raise one-line errors."""
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    for key in overrides:
        if key not in fields:
            raise PruneBenchError(f"method '{method}': unknown hyperparameter '{key}'"
                                  f"{did_you_mean(key, list(fields) or ['(none)'])}")
    for key, value in overrides.items():
        default = fields[key].default
        if default is not dataclasses.MISSING and default is not None:
            expected = type(default)
            ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
            if not ok or (expected is int and isinstance(value, bool)):
                raise PruneBenchError(f"method '{method}': hyperparameter '{key}' must be "
                                      f"{expected.__name__}, got {value!r}")
            if expected is float:
                overrides[key] = float(value)
    params = params_cls(**overrides)
    validate = getattr(params, "validate", None)
    if validate is not None:
        validate()
    return params


@dataclass
class LayerStats:
    """The statistic a layer-wise method asked for, accumulated over calibration tokens (fp32).

    act_sq: [in] sum of squared inputs per input feature; hessian: [in, in] = 2/n sum x x^T.
    """

    n_tokens: int
    act_sq: torch.Tensor | None = None
    hessian: torch.Tensor | None = None


@dataclass
class LayerResult:
    weight: torch.Tensor  # [out, in] pruned weight (zeros where pruned), same dtype as input
    keep: torch.Tensor    # [out, in] bool, True where the weight is kept


class Method:
    """Base of every method: a name, capabilities, a hyperparameter class."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "layerwise"
    capabilities: ClassVar[Capabilities]
    Params: ClassVar[type] = NoParams
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # files (templates with {model}) a workflow must build before this method's prune job
    cache_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = make_params(self.Params, params, self.name)

    def check(self, pattern: Pattern, arch: str) -> None:
        """Raise a one-line PruneBenchError if this method cannot do `pattern` on `arch`."""
        caps = self.capabilities
        if pattern.kind not in caps.kinds:
            raise PruneBenchError(f"method '{self.name}' cannot do pattern '{pattern.slug}' "
                                  f"(kind {pattern.kind}); it supports: {', '.join(sorted(caps.kinds))}")
        if caps.archs is not None and arch not in caps.archs:
            raise PruneBenchError(f"method '{self.name}' does not support architecture '{arch}'")

    def params_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)


class LayerwiseMethod(Method):
    """A method whose core is `prune_layer(W, stats, pattern) -> LayerResult`, run by bench.engine."""

    kind: ClassVar[str] = "layerwise"
    stat: ClassVar[StatKind] = "none"

    def prune_layer(self, weight: torch.Tensor, stats: LayerStats | None,
                    pattern: Pattern, name: str = "layer") -> LayerResult:
        raise NotImplementedError

    def prune_group(self, weights: list[torch.Tensor], stats: LayerStats | None,
                    pattern: Pattern, names: list[str]) -> list[LayerResult]:
        """Layers that share one input (and so one statistic), e.g. q/k/v. The default prunes
        each with `prune_layer`; a method may override it to share work across the group, but
        the result must equal pruning each layer on its own."""
        return [self.prune_layer(w, stats, pattern, name=n) for w, n in zip(weights, names)]


@dataclass
class ModelData:
    """What a model-level method may read: the calibration ids and more text of the same corpus.

    text_ids(n, seqlen, seed) -> [n, seqlen] token ids sampled from the calibration corpus with
    a seed of the method's choosing (training and held-out fitness text; not the eval corpus).
    """

    calib_ids: torch.Tensor                                   # [n_samples, seqlen]
    text_ids: Callable[[int, int, int], torch.Tensor]
    work_dir: Path | None = None                              # caches a method may reuse
    model_key: str = "model"                                  # names those caches


@dataclass
class ModelResult:
    model: Any                     # the pruned model (may be a new, smaller object)
    report: dict[str, Any]         # method-specific facts for the run JSON (JSON-serialisable)


class ModelMethod(Method):
    """A method that needs the whole model (structured search, gradients, training)."""

    kind: ClassVar[str] = "model"

    def prune_model(self, model: Any, adapter: Any, data: ModelData,
                    pattern: Pattern) -> ModelResult:
        raise NotImplementedError
