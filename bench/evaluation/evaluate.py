"""Evaluation of a (pruned) model: perplexity under the one protocol, and achieved sparsity.

Owns: `perplexity` (non-overlapping windows of `seqlen` tokens over the evaluation text tokenized
once without special tokens, the trailing partial window dropped; under the BOS rule
(bench.data.bos_id) each window is the BOS and `seqlen - 1` text tokens, NLL averaged
over every predicted token; per-window NLL and, against the dense model, per-window KL for the
paired statistics of bench/board/paired.py), `measure_sparsity` and `check_pattern` (verified on the weights of
the prunable layers, N:M structure checked group by group).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.adapters import ArchAdapter
from bench.data import with_bos
from methods.base import Pattern, PruneBenchError
from methods.permutation import is_permutation, max_group_nonzeros


@torch.no_grad()
def perplexity(model: nn.Module, token_ids: torch.Tensor, seqlen: int, batch_size: int = 4,
               progress: bool = True, reference: nn.Module | None = None,
               bos: int | None = None) -> dict[str, Any]:
    """token_ids [N] -> {"ppl", "nll", "n_tokens" (predicted), "n_windows", "seqlen",
    "window_nll" [W] (mean NLL per window), "kl", "window_kl" [W]}.

    With a `reference` model (the dense one) each window also gets the mean over its predicted
    positions of KL(reference || model) of the next-token distribution, over the full
    vocabulary in float32; `reference is model` gives exactly 0 (one forward, not two)."""
    span = seqlen - (bos is not None)                 # text tokens per window
    n_windows = token_ids.numel() // span
    if n_windows == 0:
        raise PruneBenchError(f"evaluation text has {token_ids.numel()} tokens, fewer than seqlen={seqlen}")
    windows = with_bos(token_ids[: n_windows * span].view(n_windows, span), bos)  # [W, seqlen]
    device = next(model.parameters()).device
    total_nll = 0.0
    total_tokens = 0
    window_nll: list[float] = []
    window_kl: list[float] = []
    model.eval()
    if reference is not None:
        reference.eval()
    for start in tqdm(range(0, n_windows, batch_size), desc="perplexity", disable=not progress):
        batch = windows[start:start + batch_size].to(device)              # [b, seqlen]
        logits = model(input_ids=batch, use_cache=False).logits.float()   # [b, seqlen, V]
        flat = logits[:, :-1].reshape(-1, logits.shape[-1])               # [b*(seqlen-1), V]
        nll = F.cross_entropy(flat, batch[:, 1:].reshape(-1), reduction="sum")
        total_nll += float(nll)
        total_tokens += batch[:, 1:].numel()
        # per-window values for the paired statistics; the total above stays the summed
        # reduction it always was, so ppl/wiki is bit-identical to runs made before
        per_token = F.cross_entropy(flat, batch[:, 1:].reshape(-1), reduction="none")
        window_nll += per_token.view(batch.shape[0], -1).double().mean(1).tolist()   # [b]
        if reference is model:                                            # the dense run itself
            window_kl += [0.0] * batch.shape[0]
        elif reference is not None:
            window_kl += _window_kl(reference, batch, logits).tolist()
    mean_nll = total_nll / total_tokens
    if not math.isfinite(mean_nll):
        raise PruneBenchError("perplexity is not finite: the model produces NaN/Inf logits")
    kl = None if reference is None else sum(window_kl) / len(window_kl)
    return {"ppl": math.exp(mean_nll), "nll": mean_nll, "n_tokens": total_tokens,
            "n_windows": n_windows, "seqlen": seqlen, "window_nll": window_nll,
            "kl": kl, "window_kl": window_kl if reference is not None else None}


def _window_kl(reference: nn.Module, batch: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over each window's predicted positions of KL(reference || model). -> [b] float64"""
    ref_logits = reference(input_ids=batch, use_cache=False).logits.float()   # [b, seqlen, V]
    logp = F.log_softmax(ref_logits[:, :-1], dim=-1)                         # [b, L, V] dense
    logq = F.log_softmax(logits[:, :-1], dim=-1)                             # [b, L, V] pruned
    kl = (logp.exp() * (logp - logq)).sum(-1)                                 # [b, L]
    return kl.double().mean(1).clamp_min(0.0)


