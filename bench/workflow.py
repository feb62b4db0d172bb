"""Helpers the Snakefile calls at parse time: the effective config file, rule inputs, resources.

Owns: writing the validated config where every job reads it (work/configs/{name}.json, only
rewritten when its content changes, so unchanged protocols cause no reruns), and the input list
of a prune job (the calibration file only for methods that need calibration), and the weights
of models trained here (regenerated from their zoo recipe when missing), the grid config file
as a clone names it (`grid_configfile`); `job_resources`: what a
job asks a cluster for (GPU, memory, runtime), scaled by the model's size from the zoo.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from transformers import AutoTokenizer

from bench import data, outputs
from bench.packages import REPO_ROOT
from bench.zoo import get_spec, load_zoo
from methods import allocation, dsnot, registry


def pin_work_dirs(work: str, wheels: str) -> str:
    """Point the jobs' `python -m bench` commands at the workflow's own caches: PRUNEBENCH_WORK
    becomes `work` (a different value set by the user applies to direct calls only, and is
    reported), PRUNEBENCH_WHEELS defaults to the checkout's shared wheel store. Returns `work`."""
    old = os.environ.get("PRUNEBENCH_WORK", work)
    if old != work:
        sys.stderr.write(f"PruneBench: the workflow keeps its caches in {work}; PRUNEBENCH_WORK="
                         f"{old} applies to direct `python -m bench` calls only (use --directory "
                         "to move the workflow)\n")
    os.environ["PRUNEBENCH_WORK"] = work
    os.environ.setdefault("PRUNEBENCH_WHEELS", wheels)
    return work


def site_sources(results: str, basedir: str) -> list[str]:
    """The files the site rule reads besides runs, seeds, speed records and method cards: the
    CUDA check records present, every template and static asset, and docs/protocol.md (a change
    to any of them rebuilds the site)."""
    base = Path(basedir)
    files = sorted(str(p) for p in Path(results).glob("cuda/*.json"))
    files += sorted(str(p) for p in (base / "site").glob("templates/*") if p.is_file())
    files += sorted(str(p) for p in (base / "site").glob("static/*") if p.is_file())
    return files + [str(base / "docs" / "protocol.md")]


def grid_configfile(configfiles: Sequence[str], basedir: str) -> str:
    """The last config file Snakemake read, relative to the checkout when it lies inside it
    (config/config.yaml where none was read: the Snakefile's default)."""
    if not configfiles:
        return "config/config.yaml"
    path = os.path.abspath(configfiles[-1])
    rel = os.path.relpath(path, basedir)
    return path if rel.startswith("..") else Path(rel).as_posix()


def write_effective_config(cfg: dict[str, Any], work: str = "work") -> str:
    path = Path(work) / "configs" / f"{cfg['name']}.json"
    blob = json.dumps(cfg, sort_keys=True, indent=1) + "\n"
    if not path.exists() or path.read_text() != blob:
        outputs.replace_text(path, blob)       # atomic: cluster jobs parse at once
    return str(path)


def prune_inputs(model: str, method: str, result: str | None = None,
                 zoo: str | None = None) -> list[str]:
    """The caches a prune job waits for (prepared model, calibration ids, a method's own caches),
    or none when the run's `result` JSON already exists. The caches only order new work: the
    prune command builds any that is missing itself (atomically), and a finished run's
    provenance (calibration hash, protocol) is in its JSON. Without this, a fresh clone adding
    one method would rebuild a cache, and Snakemake would redo every committed run that
    depends on it. Protocol changes still rerun runs, through the rules' params, and a committed
    run made under another BOS rule is made again (`refresh_inputs`, with `zoo`)."""
    refresh = refresh_inputs(result, model, zoo) if result is not None and zoo else []
    if result is not None and Path(result).exists() and not refresh:
        return []
    inputs = [f"work/prepared/{model}.json", *refresh]
    cls = registry.get(method)
    if cls.capabilities.needs_calibration:
        inputs.append(f"work/calib/{model}.safetensors")
    inputs += [p.format(model=model) for p in getattr(cls, "cache_inputs", ())]
    return inputs


def seed_inputs(result: str, model: str, seed: str, zoo: str) -> list[str]:
    """A calibration-seed run's draw of ids (and a refresh marker), only for a run not yet in
    results/ or made under another BOS rule (as `prune_inputs` for the grid's runs)."""
    refresh = refresh_inputs(result, model, zoo)
    if Path(result).exists() and not refresh:
        return []
    return [f"work/calib-seeds/{model}/seed-{seed}.safetensors", *refresh]


@functools.lru_cache(maxsize=None)
def model_bos(model: str, zoo: str) -> bool | None:
    """Whether the BOS rule (bench.data.bos_id) gives `model` a BOS; None when its tokenizer is
    not on this machine (a hub model, or a packaged one not yet prepared)."""
    spec = get_spec(model, load_zoo(REPO_ROOT / zoo))
    src = spec.source
    where = {"random": src.get("tokenizer"), "local": src.get("path")}.get(src["kind"])
    path = REPO_ROOT / where if where else REPO_ROOT / "work" / "models" / model
    if not (path / "tokenizer_config.json").is_file():
        return None
    return data.bos_id(AutoTokenizer.from_pretrained(str(path))) is not None


