"""Streaming, fp32 accumulators of the per-layer statistics that layer-wise methods ask for.

Owns: `StatAccumulator`, fed with a linear layer's input batches [..., in] through a forward
pre-hook, producing `LayerStats` (token count, sum of squared inputs per feature, and the
Hessian 2 X X^T / n). Memory is O(in^2) per layer, independent of the token count.
"""
from __future__ import annotations

import torch
from torch import nn

from methods.base import LayerStats, StatKind


class StatAccumulator:
    def __init__(self, in_features: int, kind: StatKind, device: torch.device) -> None:
        self.kind = kind
        self.n_tokens = 0
        self.act_sq = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.xtx = (torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
                    if kind == "hessian" else None)

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """x [..., in] -> accumulate over all leading dimensions (tokens)."""
        x2 = x.reshape(-1, x.shape[-1]).float()               # [tokens, in]
        self.n_tokens += x2.shape[0]
        self.act_sq += (x2 * x2).sum(dim=0)
        if self.xtx is not None:
            self.xtx.addmm_(x2.t(), x2)                       # [in, in]

    def hook(self, module: nn.Module, args: tuple) -> None:
        self.add(args[0])

    def finish(self) -> LayerStats:
        n = max(self.n_tokens, 1)
        hessian = self.xtx * (2.0 / n) if self.xtx is not None else None
        return LayerStats(n_tokens=self.n_tokens, act_sq=self.act_sq, hessian=hessian)
