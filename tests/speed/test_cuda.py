"""The method contract on a CUDA device: every layer-wise method, layer by layer and through the
engine on the tiny Llama, OPT and Mamba models, in float32 and float16.

Skipped without a GPU. `PRUNEBENCH_TEST_DEVICE=cpu` runs the same tests on the CPU, which is how
the GPU call of bench/speed/gpu_check.py is rehearsed on a machine without one.
"""
from __future__ import annotations

import os

import pytest
import torch

from bench.adapters import adapter_for
from bench.tools.contract import check_layer_patterns
from bench.engine import prune_layerwise
from bench.evaluation.evaluate import check_finite_weights, check_pattern, measure_sparsity
from methods import registry
from methods.base import LayerwiseMethod, parse_pattern
from tests.conftest import tiny_model

DEVICE = torch.device(os.environ.get("PRUNEBENCH_TEST_DEVICE", "cuda"))
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")]
LAYERWISE = sorted(n for n, c in registry.available().items()
                   if issubclass(c, LayerwiseMethod) and c.kind == "layerwise")
PATTERNS = {"unstructured": "unstructured-50", "nm": "2of4"}


@pytest.mark.parametrize("name", LAYERWISE)
def test_layer_contract_on_device(name: str) -> None:
    check_layer_patterns(registry.create(name, {}), DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("name", LAYERWISE)
def test_engine_on_device_meets_every_pattern(name: str, arch: str, dtype: torch.dtype) -> None:
    method = registry.create(name, {})
    ids = torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(0))  # [n, seq]
    for kind in sorted(method.capabilities.kinds & set(PATTERNS)):
        pattern = parse_pattern(PATTERNS[kind])
        model = tiny_model(arch).to(device=DEVICE, dtype=dtype)
        adapter = adapter_for(model)
        prune_layerwise(model, adapter, method, pattern, ids, 4, method.sequential, progress=False)
        check_finite_weights(model, f"{name} on {DEVICE} ({dtype})")
        assert all(p.device.type == DEVICE.type for p in model.parameters())
        sp = measure_sparsity(model, adapter)
        check_pattern(model, adapter, pattern, sp["per_layer"])
        with torch.no_grad():
            logits = model(input_ids=ids[:2].to(DEVICE)).logits                # [2, seq, V]
        assert torch.isfinite(logits).all(), f"{name} {pattern.slug}: non-finite logits"
