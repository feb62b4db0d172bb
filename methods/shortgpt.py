"""ShortGPT: remove the blocks with the lowest Block Influence (Men et al., arXiv 2403.03853).

Block Influence of block b on the calibration tokens t:

    BI_b = 1 - mean_t cos(x_t^(b), y_t^(b))      x: the block's input, y: its output

A block that barely turns the residual stream is redundant. The blocks with the lowest BI go,
as many as bring the removed share of the structured-prunable parameters (docs/protocol.md)
closest to the pattern's target; the model comes back physically shallower, a stock
transformers model (bench/structure/depth.py). Inputs and outputs are each block's own, taken
block by block from the dense model (bench/engine.py's capture), for every architecture.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.adapters import ArchAdapter
from bench.engine import capture_block_inputs, first_output
from bench.structure import structured_params
from bench.structure.depth import drop_blocks
from methods.base import (Capabilities, ModelData, ModelMethod, ModelResult, Pattern,
                          PruneBenchError)
from methods.registry import register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShortGPTParams:
    n_samples: int = 0        # calibration sequences scored (0 = all of the calibration set)
    batch_size: int = 8

    def validate(self) -> None:
        if self.n_samples < 0 or self.batch_size < 1:
            raise PruneBenchError("shortgpt: n_samples must be >= 0 and batch_size >= 1")


@torch.no_grad()
def block_influence(model: nn.Module, adapter: ArchAdapter, ids: torch.Tensor, batch_size: int,
                    progress: bool = True) -> list[float]:
    """ids [n, seq] -> BI of every block: 1 - the mean cosine similarity over all tokens of
    the block's input and output hidden states (float64 sums)."""
    model.eval()
    cap = capture_block_inputs(model, adapter, ids, batch_size)
    hidden = cap.hidden
    out = []
    for bi, block in enumerate(tqdm(adapter.blocks(model), desc="shortgpt block influence",
                                    disable=not progress)):
        total, count = 0.0, 0
        nxt = []
        for h, kw in zip(hidden, cap.kwargs[bi]):
            y = first_output(block(h, **kw))                                # [b, seq, d]
            cos = nn.functional.cosine_similarity(h.double(), y.double(), dim=-1)   # [b, seq]
            total += float(cos.nan_to_num(0.5).sum())
            count += cos.numel()
            nxt.append(y)
        hidden = nxt
        out.append(1.0 - total / count)
    return out


def blocks_to_remove(influence: list[float], sizes: list[int], target: float) -> list[int]:
    """The lowest-influence blocks (ties: the lower index first) whose removed share of
    `sizes` is closest to `target` (the fewer blocks on a tie); sorted."""
    order = sorted(range(len(influence)), key=lambda b: (influence[b], b))
    total = float(sum(sizes))
    best, best_gap, removed = 0, target, 0.0
    for k, b in enumerate(order[:-1], start=1):                         # always keep one block
        removed += sizes[b] / total
        if abs(removed - target) < best_gap - 1e-12:
            best, best_gap = k, abs(removed - target)
    return sorted(order[:best])


@register
class ShortGPT(ModelMethod):
    name = "shortgpt"
    Params = ShortGPTParams
    capabilities = Capabilities(kinds=frozenset({"structured"}))
    description = ("Depth pruning: remove the blocks whose output is most similar to their input "
                   "(lowest Block Influence); the model gets shallower.")
    paper = ("Men et al. 2024, ShortGPT: Layers in Large Language Models are More Redundant Than "
             "You Expect (arXiv 2403.03853)")
    fidelity = ("BI as the reference (icip-cas/ShortGPT): 1 - cosine of a block's input and output "
                "per token, on calibration text, lowest removed. Ours takes each block's own output "
                "(the reference's last 'output' is the final-normed hidden state) on our "
                "calibration set, and removes as many blocks as bring the removed share of the "
                "structured parameters closest to the target (the reference takes a block count).")

    def prune_model(self, model: nn.Module, adapter: ArchAdapter, data: ModelData,
                    pattern: Pattern) -> ModelResult:
        p = self.params
        ids = data.calib_ids if p.n_samples == 0 else data.calib_ids[:p.n_samples]
        if p.n_samples > data.calib_ids.shape[0]:
            raise PruneBenchError(f"shortgpt: n_samples {p.n_samples} exceeds the "
                                  f"{data.calib_ids.shape[0]} calibration sequences")
        t0 = time.perf_counter()
        influence = block_influence(model, adapter, ids, p.batch_size, self.progress)
        per_block = structured_params(model, adapter)           
        sizes = [sum(v for k, v in per_block.items() if k.split(".")[0] == str(b))
                 for b in range(len(influence))]
        remove = blocks_to_remove(influence, sizes, pattern.sparsity)
        if not remove:
            raise PruneBenchError(f"shortgpt: removing no block is closest to {pattern.slug} "
                                  f"for a model of {len(influence)} blocks")
        drop_blocks(model, adapter, remove)                     
        log.info("shortgpt: removed blocks %s (influence %s)", remove,
                 [round(x, 4) for x in influence])
        return ModelResult(model, {"block_influence": influence, "removed_blocks": remove,
                                   "seconds_influence": time.perf_counter() - t0})
