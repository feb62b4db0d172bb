"""The method contract: the tests every pruning method passes, built-in or from a plugin.

Owns `MethodContract`, a pytest mix-in. A method's test file subclasses it in a class named
`Test...` and sets `method` (the registered name) and, if the defaults are too slow for tiny
models, `params`. `contract_for(name)` picks the class that fits the method's kind. The contract checks what the benchmark relies on:
- the method is registered, described, and rejects unknown hyperparameters;
- it refuses, with a one-line error, every pattern kind it does not declare;
- layer-wise methods (`LayerwiseContract`): on random matrices, every declared pattern is met exactly (sparsity
  within one weight per row, exactly N kept in every M-group), pruned weights are zero, the
  input is not modified and the result is deterministic;
- end to end on the tiny zoo models (`python -m bench prune` + `evaluate` in-process with the
  smoke protocol): the target sparsity is reached on the saved weights (structured: within 2
  points, a smaller model), the run JSON validates and round-trips, and a second run gives
  identical weights;
- a grid config listing the method plans exactly the runs its capabilities allow.
Only test files import this module (it needs pytest).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from bench.config import load_config, plan, read_yaml
from bench.packages import REPO_ROOT
from bench.pipeline import evaluate, prune
from bench.results import load_run, validate_run
from bench.zoo import ARCHS
from methods import registry
from methods.base import LayerStats, LayerwiseMethod, Method, PruneBenchError, parse_pattern
from methods.permutation import is_permutation

# one pattern per kind end to end; the layer-level checks also try the second of each
E2E_PATTERN = {"dense": "dense", "unstructured": "unstructured-50", "nm": "2of4",
               "structured": "structured-20"}
LAYER_PATTERNS = {"unstructured": ("unstructured-50", "unstructured-70"), "nm": ("2of4", "4of8")}
TINY_MODELS = {"llama": "tiny-llama", "opt": "tiny-opt", "mamba": "tiny-mamba",
               "gemma3": "tiny-gemma3"}


def smoke_config() -> dict[str, Any]:
    """config/smoke.yaml as parsed YAML (the protocol the contract runs end to end)."""
    return read_yaml(REPO_ROOT / "config" / "smoke.yaml", "smoke config")


def layer_inputs(n: int = 256, d: int = 64, seed: int = 0) -> torch.Tensor:
    """[n, d] correlated inputs with uneven feature scales (what real activations look like)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d ** 0.5 + torch.eye(d)
    scale = torch.rand(d, generator=g) * 4 + 0.1
    return (torch.randn(n, d, generator=g) @ mix) * scale


def layer_stats(x: torch.Tensor) -> LayerStats:
    """Every statistic the engine can collect, for inputs x [n, d]."""
    return LayerStats(n_tokens=x.shape[0], act_sq=(x * x).sum(0), hessian=2 * x.t() @ x / x.shape[0],
                      act_mean=x.mean(0), act_var=x.var(0, unbiased=False))


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(checkpoint.glob("*.safetensors")):
        out.update(load_file(f))
    return out


