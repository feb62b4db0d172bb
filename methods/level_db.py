"""DarwinLM's level database: per block and unit kind, a ladder of structured pruning levels.

Owns building, caching and reading the database. One calibration pass over the DENSE model
accumulates the input Hessian H [in, in] of every consumer linear (o_proj / down_proj / fc2 /
out_proj, and Mamba's x_proj); for each block and unit kind the greedy second-order removal
order (ZipLM-style OBS with weight updates, methods.structured_obs) is computed once on the
kind's first consumer. Because OBS on a quadratic objective ends where the closed-form solve
ends, the ladder is stored as (removal order, Hessians) and any level's weights are one solve
away (`LevelDB.consumer_weights`, memoised). Cached as work/darwinlm/{model}.safetensors
(a Snakemake output), keyed by the calibration ids' sha256 and the damping.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from bench import outputs
from bench.adapters import ArchAdapter
from bench.data import safetensors_metadata, token_ids_sha256
from bench.stats import StatAccumulator
from bench.structure import layer_units
from methods.base import PruneBenchError
from methods.structured_obs import kept_units, reconstruct, removal_order, scatter_units

log = logging.getLogger(__name__)
VERSION = 1


@dataclass
class LevelDB:
    orders: dict[str, torch.Tensor]            # "{i}.{kind}" -> removal order [n_units]
    hessians: dict[str, torch.Tensor]          # "{i}.{consumer}" -> H [in, in]
    meta: dict[str, Any]
    _memo: dict[tuple[int, str, int], dict[str, torch.Tensor]] = field(default_factory=dict)

    def keep(self, i: int, kind: str, n_removed: int) -> torch.Tensor:
        order = self.orders[f"{i}.{kind}"]
        return kept_units(order, n_removed, order.numel())

    @torch.no_grad()
    def consumer_weights(self, model: nn.Module, adapter: ArchAdapter, i: int, kind: str,
                         n_removed: int) -> dict[str, torch.Tensor]:
        """Full-width consumer weights [out, in] of block i with the first n_removed units of
        the ladder removed (their columns zero) and the rest re-solved. DENSE weights in."""
        key = (i, kind, n_removed)
        if key not in self._memo:
            coupled = adapter.coupled_kind(kind)
            block = adapter.blocks(model)[i]
            n = self.orders[f"{i}.{kind}"].numel()
            keep = self.keep(i, kind, n_removed)
            out = {}
            for name in coupled.consumers:
                w = block.get_submodule(name).weight                      # [out, n * c]
                c = w.shape[1] // n
                h = self.hessians[f"{i}.{name}"].to(w.device)             # a cached db loads on CPU
                kept = reconstruct(w, h, keep, c, self.meta["percdamp"])
                out[name] = scatter_units(kept, keep, c, n)
            self._memo[key] = out
        return self._memo[key]


def _hessians(model: nn.Module, adapter: ArchAdapter, ids: torch.Tensor, batch_size: int,
              progress: bool) -> dict[str, torch.Tensor]:
    accs: dict[str, StatAccumulator] = {}
    handles = []
    for i, block in enumerate(adapter.blocks(model)):
        for c in adapter.coupled:
            for name in c.consumers:
                lin = block.get_submodule(name)
                acc = StatAccumulator(lin.in_features, "hessian", lin.weight.device)
                accs[f"{i}.{name}"] = acc
                handles.append(lin.register_forward_pre_hook(acc.hook))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in tqdm(range(0, ids.shape[0], batch_size), desc="level db: hessians",
                              disable=not progress):
                model(input_ids=ids[start:start + batch_size].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out = {k: acc.finish().hessian for k, acc in accs.items()}
    bad = [k for k, h in out.items() if h is None or not bool(torch.isfinite(h).all())]
    if bad:
        raise PruneBenchError(f"darwinlm level database: non-finite Hessian of layer {bad[0]} "
                              f"(NaN/Inf calibration activations entering it)")
    return out


def build(model: nn.Module, adapter: ArchAdapter, ids: torch.Tensor, percdamp: float = 0.01,
          batch_size: int = 8, progress: bool = True) -> LevelDB:
    """ids [n, seq] calibration ids -> the database (removal orders + consumer Hessians)."""
    hessians = _hessians(model, adapter, ids, batch_size, progress)
    units = layer_units(model, adapter)
    orders: dict[str, torch.Tensor] = {}
    jobs = [(i, c) for i in range(len(units)) for c in adapter.coupled]
    for i, c in tqdm(jobs, desc="level db: OBS ladders", disable=not progress):
        n = units[i][c.kind]
        w = adapter.blocks(model)[i].get_submodule(c.consumers[0]).weight  # [out, n * cols]
        order, _ = removal_order(w, hessians[f"{i}.{c.consumers[0]}"], w.shape[1] // n, percdamp)
        orders[f"{i}.{c.kind}"] = order
    meta = {"version": VERSION, "percdamp": percdamp, "calib_sha256": token_ids_sha256(ids),
            "n_tokens": int(ids.numel()), "layer_units": units}
    return LevelDB(orders, hessians, meta)


def is_level_db(path: Path) -> bool:
    """A file this tool wrote as a level database (readable header with our metadata)."""
    meta = safetensors_metadata(path)
    return meta is not None and "meta" in meta


def save(db: LevelDB, path: Path) -> None:
    """Write atomically through bench.outputs (a concurrent builder of the same cache waits)."""
    tensors = {f"order/{k}": v.contiguous() for k, v in db.orders.items()}
    tensors.update({f"hessian/{k}": v.contiguous() for k, v in db.hessians.items()})
    with outputs.claim(path, "level database", "file", is_level_db, create_parent=True,
                       wait=True) as claim:
        save_file(tensors, str(claim.tmp), metadata={"meta": json.dumps(db.meta, sort_keys=True)})


def load(path: Path) -> LevelDB:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    tensors = load_file(str(path))
    orders = {k[len("order/"):]: v for k, v in tensors.items() if k.startswith("order/")}
    hessians = {k[len("hessian/"):]: v for k, v in tensors.items() if k.startswith("hessian/")}
    return LevelDB(orders, hessians, meta)


def load_or_build(path: Path, model: nn.Module, adapter: ArchAdapter, ids: torch.Tensor,
                  percdamp: float, progress: bool = True) -> LevelDB:
    """The cached database when it matches these calibration ids and damping, else a new one."""
    if path.exists() and not is_level_db(path):
        raise PruneBenchError(f"{path} is not a level database this tool wrote; move it away")
    if path.is_file():
        db = load(path)
        if (db.meta.get("version") == VERSION and db.meta.get("percdamp") == percdamp
                and db.meta.get("calib_sha256") == token_ids_sha256(ids)
                and db.meta.get("layer_units") == layer_units(model, adapter)):
            log.info("level db: cached %s", path)
            return db
        log.info("level db: %s is stale (other calibration, damping or model); rebuilding", path)
    db = build(model, adapter, ids, percdamp, progress=progress)
    save(db, path)
    log.info("level db: wrote %s", path)
    return db
