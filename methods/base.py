"""Core types every pruning method shares: patterns, capabilities, hyperparameters, methods.

Owns: `Pattern` (parsed from a path-safe slug), `Capabilities` (what a method can do),
hyperparameter dataclasses that reject unknown keys, and the two method kinds:
`LayerwiseMethod` (a pure function on one weight matrix plus the statistic it asked for, driven
by bench.engine) and `ModelMethod` (given the whole model and data). Nothing here touches a model.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

PatternKind = Literal["dense", "unstructured", "nm", "structured"]
StatKind = Literal["none", "act_norm", "act_moments", "hessian"]


class PruneBenchError(ValueError):
    """A user-facing error: bad input, unsupported combination. One line, no traceback needed."""


class MethodError(PruneBenchError):
    """An error raised inside a method (a plugin's included), re-raised naming the method,
    where its code comes from and the layer it was pruning."""


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


# canonical slugs only: ASCII digits, no leading zeros, no trailing zeros after a decimal point
_NUM = r"(0|[1-9][0-9]*)(\.[0-9]*[1-9])?"
_INT = r"([1-9][0-9]*)"
_UNSTRUCTURED = re.compile(rf"^unstructured-({_NUM})$")
_STRUCTURED = re.compile(rf"^structured-({_NUM})$")
_NM = re.compile(rf"^(0|{_INT[1:-1]})of{_INT}$")
_LOOSE = re.compile(r"^(unstructured-|structured-)?([0-9]+(?:\.[0-9]+)?)(?:of([0-9]+))?$")
PATTERN_FORMS = ("dense", "unstructured-P", "structured-P", "NofM")


def _canonical_spelling(slug: str) -> str | None:
    """The one spelling of a pattern written with leading or trailing zeros, else None."""
    m = _LOOSE.match(slug)
    if m is None or (m.group(1) is None) == (m.group(3) is None):
        return None
    if m.group(3) is not None:
        return f"{int(m.group(2))}of{int(m.group(3))}"
    whole, _, frac = m.group(2).partition(".")
    frac = frac.rstrip("0")
    return f"{m.group(1)}{int(whole)}{'.' + frac if frac else ''}"


def parse_pattern(slug: str) -> Pattern:
    """Parse 'dense', 'unstructured-50', 'structured-20' (percent) or '2of4' (keep 2 of every 4).

    Each pattern has exactly one spelling (ASCII digits, no leading zeros, no trailing decimal
    zeros): it names result files and Snakemake targets, so `unstructured-50.0` is refused with
    the canonical spelling as the hint, never silently a second run of the same pattern."""
    if not isinstance(slug, str):
        raise PruneBenchError(f"pattern must be a string, got {type(slug).__name__}")
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
    canonical = _canonical_spelling(slug)
    if canonical is not None and canonical != slug:
        raise PruneBenchError(f"pattern '{slug}' is not spelled canonically; write "
                              f"'{canonical}' (one spelling per pattern: it names files)")
    examples = ["dense", "unstructured-50", "unstructured-70", "2of4", "4of8", "structured-20"]
    raise PruneBenchError(f"unknown pattern '{slug}'{did_you_mean(slug, examples)} "
                          f"(forms: {', '.join(PATTERN_FORMS)}, ASCII digits)")


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


def _check_value(method: str, key: str, value: Any, default: Any) -> Any:
    """One hyperparameter against the type of its default: ints are not bools, floats are
    finite (no infinite damping), lists hold elements of their default's element type."""
    def bad(want: str) -> PruneBenchError:
        return PruneBenchError(f"method '{method}': hyperparameter '{key}' must be {want}, "
                               f"got {value!r}")

    if isinstance(value, float) and not math.isfinite(value):
        raise bad("a finite number")
    if default is None:
        return value
    expected = type(default)
    if expected is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if expected is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if expected is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad("a number")
        return float(value)
    if expected is list:
        if not isinstance(value, list):
            raise bad("a list")
        kinds = {type(v) for v in default}
        for v in value:
            if (kinds and not isinstance(v, tuple(kinds))) or (isinstance(v, bool) and bool not in kinds):
                raise bad(f"a list of {'/'.join(sorted(k.__name__ for k in kinds))}")
            if isinstance(v, float) and not math.isfinite(v):
                raise bad("a list of finite numbers")
        return list(value)
    if not isinstance(value, expected):
        raise bad(expected.__name__)
    return value


def combine_params(base: type, extra: type, method: str, tag: str) -> type:
    """A frozen hyperparameter dataclass with `base`'s fields then `extra`'s (defaults kept),
    validated by both classes' `validate()`: the parameters of a method variant that adds a
    step to a method (methods/allocation.py, methods/dsnot.py). Name clashes are refused."""
    fields = list(dataclasses.fields(base)) + list(dataclasses.fields(extra))
    names = [f.name for f in fields]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise PruneBenchError(f"method '{method}' already has parameters {clash}")

    def fresh(f: dataclasses.Field) -> Any:          # a Field cannot sit in two dataclasses
        if f.default_factory is not dataclasses.MISSING:
            return dataclasses.field(default_factory=f.default_factory)
        return dataclasses.field(default=f.default)

    def validate(self: Any) -> None:
        for cls in (base, extra):
            check = getattr(cls, "validate", None)
            if check is not None:
                check(self)

    return dataclasses.make_dataclass(f"{base.__name__}{tag}",
                                      [(f.name, f.type, fresh(f)) for f in fields],
                                      frozen=True, namespace={"validate": validate})


def make_params(params_cls: type, overrides: dict[str, Any] | None, method: str) -> Any:
    """Build a frozen hyperparameter dataclass; unknown keys, wrong types and non-finite numbers
    raise one-line errors, then the class's own `validate()` checks the ranges."""
    if overrides is not None and not isinstance(overrides, dict):
        raise PruneBenchError(f"method '{method}': hyperparameters must be a mapping of name -> "
                              f"value, got {type(overrides).__name__}")
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    for key in overrides:
        if key not in fields:
            raise PruneBenchError(f"method '{method}': unknown hyperparameter '{key}'"
                                  f"{did_you_mean(key, list(fields) or ['(none)'])}")
    for key, value in overrides.items():
        f = fields[key]
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        overrides[key] = _check_value(method, key, value, default)
    try:
        params = params_cls(**overrides)
    except TypeError as exc:               # a required field without a value
        raise PruneBenchError(f"method '{method}': {exc}") from None
    validate = getattr(params, "validate", None)
    if validate is not None:
        validate()
    return params


@dataclass
class LayerStats:
    """The statistic a layer-wise method asked for, accumulated over calibration tokens (fp32).

    act_sq: [in] sum of squared inputs per input feature; hessian: [in, in] = 2/n sum x x^T;
    act_mean, act_var: [in] mean and (population) variance of each input feature over the
    tokens ("act_moments", which also fills act_sq).
    """

    n_tokens: int
    act_sq: torch.Tensor | None = None
    hessian: torch.Tensor | None = None
    act_mean: torch.Tensor | None = None
    act_var: torch.Tensor | None = None


@dataclass
class LayerResult:
    weight: torch.Tensor  # [out, in] pruned weight (zeros where pruned), same dtype as input
    keep: torch.Tensor    # [out, in] bool, True where the weight is kept
    # [in] long, N:M patterns only: the input order under which keep is N:M (keep[:, in_perm]
    # has N kept in every M consecutive columns; methods/permutation.py). None: the identity.
    in_perm: torch.Tensor | None = None


TRAINING = ("one-shot", "recovery training", "search with training")


class Method:
    """Base of every method: a name, capabilities, a hyperparameter class."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "layerwise"
    capabilities: ClassVar[Capabilities]
    Params: ClassVar[type] = NoParams
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # what the paper's reference code does and where ours differs (shown on the methods page)
    fidelity: ClassVar[str] = ""
    # how the method uses data beyond calibration statistics: one of TRAINING. The site tags and
    # filters runs by it, so that a method that trains is never compared untagged with one-shot ones
    training: ClassVar[str] = "one-shot"
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
    # the engine's schedule: False = one statistics pass per block over the dense block's
    # inputs (the reference code of Wanda and SparseGPT); True = "true sequential", each
    # shared-input group's statistic taken after the earlier groups of its block are pruned
    # (offered as the `<name>_seq` variants, each its own row)
    sequential: ClassVar[bool] = False
    # how the target sparsity is spread over blocks (methods/allocation.py): "uniform", or "owl"
    # in the `<name>_owl` variants the registry makes of any layer-wise unstructured method
    allocation: ClassVar[str] = "uniform"
    # whether the kept weights may differ from the input's (SparseGPT's and APT's updates); a
    # mask refinement such as DSnoT (methods/dsnot.py) only takes methods that update none
    updates_weights: ClassVar[bool] = False

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
