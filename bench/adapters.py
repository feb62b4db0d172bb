"""Architecture knowledge, as data: where the blocks are and which linears inside them are prunable.

Owns: one `ArchAdapter` per architecture family. Nothing outside this file names a model's
internal module paths. `groups` lists a block's prunable linears in execution order, grouped by
shared input (layers of one group see the same input tensor, so one statistic serves them all).
`taps` name linears whose own forward never runs because the model uses their weight directly
(Mamba's dt_proj): their input is read from another module's output instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from methods.base import PruneBenchError, did_you_mean


@dataclass(frozen=True)
class Tap:
    """The input of a linear whose forward never runs: source's output[..., start:start+in]."""
    source: str                            # module (in the block) whose OUTPUT carries the input
    start: int = 0


@dataclass(frozen=True)
class ArchAdapter:
    arch: str
    model_types: tuple[str, ...]
    blocks_path: str                       # dotted path of the nn.ModuleList of blocks
    groups: tuple[tuple[str, ...], ...]    # prunable linears per block, grouped by shared input
    taps: tuple[tuple[str, Tap], ...] = ()  # (linear name, where its input is read)
    notes: str = ""                        # what is deliberately not pruned, and why

    def tap(self, name: str) -> Tap | None:
        return dict(self.taps).get(name)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks_path)  # type: ignore[return-value]

    def layer_names(self) -> tuple[str, ...]:
        return tuple(name for group in self.groups for name in group)

    def prunable(self, model: nn.Module) -> dict[str, nn.Linear]:
        """Every prunable linear of the model by its full module name, in block order."""
        out: dict[str, nn.Linear] = {}
        for i, block in enumerate(self.blocks(model)):
            for name in self.layer_names():
                out[f"{self.blocks_path}.{i}.{name}"] = block.get_submodule(name)  # type: ignore
        return out


LLAMA = ArchAdapter(
    arch="llama",
    model_types=("llama", "mistral", "qwen2"),
    blocks_path="model.layers",
    groups=(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.o_proj",),
            ("mlp.gate_proj", "mlp.up_proj"),
            ("mlp.down_proj",)),
)

OPT = ArchAdapter(
    arch="opt",
    model_types=("opt",),
    blocks_path="model.decoder.layers",
    groups=(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.out_proj",),
            ("fc1",),
            ("fc2",)),
)

# transformers' MambaMixer computes dt = dt_proj.weight @ x_proj(x)[..., :rank] without calling
# dt_proj (on every path, CPU included), so dt_proj's input is tapped from x_proj's output.
MAMBA = ArchAdapter(
    arch="mamba",
    model_types=("mamba",),
    blocks_path="backbone.layers",
    groups=(("mixer.in_proj",),
            ("mixer.x_proj",),
            ("mixer.dt_proj",),
            ("mixer.out_proj",)),
    taps=(("mixer.dt_proj", Tap("mixer.x_proj", 0)),),
    notes="conv1d (depthwise, 4 taps per channel, <1% of a block's weights) and the SSM "
          "parameters A_log, D stay dense: they are not matrices a layer-wise method reconstructs",
)

ADAPTERS: dict[str, ArchAdapter] = {a.arch: a for a in (LLAMA, OPT, MAMBA)}


def adapter_for(model: nn.Module) -> ArchAdapter:
    """Pick the adapter by the model's `config.model_type`."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    known = [t for a in ADAPTERS.values() for t in a.model_types]
    raise PruneBenchError(f"no adapter for model_type '{model_type}'{did_you_mean(str(model_type), known)}")


def adapter_by_arch(arch: str) -> ArchAdapter:
    if arch not in ADAPTERS:
        raise PruneBenchError(f"unknown architecture '{arch}'{did_you_mean(arch, list(ADAPTERS))}")
    return ADAPTERS[arch]


@torch.no_grad()
def layer_sparsity(model: nn.Module, adapter: ArchAdapter) -> dict[str, float]:
    """Fraction of exact zeros in each prunable linear's weight."""
    return {name: float((lin.weight == 0).float().mean())
            for name, lin in adapter.prunable(model).items()}
