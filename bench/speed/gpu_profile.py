"""Where a 2:4 GEMM's time goes on this GPU: kernel time against host time (the GPU call's
profile part).

Owns one diagnosis behind the 2:4 speed records (results/speed/): on the first GPU every
cuSPARSELt cell was slower than dense, and our guess was host-side set-up on every call, not a
slow kernel. For a few Llama-2-7B-shaped linears, dense and 2:4 `F.linear` (outputs checked equal
first) are
- timed per call as the speed records time them (CUDA events, interleaved medians: `wall_s`);
- profiled (torch.profiler, CPU and CUDA): the summed device time of the kernels one call
  launches (`kernel_s`), the host time of the call's top operator (`host_s`) and the kernels;
- replayed from a CUDA graph, which removes every host-side step from the timed loop
  (`graph_s`; an error string where capture fails);
- optionally (`compile_modes`), as an nn.Linear holding the weight, compiled with
  `torch.compile(mode=...)` and timed like `wall_s` (`compiled[mode]`: seconds per call, and
  the seconds of the first call, which compiles).
If the 2:4 kernels take less device time than dense while the call takes more wall time, the
loss is host-side set-up; if the kernels themselves are slower, it is the kernel.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch._dynamo
import torch.nn.functional as F

from bench import results, speed

log = logging.getLogger(__name__)
# [out, in] of Llama-2-7B's linears (q/k/v/o, gate/up, down) at decode-like and prefill tokens
SHAPES = {"paper": [(4096, 4096), (11008, 4096), (4096, 11008)], "tiny": [(256, 256)]}
TOKENS = {"paper": [16, 2048], "tiny": [16, 128]}
CALLS = 20                    # calls per profiled loop (and per graph replay)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
# profiler rows with device time that are not a kernel of the call: the operator's own row
# (it repeats its kernels' time) and the profiler's buffer request
NOT_KERNELS = ("aten::", "Activity Buffer Request")


def kernel_seconds(kernels: list[dict[str, Any]]) -> float:
    """Per-call device seconds of a profiled call: its kernels and memsets, nothing counted twice."""
    return sum(k["per_call_s"] for k in kernels if not k["name"].startswith(NOT_KERNELS))


def _device_us(evt: Any) -> float:
    """Self device time (us) of one key_averages() row, across the torch versions' names."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(evt, name):
            return float(getattr(evt, name))
    return 0.0


