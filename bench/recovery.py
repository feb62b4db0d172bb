"""LoRA recovery fine-tuning after structured pruning (LLM-Pruner's recovery stage).

Owns: validating `LoraSettings`, the short causal-LM LoRA run (seeded batch order, AdamW over the
LoRA parameters only, fp32), and merging the adapters back with peft's `merge_and_unload`, so that
the caller's model object is again a plain transformers model: same class, same state_dict keys
and shapes, no peft layers or `peft_config`, requires_grad / dtypes as before, eval mode.
The training text (token ids) is chosen by the caller.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

# peft refuses LoRA on these in Mamba-type models (the fused training kernel reads their weights directly)
_MAMBA_TYPES = {"mamba", "mamba2", "falcon_mamba", "falcon_h1", "nemotron_h"}
_MAMBA_REFUSED = {"out_proj", "conv1d"}
_GRAD_CLIP = 1.0
_LOSS_WINDOW = 5  # steps averaged for loss_first / loss_last


@dataclass(frozen=True)
class LoraSettings:
    steps: int = 50
    batch_size: int = 4
    lr: float = 3e-4
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    seed: int = 0

    def validate(self) -> None:
        for name in ("steps", "batch_size", "rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LoraSettings.{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"LoraSettings.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoraSettings.dropout must be in [0, 1), got {self.dropout!r}")


def _batches(n: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Row indices per step: consecutive slices of seeded permutations, re-permuted when used up."""
    gen = torch.Generator().manual_seed(seed)
    need = steps * batch_size
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))])
    return list(order[:need].view(steps, batch_size))


def lora_recover(model: torch.nn.Module, target_modules: list[str], token_ids: torch.Tensor,
                 settings: LoraSettings, progress: bool = True) -> dict[str, Any]:
    """Fine-tune LoRA adapters on `token_ids` [n, seqlen] and merge them into `model` in place."""
    settings.validate()
    if not target_modules:
        raise ValueError("target_modules must name at least one linear module")
    if token_ids.dim() != 2 or token_ids.shape[0] < 1 or token_ids.shape[1] < 2:
        raise ValueError(f"token_ids must be [n>=1, seqlen>=2], got {tuple(token_ids.shape)}")
    import peft

    targets = list(target_modules)
    if getattr(getattr(model, "config", None), "model_type", None) in _MAMBA_TYPES:
        dropped = [t for t in targets if t.rsplit(".", 1)[-1] in _MAMBA_REFUSED]
        targets = [t for t in targets if t not in dropped]
        if dropped:
            log.warning("LoRA recovery: peft refuses %s on Mamba models; training %s", dropped, targets)
        if not targets:
            raise ValueError(f"no LoRA targets left for a Mamba model after dropping {dropped}")

    device = next(model.parameters()).device
    before = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    dtypes = {n: t.dtype for n, t in [*model.named_parameters(), *model.named_buffers()]}
    if any(dt != torch.float32 for dt in dtypes.values()):
        model.float()
    config = peft.LoraConfig(task_type="CAUSAL_LM", r=settings.rank, lora_alpha=settings.alpha,
                             lora_dropout=settings.dropout, target_modules=targets, bias="none")
    tuner, merged = None, False
    # LoRA init and dropout draw from the global RNG: seed it for this run, and give the
    # caller its own RNG state back afterwards
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        try:
            tuner = peft.LoraModel(model, config, "default")  # injects LoRA layers into `model` in place
            params = [p for n, p in model.named_parameters() if "lora_" in n]
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
            model.train()
            for mod in model.modules():  # Mamba mixers: the fused training kernel would bypass x_proj's LoRA
                if hasattr(mod, "A_log") and hasattr(mod, "x_proj"):
                    mod.training = False  # flag only: children (LoRA dropout) stay in train mode
            losses: list[float] = []
            t0 = time.perf_counter()
            bar = tqdm(_batches(token_ids.shape[0], settings.batch_size, settings.steps, settings.seed),
                       desc="LoRA recovery", disable=not progress)
            for rows in bar:
                batch = token_ids[rows].to(device=device, dtype=torch.long)
                loss = model(input_ids=batch, labels=batch).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, _GRAD_CLIP)
                opt.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                result = tuner.merge_and_unload()
            merged = True
        finally:
            if not merged and tuner is not None:  # training failed: drop the adapters, weights unchanged
                tuner.unload()
            if hasattr(model, "peft_config"):  # older peft versions leave it behind after unloading
                del model.peft_config
            model.eval()
            for n, p in model.named_parameters():
                p.data = p.data.to(dtypes.get(n, p.dtype))
                p.requires_grad_(requires_grad.get(n, p.requires_grad))
                p.grad = None
            for n, b in model.named_buffers():
                b.data = b.data.to(dtypes.get(n, b.dtype))
    if result is not model:
        raise RuntimeError("peft merge_and_unload returned a new object instead of the caller's model")
    if {k: tuple(v.shape) for k, v in model.state_dict().items()} != before:
        raise RuntimeError("LoRA merge changed the model's state_dict layout")
    k = min(_LOSS_WINDOW, len(losses))
    report = {"steps": settings.steps, "tokens_seen": settings.steps * settings.batch_size * token_ids.shape[1],
              "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k,
              "seconds": round(seconds, 3), "peft": peft.__version__, "target_modules": targets,
              "settings": asdict(settings)}
    log.info("LoRA recovery: %d steps, loss %.4f -> %.4f in %.1fs", settings.steps,
             report["loss_first"], report["loss_last"], seconds)
    return report