@torch.no_grad()
def measure_sparsity(model: nn.Module, adapter: ArchAdapter) -> dict[str, Any]:
    """Zeros in the prunable linears (per layer and overall) and whole-model parameter counts."""
    per_layer: dict[str, float] = {}
    zeros = numel = 0
    for name, lin in adapter.prunable(model).items():
        z = int((lin.weight == 0).sum())
        per_layer[name] = z / lin.weight.numel()
        zeros += z
        numel += lin.weight.numel()
    seen: set[int] = set()
    total = nonzero = 0
    for p in model.parameters():
        if id(p) in seen:            # tied embeddings count once
            continue
        seen.add(id(p))
        total += p.numel()
        nonzero += int((p != 0).sum())
    return {"achieved": zeros / max(numel, 1), "per_layer": per_layer, "prunable_params": numel,
            "total_params": total, "nonzero_params": nonzero}


@torch.no_grad()
def check_pattern(model: nn.Module, adapter: ArchAdapter, pattern: Pattern,
                  per_layer: dict[str, float], tolerance: float = 0.01,
                  block_sparsity: list[float] | None = None,
                  in_perms: dict[str, torch.Tensor] | None = None) -> None:
    """Raise if the saved weights do not honour the pattern (N:M exactly, unstructured ~target).
    With a non-uniform allocation (`block_sparsity`, one per block) each layer is held to its
    block's sparsity and the prunable parameters together to the pattern's. `in_perms` (layer
    name -> [in] permutation, N:M only) checks those layers' groups in the permuted order."""
    in_perms = in_perms or {}
    if pattern.kind == "nm":
        assert pattern.n is not None and pattern.m is not None
        layers = adapter.prunable(model)
        unknown = sorted(set(in_perms) - set(layers))
        if unknown:
            raise PruneBenchError(f"input permutations name layers the model lacks: {unknown[:3]}")
        for name, lin in layers.items():
            perm = in_perms.get(name)
            if perm is not None and not is_permutation(perm, lin.in_features):
                raise PruneBenchError(f"layer {name}: its saved input permutation is not a "
                                      f"permutation of its {lin.in_features} inputs")
            most = max_group_nonzeros(lin.weight, pattern.m, perm)
            if most > pattern.n:
                how = " under its input permutation" if perm is not None else ""
                raise PruneBenchError(f"layer {name} violates {pattern.slug}{how}: a group of "
                                      f"{pattern.m} has {most} nonzeros")
    elif in_perms:
        raise PruneBenchError(f"input permutations recorded for a {pattern.kind} pattern")
    elif pattern.kind == "unstructured":
        layers = adapter.prunable(model)
        widths = {name: lin.in_features for name, lin in layers.items()}
        target = {name: pattern.sparsity for name in per_layer}
        if block_sparsity is not None:
            target = {name: block_sparsity[int(name[len(adapter.blocks_path) + 1:].split(".")[0])]
                      for name in per_layer}
        for name, frac in per_layer.items():
            # per-row methods remove round(in * sparsity) weights per row: on narrow layers
            # (Mamba's dt_proj has 16 inputs) that is up to half a weight per row off target
            slack = max(1e-3, 0.5 / widths.get(name, 1 << 30) + 1e-9)
            if frac < target[name] - slack or frac > target[name] + max(tolerance, slack):
                raise PruneBenchError(f"layer {name} has sparsity {frac:.4f}, target "
                                      f"{target[name]:.4f} ({pattern.slug})")
        if block_sparsity is not None:
            sizes = {name: lin.weight.numel() for name, lin in layers.items()}
            total = sum(sizes[n] * per_layer[n] for n in per_layer) / sum(sizes[n] for n in per_layer)
            slack = max(1e-3, 0.5 / min(widths.values()) + 1e-9)
            if abs(total - pattern.sparsity) > slack:
                raise PruneBenchError(f"the prunable layers have sparsity {total:.4f} together, "
                                      f"target {pattern.sparsity:.4f} ({pattern.slug})")


@torch.no_grad()
def check_finite_weights(model: nn.Module, what: str) -> None:
    """Raise a one-line error naming the parameters of `model` that hold NaN or Inf; `what`
    says whose they are ("the input model", "checkpoint DIR", "method 'x' produced")."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise PruneBenchError(f"{what} has NaN/Inf weights in {', '.join(bad[:3])}{more}")
