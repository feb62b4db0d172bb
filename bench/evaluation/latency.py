"""Inference latency of a causal LM: prefill throughput and per-token decode time.

Owns the measurement behind the speedup we report for structurally pruned (physically smaller)
models against their dense original on the same machine. One *run* is a prefill of a fixed seeded
random prompt [batch, prompt_len] with use_cache=True and logits for the last position only, as
serving does (timed), followed by `decode_tokens` greedy
single-token steps that feed back the argmax token and the returned cache (timed separately, so
decode time excludes the prefill). Works for Llama, OPT and Mamba under every transformers 5.x
we support: the cache goes in and comes out under the name the model's forward takes
(`cache` from 5.24 on for every model; before that `past_key_values`, or `cache_params` for
Mamba). No cache_position is needed.

`measure` runs warm-ups then `repeats` timed runs and reports medians plus the raw seconds;
`compare` does the same for two models with runs interleaved (dense, pruned, dense, ...) so that
machine drift hits both alike. Both go through `_measure_interleaved`.
"""
from __future__ import annotations

import inspect
import logging
import statistics
import time
from typing import Any

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def _device(model: torch.nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# transformers >= 5.24 (every model); < 5.24 attention models; < 5.24 Mamba
CACHE_NAMES = ("cache", "past_key_values", "cache_params")


def cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the forward argument that takes the cache; the output field has the same name.

    Checked by signature, not by version: forward also takes **kwargs, so a wrong name would be
    swallowed silently and every decode step would start from an empty state."""
    params = inspect.signature(model.forward).parameters
    for name in CACHE_NAMES:
        if name in params:
            return name
    raise TypeError(f"{type(model).__name__}.forward takes none of {CACHE_NAMES}: "
                    "cannot decode with a cache")


def _cache_of(out: Any, key: str) -> Any:
    cache = getattr(out, key, None)
    if cache is None:
        raise RuntimeError(f"the model returned no '{key}' although use_cache=True")
    return cache


def _run_once(model: torch.nn.Module, ids: torch.Tensor, decode_tokens: int,
              keep_logits: bool = False) -> tuple[float, float, list[torch.Tensor]]:
    """One prefill of ids [batch, prompt_len] then `decode_tokens` greedy steps.

    Returns (prefill seconds, decode seconds, last-position logits [batch, vocab] of the prefill and
    of every decode step when keep_logits, else [])."""
    device, key = ids.device, cache_kwarg(model)
    kept: list[torch.Tensor] = []
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)   # as serving does
        _sync(device)
        t1 = time.perf_counter()
        logits = out.logits[:, -1, :]                       # [batch, vocab]
        cache = _cache_of(out, key)
        for _ in range(decode_tokens):
            if keep_logits:
                kept.append(logits.float().clone())
            token = logits.argmax(dim=-1, keepdim=True)    # [batch, 1]
            out = model(input_ids=token, use_cache=True, logits_to_keep=1, **{key: cache})
            logits, cache = out.logits[:, -1, :], _cache_of(out, key)
        _sync(device)
        t2 = time.perf_counter()
    if keep_logits:
        kept.append(logits.float().clone())
    return t1 - t0, t2 - t1, kept


def greedy_decode(model: torch.nn.Module, ids: torch.Tensor,
                  decode_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Untimed greedy decode with the cache, as the timed runs do it.

    Returns (generated tokens [batch, decode_tokens], logits [batch, decode_tokens + 1, vocab]),
    where logits[:, i] predicts the token after prompt + tokens[:, :i]."""
    _, _, kept = _run_once(model, ids, decode_tokens, keep_logits=True)
    logits = torch.stack(kept, dim=1)                       # [batch, decode_tokens + 1, vocab]
    return logits[:, :-1].argmax(dim=-1), logits


def _check(models: list[torch.nn.Module], batch_size: int, prompt_len: int, decode_tokens: int,
           warmup: int, repeats: int, vocab_size: int | None) -> int:
    """Validate settings; return the vocabulary size the prompt ids are drawn below."""
    for name, value in (("batch_size", batch_size), ("prompt_len", prompt_len),
                        ("decode_tokens", decode_tokens), ("repeats", repeats)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if warmup < 0:
        raise ValueError(f"warmup must be non-negative, got {warmup}")
    vocabs = [m.config.vocab_size for m in models]
    vocab = min(vocabs) if vocab_size is None else vocab_size
    if not 0 < vocab <= min(vocabs):
        raise ValueError(f"vocab_size must be in 1..{min(vocabs)}, got {vocab}")
    for m in models:
        max_pos = getattr(m.config, "max_position_embeddings", None)
        if max_pos is not None and prompt_len + decode_tokens > max_pos:
            raise ValueError(f"prompt_len + decode_tokens = {prompt_len + decode_tokens} "
                             f"exceeds max_position_embeddings = {max_pos}")
    return vocab


def _common_settings(batch_size: int, prompt_len: int, decode_tokens: int, warmup: int,
                     repeats: int, vocab: int, seed: int) -> dict[str, Any]:
    return {"batch_size": batch_size, "prompt_len": prompt_len, "decode_tokens": decode_tokens,
            "warmup": warmup, "repeats": repeats, "vocab_size": vocab, "seed": seed,
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__}


def _model_settings(model: torch.nn.Module) -> dict[str, Any]:
    device = _device(model)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    dtype = str(model.get_input_embeddings().weight.dtype).removeprefix("torch.")
    return {"device": name, "dtype": dtype,
            "params": sum(p.numel() for p in model.parameters())}


def _measure_interleaved(models: list[torch.nn.Module], *, batch_size: int, prompt_len: int,
                         decode_tokens: int, warmup: int, repeats: int, vocab_size: int | None,
                         seed: int, progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Warm up every model, then time `repeats` rounds, each round one run per model in order."""
    vocab = _check(models, batch_size, prompt_len, decode_tokens, warmup, repeats, vocab_size)
    common = _common_settings(batch_size, prompt_len, decode_tokens, warmup, repeats, vocab, seed)
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (batch_size, prompt_len), generator=gen)  # [batch, prompt_len]
    inputs = [prompt.to(_device(m)) for m in models]
    for m in models:
        if m.training:
            log.warning("model %s is in training mode; latency is usually wanted in eval mode",
                        type(m).__name__)
    for _ in range(warmup):
        for m, ids in zip(models, inputs):
            _run_once(m, ids, decode_tokens)
    prefill: list[list[float]] = [[] for _ in models]
    decode: list[list[float]] = [[] for _ in models]
    for _ in tqdm(range(repeats), desc="latency", disable=not progress):
        for i, (m, ids) in enumerate(zip(models, inputs)):
            p, d, _ = _run_once(m, ids, decode_tokens)
            prefill[i].append(p)
            decode[i].append(d)
    results = []
    for m, p, d in zip(models, prefill, decode):
        res = {"prefill_tokens_per_s": batch_size * prompt_len / statistics.median(p),
               "decode_ms_per_token": statistics.median(d) / decode_tokens * 1000.0,
               "prefill_seconds": p, "decode_seconds": d,
               "settings": {**common, **_model_settings(m)}}
        log.info("%s (%d params): prefill %.1f tok/s, decode %.3f ms/token", type(m).__name__,
                 res["settings"]["params"], res["prefill_tokens_per_s"], res["decode_ms_per_token"])
        results.append(res)
    return results, common


def measure(model: torch.nn.Module, *, batch_size: int = 1, prompt_len: int = 128,
            decode_tokens: int = 32, warmup: int = 2, repeats: int = 7,
            vocab_size: int | None = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Median prefill tokens/s and decode ms/token of one model, raw seconds and settings."""
    results, _ = _measure_interleaved(
        [model], batch_size=batch_size, prompt_len=prompt_len, decode_tokens=decode_tokens,
        warmup=warmup, repeats=repeats, vocab_size=vocab_size, seed=seed, progress=progress)
    return results[0]


def compare(dense: torch.nn.Module, pruned: torch.nn.Module, **same_kwargs: Any) -> dict[str, Any]:
    """Measure dense and pruned with identical settings, runs interleaved.

    Speedups above 1 favour the pruned model."""
    sig = inspect.signature(measure).parameters
    kwargs = {k: v.default for k, v in sig.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = set(same_kwargs) - set(kwargs)
    if unknown:
        raise TypeError(f"compare() got unexpected keyword arguments {sorted(unknown)}")
    kwargs.update(same_kwargs)
    (d, p), common = _measure_interleaved([dense, pruned], **kwargs)
    return {"dense": d, "pruned": p,
            "prefill_speedup": p["prefill_tokens_per_s"] / d["prefill_tokens_per_s"],
            "decode_speedup": d["decode_ms_per_token"] / p["decode_ms_per_token"],
            "settings": common}