def recorded_bos(result: Path) -> bool | None:
    """The BOS the run JSON at `result` records for its perplexity windows (None: not said)."""
    try:
        meta = json.loads(result.read_text()).get("metrics_meta", {})
    except (OSError, ValueError):
        return None
    found = [v.get("bos") for k, v in meta.items() if k.startswith("ppl/") and isinstance(v, dict)]
    return found[0] if found and isinstance(found[0], bool) else None


def refresh_inputs(result: str, model: str, zoo: str) -> list[str]:
    """A marker (rule `refresh`) that makes a committed run be made again when it was made under
    another BOS rule than its model's tokenizer gives today; [] when it is current or absent."""
    path = Path(result)
    if not path.is_file():
        return []
    recorded = recorded_bos(path)
    want = model_bos(model, zoo) if recorded is not None else None
    if want is None or recorded == want:
        return []
    return [f"work/refresh/{result}.bos"]


def write_refresh_marker(out: str) -> None:
    """The marker `refresh_inputs` names: why the run is made again."""
    outputs.replace_text(Path(out), "made again: its windows were read under another BOS rule "
                                    "than its model's tokenizer gives (docs/protocol.md)\n")


def method_source(method: str) -> list[str]:
    """The method's source file when it is one of ours (methods/x.py), else nothing: a method
    card is rebuilt when that file changes, and a plugin's only when the card is missing."""
    origin = registry.origin(method)
    path = REPO_ROOT / origin                      # absolute: jobs may run in another directory
    files = [str(path)] if origin.startswith("methods/") and path.is_file() else []
    # a variant's card also says what its added step does (methods/allocation.py, dsnot.py)
    steps = {**{s: "allocation" for s in allocation.SUFFIX.values()}, dsnot.SUFFIX: "dsnot"}
    files += [str(REPO_ROOT / "methods" / f"{module}.py") for suffix, module in steps.items()
              if suffix + "_" in method + "_"]
    return files


def job_threads(method: str, pattern: str, default: int, cores: int) -> int:
    """Model-level methods (gradients, search, training) and structured evaluations (latency is
    timed, so nothing may run beside it) take every core; other jobs take `default`."""
    if registry.get(method).kind == "model" or pattern.startswith("structured-"):
        return cores
    return default


def prepare_inputs(model: str, zoo_path: str) -> list[str]:
    """A model trained here depends on its weights, which the `train_tiny` rule regenerates."""
    spec = get_spec(model, load_zoo(REPO_ROOT / zoo_path))
    if spec.trained_here and spec.recipe and spec.source.get("kind") == "local":
        return [str(REPO_ROOT / spec.source["path"] / "model.safetensors")]
    return []


def train_recipe(model_dir: str, zoo_path: str) -> str:
    """The recipe of the zoo model whose local path is `model_dir` (for the train_tiny rule)."""
    for spec in load_zoo(REPO_ROOT / zoo_path).values():
        if spec.recipe and REPO_ROOT / spec.source.get("path", "") == REPO_ROOT / model_dir:
            return spec.recipe
    raise ValueError(f"no zoo model with a training recipe lives in {model_dir}")


GPU_RULES = frozenset({"prune", "evaluate", "zeroshot", "level_db", "speed"})
# minutes: base + per billion parameters (the papers' protocol on one A100/H100-class GPU,
# rounded up generously; a profile's set-resources overrides any of them)
RUNTIME = {"prepare": (20, 5), "calib": (10, 1), "prune": (30, 20), "level_db": (30, 60),
           "evaluate": (20, 10), "zeroshot": (30, 30), "speed": (120, 0), "train_tiny": (120, 0)}


def model_size_b(model: str, zoo_path: str) -> float:
    """The zoo's params_b of a model (0.1 when unknown or not a zoo model, e.g. a paper config)."""
    spec = load_zoo(REPO_ROOT / zoo_path).get(model)
    return spec.params_b if spec is not None and spec.params_b else 0.1


def job_resources(rule: str, model: str | None, cfg: dict[str, Any],
                  method: str | None = None) -> dict[str, int]:
    """{gpu, mem_mb, runtime (minutes)} of one job. GPUs only where the config runs on CUDA
    (engine.device: cuda), so a CPU grid never waits for a GPU; host memory holds the fp32
    weights a few times over (model-level methods keep gradients or a second model)."""
    size = model_size_b(model, cfg["zoo"]) if model else 0.1
    heavy = method is not None and registry.get(method).kind == "model"
    gpu = int(rule in GPU_RULES and cfg["engine"]["device"] == "cuda")
    mem_mb = int(4096 + (12288 if heavy else 6144) * size)
    base, per_b = RUNTIME.get(rule, (30, 10))
    runtime = int(base + per_b * size * (4 if heavy and rule == "prune" else 1))
    return {"gpu": gpu, "mem_mb": mem_mb, "runtime": runtime}
