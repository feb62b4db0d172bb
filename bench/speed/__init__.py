"""2:4 semi-structured kernels against dense GEMMs: availability, conversion, timing, layer cases.

Owns the kernel side of the 2:4 speed benchmark, on PyTorch core only
(`torch.sparse.SparseSemiStructuredTensorCUSPARSELT` / `...CUTLASS`; torchao's sparsity module
is gone and vLLM dropped 2:4):
- why a kernel cannot run here (`gpu_unavailable_reason`, `backend_unavailable_reason`,
  `unsupported_reason` for a shape, from PyTorch's own per-dtype shape constraints);
- `prune_2of4` (magnitude, exact 2 of every 4 along the input dim) and `to_semi_structured`;
- `time_calls`: interleaved medians of several callables, CUDA events on a GPU, each sample long
  enough (min_sample_s) that launch overhead does not dominate;
- `layer_case`: one (shape, tokens, dtype, backend, mode) cell, y = F.linear(x, W) exactly as an
  nn.Linear of the model runs it, outputs checked equal to the dense GEMM before any timing;
- `bare_mm_case`: the same shape through a bare `torch.mm(W, x.T)` with nothing around it, the
  reference our layer figure must match within 5 %.
The sparse converter is a parameter so that the harness itself is tested on CPU with a
masked-dense stand-in; real figures come only from the real kernels on a GPU.
"""
from __future__ import annotations

import logging
import math
import shutil
import statistics
import subprocess
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from methods.masks import keep_nm

log = logging.getLogger(__name__)

BACKENDS = ("cusparselt", "cutlass")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("eager", "compile")
# max |sparse - dense| allowed, relative to max |dense|: both round the same fp32 sum to 16 bits
REL_TOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5}
# a whole model compounds one rounding per layer: logits may differ more, a wrong kernel far more
E2E_REL_TOL = {torch.float16: 5e-2, torch.bfloat16: 1.5e-1, torch.float32: 1e-4}

SparseMaker = Callable[[torch.Tensor, str], torch.Tensor]


def sparse_class(backend: str) -> type:
    classes = {"cusparselt": torch.sparse.SparseSemiStructuredTensorCUSPARSELT,
               "cutlass": torch.sparse.SparseSemiStructuredTensorCUTLASS}
    if backend not in classes:
        raise ValueError(f"unknown 2:4 backend '{backend}' (known: {', '.join(classes)})")
    return classes[backend]


def unsupported_reason(backend: str, dtype: torch.dtype, out_features: int,
                       in_features: int) -> str | None:
    """Why PyTorch's `backend` cannot hold a [out, in] 2:4 weight of `dtype`; None if it can."""
    limits = sparse_class(backend)._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    if limits is None:
        return f"{backend} has no {str(dtype).removeprefix('torch.')} kernel"
    rows, cols = limits.sparse_min_rows, limits.sparse_min_cols
    if out_features % rows or in_features % cols:
        return (f"{backend} {str(dtype).removeprefix('torch.')} needs out % {rows} == 0 and "
                f"in % {cols} == 0, shape is [{out_features}, {in_features}]")
    return None


def gpu_unavailable_reason() -> str | None:
    """'no GPU ...' when no CUDA device can run 2:4 kernels here; None when one can."""
    if torch.version.cuda is None:
        return "no GPU (this torch is a CPU build)"
    if not torch.cuda.is_available():
        return "no GPU (no CUDA device visible)"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return (f"no GPU with sparse tensor cores ({torch.cuda.get_device_name()} is sm_{major}{minor}; "
                "2:4 kernels need sm_80 or newer)")
    return None


def backend_unavailable_reason(backend: str) -> str | None:
    if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
        return "this torch was built without cuSPARSELt"
    if backend == "cutlass" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if major != 8:      # seen on an H200: "sparse_semi_structured_mad_op: ... compute capability 8.x"
            return (f"PyTorch's CUTLASS 2:4 kernels run only on sm_8x GPUs "
                    f"({torch.cuda.get_device_name()} is sm_{major}{minor})")
    return None


def gpu_environment() -> dict[str, Any]:
    """GPU name, compute capability, driver, CUDA runtime and cuSPARSELt versions."""
    if not torch.cuda.is_available():
        return {"gpu": None}
    props = torch.cuda.get_device_properties(0)
    driver = None
    if shutil.which("nvidia-smi"):
        res = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False)
        driver = res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout else None
    cslt = torch.backends.cusparselt.version() if torch.backends.cusparselt.is_available() else None
    return {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "driver": driver,
            "cuda_runtime": torch.version.cuda, "cusparselt": cslt}


def prune_2of4(weight: torch.Tensor) -> torch.Tensor:
    """Zero the 2 smallest-magnitude weights of every 4 consecutive inputs. [out, in] -> same."""
    keep = keep_nm(weight.detach().abs().float(), 2, 4)              # [out, in] bool
    return weight * keep.to(weight.dtype)


def to_semi_structured(weight: torch.Tensor, backend: str) -> torch.Tensor:
    """The 2:4 weight [out, in] compressed for `backend` (values + metadata, half the bytes)."""
    return sparse_class(backend).from_dense(weight.detach().contiguous())