class MethodContract:
    """Subclass in a `Test...` class; set `method`, optionally `params` and `archs`."""

    method: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    archs: ClassVar[tuple[str, ...]] = ARCHS   # tiny zoo models to run (TINY_MODELS)
    # the end-to-end pattern per kind, where a method's granularity needs another: depth
    # pruning of the 2-block tiny models can remove 0 % or 50 %, so ShortGPT runs structured-50
    e2e_patterns: ClassVar[dict[str, str]] = {}

    # -- helpers ---------------------------------------------------------------------------
    def _cls(self) -> type[Method]:
        return registry.get(self.method)

    def _create(self) -> Method:
        return registry.create(self.method, dict(self.params))

    def _e2e_cases(self) -> list[tuple[str, str]]:
        caps = self._cls().capabilities
        archs = [a for a in self.archs if caps.archs is None or a in caps.archs]
        slugs = {**E2E_PATTERN, **self.e2e_patterns}
        return [(a, slugs[k]) for a in archs for k in sorted(caps.kinds)]

    # -- registry and hyperparameters --------------------------------------------------------
    def test_registered_and_described(self) -> None:
        cls = self._cls()
        assert cls.name == self.method
        assert cls.description, f"method '{self.method}' needs a one-line description"
        assert cls.capabilities.kinds, "a method declares the pattern kinds it can do"
        assert set(cls.capabilities.kinds) <= set(E2E_PATTERN)
        assert registry.origin(self.method)

    def test_unknown_hyperparameter_rejected(self) -> None:
        with pytest.raises(PruneBenchError, match="unknown hyperparameter 'no_such_knob'"):
            registry.create(self.method, {**self.params, "no_such_knob": 1})

    def test_hyperparameters_round_trip(self) -> None:
        method = self._create()
        again = registry.create(self.method, json.loads(json.dumps(method.params_dict())))
        assert again.params_dict() == method.params_dict()

    def test_refuses_undeclared_patterns(self) -> None:
        method = self._create()
        for kind, slug in E2E_PATTERN.items():
            if kind in method.capabilities.kinds:
                method.check(parse_pattern(slug), "llama")
            else:
                with pytest.raises(PruneBenchError, match=f"cannot do pattern '{slug}'"):
                    method.check(parse_pattern(slug), "llama")

    # -- the grid ----------------------------------------------------------------------------
    def test_one_config_line_plans_the_declared_runs(self) -> None:
        raw = smoke_config()
        raw["methods"] = {self.method: dict(self.params)}
        raw["patterns"] = [p for k, p in E2E_PATTERN.items() if k != "dense"]
        runs, dropped = plan(load_config(raw))
        caps = self._cls().capabilities
        arch_of = {model: arch for arch, model in TINY_MODELS.items()}
        want = {(m, E2E_PATTERN[k]) for m in raw["models"] for k in caps.kinds
                if caps.archs is None or arch_of[m] in caps.archs}
        assert {(r.model, r.pattern) for r in runs} == want
        assert all(why and "\n" not in why for _, why in dropped)     # each one line, with reason

    # -- end to end ----------------------------------------------------------------------------
    def test_end_to_end_on_tiny_models(self, tmp_path: Path) -> None:
        raw = smoke_config()
        raw["methods"] = {self.method: dict(self.params)}
        raw["results_dir"] = str(tmp_path / "results")
        cfg = load_config(raw)
        cases = self._e2e_cases()
        assert cases, f"'{self.method}' declares no architecture of the tiny zoo models"
        for arch, slug in cases:
            model = TINY_MODELS[arch]
            ckpt = tmp_path / "pruned" / model / slug
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            prune(model, self.method, slug, ckpt, cfg, progress=False)
            out = tmp_path / "runs" / model / f"{slug}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            path, run = evaluate(ckpt, out, cfg, progress=False)
            pattern = parse_pattern(slug)
            achieved = run["sparsity"]["achieved"]
            if pattern.kind == "structured":
                assert abs(achieved - pattern.sparsity) <= 0.02, f"{model}/{slug}: {achieved}"
                assert run["structure"]["params"] < run["structure"]["dense_params"]
            else:
                assert abs(achieved - pattern.sparsity) < 0.01, f"{model}/{slug}: {achieved}"
            assert run["method"]["name"] == self.method
            assert run["metrics"]["ppl/wiki"] > 1
            validate_run(run)
            assert load_run(path) == json.loads(json.dumps(run))
        arch, slug = cases[0]                            # the same run again: identical weights
        again = tmp_path / "again"
        prune(TINY_MODELS[arch], self.method, slug, again, cfg, progress=False)
        first, second = (_weights(tmp_path / "pruned" / TINY_MODELS[arch] / slug), _weights(again))
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), f"{key}: a second run differs"

class LayerwiseContract(MethodContract):
    """The contract of a layer-wise method: MethodContract plus exact patterns per layer."""

    def test_layer_patterns_exact(self) -> None:
        check_layer_patterns(self._create(), torch.device("cpu"))


def check_layer_patterns(method: Method, device: torch.device) -> None:
    """The layer-level contract on `device`: for every declared pattern of two widths, on
    correlated inputs, the pattern is met exactly (N of every M; sparsity within one weight per
    row), pruned weights are zero and finite, the input is untouched and a second call is equal."""
    assert isinstance(method, LayerwiseMethod), f"'{method.name}' is not a layer-wise method"
    x = layer_inputs().to(device)                                               # [256, 64]
    stats = layer_stats(x)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1)).to(device)   # [out, in]
    w_before = w.clone()
    for kind in sorted(method.capabilities.kinds & set(LAYER_PATTERNS)):
        for slug in LAYER_PATTERNS[kind]:
            pattern = parse_pattern(slug)
            res = method.prune_layer(w, copy.deepcopy(stats), pattern, name="layer")
            assert torch.equal(w, w_before), f"{slug}: prune_layer modified its input"
            assert res.weight.shape == w.shape and res.weight.dtype == w.dtype
            assert res.weight.device == w.device, f"{slug}: result left {device}"
            assert res.keep.dtype == torch.bool and res.keep.shape == w.shape
            assert torch.isfinite(res.weight).all(), f"{slug}: non-finite weights"
            assert (res.weight[~res.keep] == 0).all(), f"{slug}: pruned weights not zero"
            if pattern.kind == "nm":
                keep = res.keep                       # N:M in the method's own input order
                if res.in_perm is not None:
                    assert is_permutation(res.in_perm.cpu(), 64), f"{slug}: in_perm not a permutation"
                    keep = keep[:, res.in_perm.to(keep.device)]
                groups = keep.reshape(48, 64 // pattern.m, pattern.m).sum(-1)
                assert (groups == pattern.n).all(), f"{slug}: not exactly {pattern.n} of {pattern.m}"
            else:
                achieved = 1.0 - res.keep.float().mean().item()
                assert abs(achieved - pattern.sparsity) <= 1.0 / 64 + 1e-9, f"{slug}: {achieved}"
            again = method.prune_layer(w, copy.deepcopy(stats), pattern, name="layer")
            assert torch.equal(again.weight, res.weight), f"{slug}: not deterministic"


def contract_for(name: str) -> type[MethodContract]:
    """The contract class that fits a registered method's kind."""
    cls = registry.get(name)
    return LayerwiseContract if issubclass(cls, LayerwiseMethod) and cls.kind == "layerwise" \
        else MethodContract