def profile_calls(fn: Callable[[], Any], device: torch.device, calls: int) -> dict[str, Any]:
    """torch.profiler over `calls` calls: per-call kernel seconds (`kernel_seconds`),
    the top op's host seconds, and every row with device time, largest first."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    speed.sync(device)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(calls):
            fn()
        speed.sync(device)
    rows = prof.key_averages()
    kernels = [{"name": r.key[:160], "count": r.count, "per_call_s": _device_us(r) / 1e6 / calls}
               for r in sorted(rows, key=lambda r: -_device_us(r)) if _device_us(r) > 0]
    ops = sorted((r for r in rows if r.key.startswith("aten::")), key=lambda r: -r.cpu_time_total)
    top = ops[0] if ops else None
    return {"kernel_s": kernel_seconds(kernels), "host_op": top.key if top else None,
            "host_s": top.cpu_time_total / 1e6 / calls if top else None, "kernels": kernels}


def graph_seconds(fn: Callable[[], Any], device: torch.device, calls: int) -> float | str:
    """Seconds per call replaying `calls` calls captured in one CUDA graph (or why not)."""
    if device.type != "cuda":
        return "no CUDA graphs on this device"
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        return speed.time_calls({"g": graph.replay}, device, warmup=2, repeats=5,
                                min_sample_s=2e-3)["g"]["median_s"] / calls
    except Exception as exc:  # noqa: BLE001 (a refused capture is itself the finding)
        return f"capture failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def compiled_seconds(x: torch.Tensor, w: torch.Tensor, mode: str, device: torch.device
                     ) -> dict[str, Any]:
    """A bias-free nn.Linear holding `w` as its parameter (as a pruned model holds it), called
    on x under torch.compile(mode): seconds of the first call (compiling, or loading inductor's
    on-disk cache) and the median seconds per call after it (or why it failed). A parameter, not
    an argument: CUDA-graph modes then keep the weight in place instead of copying it per call."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode '{mode}' (known: {', '.join(COMPILE_MODES)})")
    try:
        torch._dynamo.reset()          # a fresh compile per case: no graph reused across cases
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
        lin.weight = torch.nn.Parameter(w, requires_grad=False)          # [out, in]
        fn = torch.compile(lin, mode=mode, dynamic=False)
        speed.sync(device)
        t0 = time.perf_counter()
        got = fn(x)                                                       # [tokens, out]
        speed.sync(device)
        first = time.perf_counter() - t0
        speed.check_close(got, F.linear(x, w), f"compiled ({mode}) {list(w.shape)}")
        t = speed.time_calls({"c": lambda: fn(x)}, device, warmup=3, repeats=7,
                             min_sample_s=2e-3)["c"]["median_s"]
        return {"s": t, "first_call_s": first, "weight": "parameter"}
    except Exception as exc:  # noqa: BLE001 (a refused compile is itself the finding)
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def profile_case(out_f: int, in_f: int, tokens: int, dtype: torch.dtype, backend: str,
                 device: torch.device, make_sparse: speed.SparseMaker = speed.to_semi_structured,
                 compile_modes: tuple[str, ...] = ()) -> dict[str, Any]:
    x, w = speed.operands(out_f, in_f, tokens, dtype, device, 0)      # x [tokens, in], w [out, in]
    ws = make_sparse(w, backend)
    fns = {"dense": lambda: F.linear(x, w), "sparse": lambda: F.linear(x, ws)}
    row: dict[str, Any] = {"out_features": out_f, "in_features": in_f, "tokens": tokens,
                           "dtype": str(dtype).removeprefix("torch."), "backend": backend}
    with torch.inference_mode():
        row["max_abs_err"] = speed.check_close(fns["sparse"](), fns["dense"](),
                                               f"profile [{out_f}, {in_f}] x {tokens}")
        walls = speed.time_calls(fns, device, warmup=3, repeats=7, min_sample_s=2e-3)
        for name, fn in fns.items():
            row[name] = {"wall_s": walls[name]["median_s"], **profile_calls(fn, device, CALLS),
                         "graph_s": graph_seconds(fn, device, CALLS)}
    # no_grad, not inference_mode: dynamo refuses a 2:4 tensor subclass parameter in inference
    # mode ("Cannot set version_counter for inference tensor", seen on the H200)
    with torch.no_grad():
        for mode in compile_modes:
            for name, wt in (("dense", w), ("sparse", ws)):
                row[name].setdefault("compiled", {})[mode] = compiled_seconds(x, wt, mode, device)
    row["wall_speedup"] = row["dense"]["wall_s"] / row["sparse"]["wall_s"]
    for mode in compile_modes:
        d, sp = row["dense"]["compiled"][mode], row["sparse"]["compiled"][mode]
        if "s" in d and "s" in sp:
            row.setdefault("compiled_speedup", {})[mode] = d["s"] / sp["s"]
    if row["sparse"]["kernel_s"] > 0:
        row["kernel_speedup"] = row["dense"]["kernel_s"] / row["sparse"]["kernel_s"]
    if all(isinstance(row[n]["graph_s"], float) for n in fns):
        row["graph_speedup"] = row["dense"]["graph_s"] / row["sparse"]["graph_s"]
    return row


def run_all(out: Path, device: str, budget_s: float, scale: str = "paper",
            compile_modes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every shape x tokens in float16 on cuSPARSELt (a masked-dense stand-in on a CPU, marked
    so) within `budget_s`, compiled too in `compile_modes`; part-profile.json."""
    for mode in compile_modes:
        if mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode '{mode}' (known: {', '.join(COMPILE_MODES)})")
    if compile_modes:
        speed.raise_compile_limits()
    dev = torch.device(device)
    deadline = time.monotonic() + budget_s
    reason = speed.backend_unavailable_reason("cusparselt") if dev.type == "cuda" else None
    stand_in = dev.type != "cuda"
    part: dict[str, Any] = {"device": device, "backend": "cusparselt", "calls": CALLS,
                            "compile_modes": list(compile_modes),
                            "stand_in": stand_in, "cases": [], "skipped": [],
                            "environment": results.environment_info()}
    if dev.type == "cuda":
        part["gpu"] = speed.gpu_environment()
    for out_f, in_f in SHAPES[scale]:
        for tokens in TOKENS[scale]:
            case = f"[{out_f}, {in_f}] x {tokens}"
            if reason or time.monotonic() > deadline:
                part["skipped"].append(f"{case}: {reason or 'the budget was spent'}")
                continue
            try:
                part["cases"].append(profile_case(
                    out_f, in_f, tokens, torch.float16 if not stand_in else torch.float32,
                    "cusparselt", dev, make_sparse=(lambda w, b: w.clone()) if stand_in
                    else speed.to_semi_structured, compile_modes=compile_modes))
            except Exception as exc:  # noqa: BLE001 (recorded: a finding, not a crash)
                part["skipped"].append(f"{case}: {type(exc).__name__}: {str(exc)[:200]}")
            log.info("profile %s done", case)
    results.write_bench_json(part, out / "part-profile.json", keys=("cases", "skipped"))
    return part