def check_close(got: torch.Tensor, want: torch.Tensor, what: str,
                rel_tol: dict[torch.dtype, float] = REL_TOL) -> float:
    """Max abs difference; raise if it exceeds the dtype's rounding (relative to max |want|)."""
    err = (got.float() - want.float()).abs().max().item()
    scale = max(want.float().abs().max().item(), 1e-6)
    tol = rel_tol.get(want.dtype, 1e-5) * scale
    if not err <= tol:
        raise RuntimeError(f"{what}: sparse output differs from dense by {err:.3g} "
                           f"(allowed {tol:.3g}); refusing to time a wrong kernel")
    return err


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample(fn: Callable[[], Any], inner: int, device: torch.device) -> float:
    """Seconds per call over `inner` back-to-back calls."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0 / inner
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def time_calls(fns: dict[str, Callable[[], Any]], device: torch.device, *, warmup: int,
               repeats: int, min_sample_s: float) -> dict[str, dict[str, Any]]:
    """Warm up, size each sample to last >= min_sample_s, then time rounds interleaving the fns.

    Returns per name: median seconds per call, the raw per-call seconds and calls per sample."""
    inner: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(max(warmup, 1)):
            fn()
        sync(device)
        one = max(_sample(fn, 1, device), 1e-7)
        inner[name] = max(1, min(10_000, math.ceil(min_sample_s / one)))
    raw: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            raw[name].append(_sample(fn, inner[name], device))
    return {name: {"median_s": statistics.median(raw[name]), "seconds": raw[name],
                   "calls_per_sample": inner[name]} for name in fns}


def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w)


def _compiled(fn: Callable[..., torch.Tensor], mode: str) -> Callable[..., torch.Tensor]:
    if mode == "eager":
        return fn
    if mode != "compile":
        raise ValueError(f"unknown mode '{mode}' (known: {', '.join(MODES)})")
    return torch.compile(fn, dynamic=False)


def operands(out_f: int, in_f: int, tokens: int, dtype: torch.dtype, device: torch.device,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [tokens, in] ~ N(0, 1) and a 2:4 magnitude-pruned W [out, in] ~ N(0, 1/in): outputs O(1)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)       # [out, in]
    x = torch.randn(tokens, in_f, generator=gen)                        # [tokens, in]
    return x.to(device, dtype), prune_2of4(w).to(device, dtype)


def layer_case(out_f: int, in_f: int, tokens: int, dtype: torch.dtype, backend: str, mode: str,
               *, device: torch.device, warmup: int, repeats: int, min_sample_s: float,
               seed: int = 0, make_sparse: SparseMaker = to_semi_structured) -> dict[str, Any]:
    """Dense vs 2:4 F.linear on one shape (what an nn.Linear of the model runs), checked equal."""
    x, w = operands(out_f, in_f, tokens, dtype, device, seed)
    ws = make_sparse(w, backend)
    dense_fn, sparse_fn = _compiled(_linear, mode), _compiled(_linear, mode)
    with torch.inference_mode():
        err = check_close(sparse_fn(x, ws), dense_fn(x, w),
                          f"[{out_f}, {in_f}] x {tokens} tokens {backend} {mode}")
        t = time_calls({"dense": lambda: dense_fn(x, w), "sparse": lambda: sparse_fn(x, ws)},
                       device, warmup=warmup, repeats=repeats, min_sample_s=min_sample_s)
    return {"out_features": out_f, "in_features": in_f, "tokens": tokens,
            "dtype": str(dtype).removeprefix("torch."), "backend": backend, "mode": mode,
            "dense_s": t["dense"]["median_s"], "sparse_s": t["sparse"]["median_s"],
            "speedup": t["dense"]["median_s"] / t["sparse"]["median_s"], "max_abs_err": err,
            "raw": {k: {"seconds": v["seconds"], "calls_per_sample": v["calls_per_sample"]}
                    for k, v in t.items()}}


def bare_mm_case(out_f: int, in_f: int, tokens: int, dtype: torch.dtype, backend: str, *,
                 device: torch.device, warmup: int, repeats: int, min_sample_s: float,
                 seed: int = 0, make_sparse: SparseMaker = to_semi_structured) -> dict[str, Any]:
    """The reference: torch.mm(W, xT) with W dense vs 2:4, on a pre-transposed xT [in, tokens]."""
    x, w = operands(out_f, in_f, tokens, dtype, device, seed)
    xt = x.t().contiguous()                                              # [in, tokens]
    ws = make_sparse(w, backend)
    with torch.inference_mode():
        check_close(torch.mm(ws, xt), torch.mm(w, xt), f"bare mm [{out_f}, {in_f}] x {tokens}")
        t = time_calls({"dense": lambda: torch.mm(w, xt), "sparse": lambda: torch.mm(ws, xt)},
                       device, warmup=warmup, repeats=repeats, min_sample_s=min_sample_s)
    return {"out_features": out_f, "in_features": in_f, "tokens": tokens,
            "dtype": str(dtype).removeprefix("torch."), "backend": backend,
            "dense_s": t["dense"]["median_s"], "sparse_s": t["sparse"]["median_s"],
            "speedup": t["dense"]["median_s"] / t["sparse"]["median_s"]}


def raise_compile_limits() -> None:
    """One compiled graph per (shape, tokens, dtype, backend): let dynamo keep them all instead of
    silently falling back to eager after its default 8 recompiles."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 4096))
