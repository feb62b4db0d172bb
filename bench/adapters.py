"""Architecture knowledge, as data: where the blocks are and which linears inside them are prunable.

Owns: one `ArchAdapter` per architecture family. Nothing outside this file names a model's
internal module paths. `groups` lists a block's prunable linears in execution order, grouped by
shared input (layers of one group see the same input tensor, so one statistic serves them all).
`taps` name linears whose own forward never runs because the model uses their weight directly
(Mamba's dt_proj): their input is read from another module's output instead. `coupled` declares
the structural units of a block (attention heads / KV groups, MLP channels, Mamba inner
channels) and every tensor slice that belongs to one unit, for structured pruning.
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
class Coupled:
    """One kind of structural unit of a block and every parameter slice that belongs to a unit.

    A block has `config.<count>` units of this kind (per layer: `layer_units`). Each slice is
    (parameter path in the block, dim, copies): along `dim` the parameter holds `copies`
    consecutive runs of n_units equal-width pieces (Mamba's in_proj holds x and gate: copies 2).
    Missing parameters (a bias the config switched off) are skipped. `config_attrs` and
    `module_attrs` scale with the unit count (GQA: KV heads and query heads both scale).
    `consumers` are the linears whose INPUT columns are the units (second-order reconstruction).
    `requires` are config values the unit definition holds only under (Gemma3's query-head unit:
    one KV head); structural surgery refuses a model that breaks them.
    """

    kind: str
    config_attrs: tuple[str, ...]          # first one is the unit count
    slices: tuple[tuple[str, int, int], ...]
    consumers: tuple[str, ...]
    module_attrs: tuple[tuple[str, str], ...] = ()
    requires: tuple[tuple[str, int], ...] = ()

    def check(self, config: object) -> None:
        """Raise when `config` breaks a value this unit definition requires."""
        for attr, want in self.requires:
            got = getattr(config, attr, None)
            if got != want:
                raise PruneBenchError(f"structural unit '{self.kind}' needs {attr} = {want}, "
                                      f"this model has {got}")


@dataclass(frozen=True)
class ArchAdapter:
    arch: str
    model_types: tuple[str, ...]
    blocks_path: str                       # dotted path of the nn.ModuleList of blocks
    groups: tuple[tuple[str, ...], ...]    # prunable linears per block, grouped by shared input
    taps: tuple[tuple[str, Tap], ...] = ()  # (linear name, where its input is read)
    notes: str = ""                        # what is deliberately not pruned, and why
    coupled: tuple[Coupled, ...] = ()      # structural units, for structured pruning
    recurrent: bool = False                # a state-space model: its cache is a state, not keys

    def coupled_kind(self, kind: str) -> Coupled:
        for c in self.coupled:
            if c.kind == kind:
                return c
        raise PruneBenchError(f"architecture '{self.arch}' has no structural unit '{kind}'")

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


def _rows(*linears: str, bias: bool = True) -> tuple[tuple[str, int, int], ...]:
    """Output rows (and bias entries) of producing linears."""
    out = tuple((f"{name}.weight", 0, 1) for name in linears)
    return out + (tuple((f"{name}.bias", 0, 1) for name in linears) if bias else ())


def _cols(*linears: str) -> tuple[tuple[str, int, int], ...]:
    """Input columns of consuming linears."""
    return tuple((f"{name}.weight", 1, 1) for name in linears)


# A Llama attention unit is one KV group: its key and value head, the query heads that share
# them (num_attention_heads // num_key_value_heads) and their o_proj columns.
LLAMA_UNITS = (
    Coupled("attn", ("num_key_value_heads", "num_attention_heads"),
            _rows("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj") + _cols("self_attn.o_proj"),
            consumers=("self_attn.o_proj",)),
    Coupled("mlp", ("intermediate_size",),
            _rows("mlp.gate_proj", "mlp.up_proj") + _cols("mlp.down_proj"),
            consumers=("mlp.down_proj",), module_attrs=(("mlp", "intermediate_size"),)),
)

LLAMA = ArchAdapter(
    arch="llama",
    model_types=("llama", "mistral", "qwen2", "prunebench_llama"),
    blocks_path="model.layers",
    groups=(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.o_proj",),
            ("mlp.gate_proj", "mlp.up_proj"),
            ("mlp.down_proj",)),
    coupled=LLAMA_UNITS,
)

OPT = ArchAdapter(
    arch="opt",
    model_types=("opt", "prunebench_opt"),
    blocks_path="model.decoder.layers",
    groups=(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.out_proj",),
            ("fc1",),
            ("fc2",)),
    coupled=(
        Coupled("attn", ("num_attention_heads",),
                _rows("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
                + _cols("self_attn.out_proj"),
                consumers=("self_attn.out_proj",), module_attrs=(("self_attn", "num_heads"),)),
        Coupled("mlp", ("ffn_dim",), _rows("fc1") + _cols("fc2"), consumers=("fc2",)),
    ),
)

# transformers' MambaMixer computes dt = dt_proj.weight @ x_proj(x)[..., :rank] without calling
# dt_proj (on every path, CPU included), so dt_proj's input is tapped from x_proj's output.
MAMBA = ArchAdapter(
    arch="mamba",
    model_types=("mamba", "prunebench_mamba"),
    blocks_path="backbone.layers",
    groups=(("mixer.in_proj",),
            ("mixer.x_proj",),
            ("mixer.dt_proj",),
            ("mixer.out_proj",)),
    taps=(("mixer.dt_proj", Tap("mixer.x_proj", 0)),),
    coupled=(
        # an inner channel: its x and gate rows of in_proj, its conv1d filter, its x_proj
        # column, dt_proj row, A_log row, D entry and out_proj column
        Coupled("ssm", ("intermediate_size",),
                (("mixer.in_proj.weight", 0, 2), ("mixer.in_proj.bias", 0, 2),
                 ("mixer.conv1d.weight", 0, 1), ("mixer.conv1d.bias", 0, 1))
                + _rows("mixer.dt_proj") + (("mixer.A_log", 0, 1), ("mixer.D", 0, 1))
                + _cols("mixer.x_proj", "mixer.out_proj"),
                consumers=("mixer.out_proj", "mixer.x_proj"),
                module_attrs=(("mixer", "intermediate_size"), ("mixer.conv1d", "in_channels"),
                              ("mixer.conv1d", "out_channels"), ("mixer.conv1d", "groups"))),
    ),
    recurrent=True,
    notes="conv1d (depthwise, 4 taps per channel, <1% of a block's weights) and the SSM "
          "parameters A_log, D stay dense: they are not matrices a layer-wise method reconstructs",
)

# Gemma3: Llama's linears, plus per-head q/k RMSNorms (shared by every head, so no unit owns a
# slice of them), four RMSNorms around attention and MLP, a scaled embedding and a tied head
# (all at model width: structural units never touch them), and sliding-window and global layers
# (the engine hands each block its own mask and rotary embedding). Gemma-3-270M has ONE KV head,
# so Llama's unit (a KV group) would be the whole attention; here an attention unit is one query
# head with its o_proj columns, the shared key and value head kept. That unit is exact only with
# a single KV head (with more, dropping query heads unevenly would reassign heads to KV groups),
# so it `requires` num_key_value_heads = 1.
GEMMA3 = ArchAdapter(
    arch="gemma3",
    model_types=("gemma3_text", "prunebench_gemma3"),
    blocks_path="model.layers",
    groups=LLAMA.groups,
    coupled=(
        Coupled("attn", ("num_attention_heads",),
                _rows("self_attn.q_proj") + _cols("self_attn.o_proj"),
                consumers=("self_attn.o_proj",),
                module_attrs=(("self_attn", "num_key_value_groups"),),
                requires=(("num_key_value_heads", 1),)),
        LLAMA_UNITS[1],
    ),
    notes="q_norm and k_norm (per-head RMSNorm weights shared by all heads), the four block "
          "norms, the scaled embedding and the tied head are not pruned",
)

ADAPTERS: dict[str, ArchAdapter] = {a.arch: a for a in (LLAMA, OPT, MAMBA, GEMMA3)}


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
