"""The drivers behind the CLI: calibration set, prune-to-checkpoint, evaluate-to-run-JSON.

Owns the order of work for one run: every input is validated (model key, method, pattern,
hyperparameters, capability, N:M divisibility, calibration file) before any long step; the
pruned checkpoint is written to DIR.tmp and renamed, so a killed run leaves nothing half-written.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench import data, models, results, structure, structured_run
from bench.adapters import adapter_for
from bench.config import load_config
from bench.engine import prune_layerwise, validate_layers
from bench.evaluate import check_pattern, measure_sparsity, perplexity
from bench.packages import REPO_ROOT, work_dir
from methods import registry
from methods.base import LayerwiseMethod, ModelMethod, PruneBenchError, parse_pattern

log = logging.getLogger(__name__)
PRUNE_JSON = "prune.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PruneBenchError("config asks for device cuda but no GPU is available")
    return torch.device(name)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _setup(cfg: dict[str, Any], progress: bool = True) -> None:
    if not progress:
        import transformers
        transformers.utils.logging.disable_progress_bar()
    threads = cfg["engine"].get("threads")
    if threads:
        torch.set_num_threads(int(threads))


def calib_path(model_key: str) -> Path:
    return work_dir() / "calib" / f"{model_key}.safetensors"


def tokenizer_digest(tok: Any) -> str:
    """sha256 of a tokenizer's full definition: calibration ids are only valid for this one."""
    import hashlib

    backend = getattr(tok, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _calibration_identity(model_key: str, cfg: dict[str, Any]) -> dict[str, str]:
    """What a calibration file must match: the protocol and the model's current tokenizer."""
    from transformers import AutoTokenizer

    spec = models.get_spec(model_key, models.load_zoo(REPO_ROOT / cfg["zoo"]))
    c = cfg["calibration"]
    return {"model": model_key, "corpus": c["corpus"], "n_samples": str(c["n_samples"]),
            "seqlen": str(c["seqlen"]), "seed": str(c["seed"]),
            "tokenizer_sha256": tokenizer_digest(AutoTokenizer.from_pretrained(models.prepare(spec)))}


def make_calibration(model_key: str, cfg: dict[str, Any], out: Path | None = None) -> Path:
    """Sample the model's calibration ids (seeded) and save them once: work/calib/{model}.safetensors."""
    spec = models.get_spec(model_key, models.load_zoo(REPO_ROOT / cfg["zoo"]))
    out = Path(out) if out else calib_path(model_key)
    c = cfg["calibration"]
    source = models.prepare(spec)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(source)
    corpus = data.load_corpus(c["corpus"])
    ids = data.sample_calibration(tok, corpus, c["n_samples"], c["seqlen"], c["seed"])
    meta = {"model": model_key, "corpus": c["corpus"], "corpus_sha256": corpus.sha256,
            "n_samples": str(c["n_samples"]), "seqlen": str(c["seqlen"]), "seed": str(c["seed"]),
            "sha256": data.token_ids_sha256(ids), "tokenizer_sha256": tokenizer_digest(tok)}
    data.save_calibration(out, ids, meta)
    log.info("calibration %s: %s tokens, sha256 %s", out, ids.numel(), meta["sha256"][:12])
    return out


def load_calibration_for(model_key: str, cfg: dict[str, Any],
                         path: Path | None) -> tuple[torch.Tensor, dict]:
    """The model's calibration ids (sampled once on first use), checked against the config."""
    path = Path(path) if path else calib_path(model_key)
    if not path.exists():
        if path != calib_path(model_key):
            raise PruneBenchError(f"calibration file not found: {path}")
        make_calibration(model_key, cfg, path)
    ids, meta = data.load_calibration(path)
    want = _calibration_identity(model_key, cfg)
    stale = {k: (meta.get(k), v) for k, v in want.items() if k != "model" and meta.get(k) != v}
    if stale and path == calib_path(model_key):
        # a cached file from another protocol or an older tokenizer (a retrained zoo model):
        # its ids would be another vocabulary's, so sample again
        log.warning("calibration %s is stale (%s); sampling again", path, ", ".join(sorted(stale)))
        make_calibration(model_key, cfg, path)
        ids, meta = data.load_calibration(path)
    elif stale:
        raise PruneBenchError(f"calibration file {path} does not match this model/protocol: "
                              f"{', '.join(sorted(stale))} differ")
    c = cfg["calibration"]
    if meta.get("model", model_key) != model_key:
        raise PruneBenchError(f"calibration file {path} was made for model '{meta.get('model')}'")
    if tuple(ids.shape) != (c["n_samples"], c["seqlen"]):
        raise PruneBenchError(f"calibration file {path} has shape {tuple(ids.shape)}, config wants "
                              f"({c['n_samples']}, {c['seqlen']}); delete it to resample")
    return ids, meta


def prune(model_key: str, method_name: str, pattern_slug: str, out: Path,
          config: str | Path | dict | None = None, params: dict[str, Any] | None = None,
          calib: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Prune one model with one method and pattern; write a loadable checkpoint + prune.json."""
    cfg = load_config(config)
    _setup(cfg, progress)
    zoo = models.load_zoo(REPO_ROOT / cfg["zoo"])
    spec = models.get_spec(model_key, zoo)
    pattern = parse_pattern(pattern_slug)
    method = registry.create(method_name, {**cfg["methods"].get(method_name, {}), **(params or {})})
    method.check(pattern, spec.arch)
    out = Path(out)
    engine = cfg["engine"]
    device = _device(engine["device"])
    source = models.prepare(spec)
    model, tok = models.load_model(source, DTYPES[engine["dtype"]])
    adapter = adapter_for(model)
    validate_layers(model, adapter, pattern)
    calib_ids, calib_meta = (None, None)
    if method.capabilities.needs_calibration:
        calib_ids, calib_meta = load_calibration_for(model_key, cfg, calib)
    model.to(device)
    t0 = time.perf_counter()
    engine_report: dict[str, Any] = {}
    if method.kind == "baseline":
        pass                                    # the dense reference: weights untouched
    elif isinstance(method, LayerwiseMethod):
        rep = prune_layerwise(model, adapter, method, pattern, calib_ids, engine["batch_size"],
                              engine["sequential"], progress)
        engine_report = {"seconds_stats": rep.seconds_stats, "seconds_prune": rep.seconds_prune,
                         "seconds_propagate": rep.seconds_propagate, "n_tokens": rep.n_tokens}
    elif isinstance(method, ModelMethod):
        dense_structure = structure.describe(model, adapter)
        method.progress = progress
        mdata = structured_run.model_data(calib_ids, tok, cfg, model_key)
        result = method.prune_model(model, adapter, mdata, pattern)
        model, engine_report = result.model, result.report
    prune_seconds = time.perf_counter() - t0
    info: dict[str, Any] = {
        "model": {"key": spec.key, "arch": spec.arch, "source": spec.source,
                  "trained_here": spec.trained_here, "n_layers": len(adapter.blocks(model)),
                  "provenance": models.model_provenance(Path(source)) if isinstance(source, Path) else {}},
        "method": {"name": method.name, "params": method.params_dict(), "kind": method.kind,
                   "origin": registry.origin(method.name)},
        "pattern": pattern.to_dict(),
        "calibration": None if calib_meta is None else {
            "source": calib_meta.get("corpus"), "corpus_sha256": calib_meta.get("corpus_sha256"),
            "n_samples": int(calib_ids.shape[0]), "seqlen": int(calib_ids.shape[1]),
            "seed": int(calib_meta.get("seed", cfg["calibration"]["seed"])),
            "sha256": data.token_ids_sha256(calib_ids)},
        "cost": {"prune_seconds": prune_seconds, "peak_rss_mb": _peak_rss_mb(),
                 "device": str(device), "engine": engine_report,
                 "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20
                                 if device.type == "cuda" else None)},
        "protocol": {"config": cfg["name"], "engine": engine, "calibration": cfg["calibration"]},
        "environment": results.environment_info(),
        "code": results.git_info(REPO_ROOT),
        "created_at": _now(),
    }
    if isinstance(method, ModelMethod):
        info["structure"] = structured_run.structure_record(dense_structure, model, adapter)
    model.to("cpu")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / PRUNE_JSON).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    log.info("pruned %s/%s/%s in %.1fs -> %s", model_key, method.name, pattern.slug,
             prune_seconds, out)
    return info


def read_prune_json(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / PRUNE_JSON
    if not path.is_file():
        raise PruneBenchError(f"{checkpoint} is not a PruneBench checkpoint (no {PRUNE_JSON})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PruneBenchError(f"corrupt {path}: {exc}") from None


def _merge_zeroshot(path: Path, info: dict[str, Any], run: dict[str, Any]) -> None:
    """Add the zero-shot metrics of `python -m bench zeroshot` (same checkpoint) to the run."""
    record = json.loads(Path(path).read_text())
    mine = {"model": info["model"]["key"], "method": info["method"]["name"],
            "pattern": info["pattern"]["slug"], "created_at": info["created_at"]}
    if record.get("run") != mine:
        raise PruneBenchError(f"{path} holds zero-shot results of another run ({record.get('run')})")
    run["metrics"].update(record["metrics"])
    run["metrics_meta"]["zeroshot"] = record["meta"]


def evaluate(checkpoint: Path, out: Path | None = None, config: str | Path | dict | None = None,
             progress: bool = True, zeroshot: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Measure sparsity on the saved weights and perplexity (plus the zero-shot results of
    `zeroshot`, when given); write the run JSON atomically."""
    cfg = load_config(config)
    _setup(cfg, progress)
    info = read_prune_json(checkpoint)
    pattern = parse_pattern(info["pattern"]["slug"])
    ppl_cfg = cfg["evaluation"]["ppl"]
    corpus = data.load_corpus(ppl_cfg["corpus"])
    model, tok = models.load_model(Path(checkpoint), DTYPES[cfg["engine"]["dtype"]])
    adapter = adapter_for(model)
    sp = measure_sparsity(model, adapter)
    extra: dict[str, Any] = {}
    if pattern.kind == "structured":
        if "structure" not in info:
            raise PruneBenchError(f"{checkpoint}: a structured run without a structure record")
        structured = structured_run.structured_sparsity(model, adapter, info["structure"], pattern)
        extra["structure"] = structured.pop("structure")
        sp.update(structured)
    else:
        check_pattern(model, adapter, pattern, sp["per_layer"])
    device = _device(cfg["engine"]["device"])
    model.to(device)
    ids = data.eval_token_ids(tok, corpus, ppl_cfg["max_tokens"])
    t0 = time.perf_counter()
    ppl = perplexity(model, ids, ppl_cfg["seqlen"], ppl_cfg["batch_size"], progress)
    eval_seconds = time.perf_counter() - t0
    if info["method"]["kind"] == "model":
        extra["method_report"] = info["cost"]["engine"]
    if pattern.kind == "structured":
        speed = structured_run.latency(model, info["model"]["key"], cfg, DTYPES[cfg["engine"]["dtype"]],
                                       progress)
        if speed is not None:
            extra["speed"] = speed
    key = f"ppl/{ppl_cfg['corpus']}"
    run = {
        "schema_version": results.SCHEMA_VERSION,
        "model": {k: info["model"][k] for k in ("key", "arch", "source", "trained_here", "n_layers")},
        "method": info["method"],
        "pattern": info["pattern"],
        "sparsity": {"achieved": sp["achieved"], "per_layer": sp["per_layer"],
                     "prunable_params": sp["prunable_params"]},
        "params": {"total": sp["total_params"], "nonzero": sp["nonzero_params"]},
        "metrics": {key: ppl["ppl"]},
        "metrics_meta": {key: {"seqlen": ppl["seqlen"], "n_tokens": ppl["n_tokens"],
                               "n_windows": ppl["n_windows"], "bos": False, "nll": ppl["nll"],
                               "corpus_sha256": corpus.sha256,
                               "token_ids_sha256": data.token_ids_sha256(ids)}},
        "cost": {**{k: info["cost"][k] for k in ("prune_seconds", "peak_rss_mb", "device")},
                 "eval_seconds": eval_seconds},
        "calibration": info["calibration"],
        "environment": info["environment"],
        "code": info["code"],
        "created_at": info["created_at"],
        **extra,
    }
    if zeroshot is not None:
        _merge_zeroshot(Path(zeroshot), info, run)
    if out is None:
        out = results.run_path(Path(cfg["results_dir"]), info["model"]["key"], info["method"]["name"],
                               pattern.slug)
    results.write_run(Path(out), run)
    log.info("%s: %s = %.3f, sparsity %.4f -> %s", checkpoint, key, ppl["ppl"], sp["achieved"], out)
    return Path(out), run
