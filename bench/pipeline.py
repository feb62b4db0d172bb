"""The drivers behind the CLI: prune-to-checkpoint, evaluate-to-run-JSON.

Owns the order of work for one run: every input is validated (model key, method, pattern,
hyperparameters, capability, sequence lengths and N:M widths from the model's config, the
calibration file, a checkpoint against its prune.json, the output location) before any long
step. Outputs go through `bench.outputs`: a folder or file this tool did not write is never
replaced, concurrent writers of one target are refused, and a killed run leaves nothing
half-written (a unique temporary, then an atomic rename).
"""
from __future__ import annotations

import json
import logging
import re
import resource
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench.evaluation import checkpoint as checkpoint_mod
from bench import data, outputs, results, structure, structured_run
from bench.data import calibration
from bench.evaluation import examples
from bench.zoo import fits, models
from bench.evaluation import zeroshot as zeroshot_mod
from bench.adapters import adapter_for
from bench.data.calibration import load_calibration_for
from bench.evaluation.checkpoint import PRUNE_JSON
from bench.config import load_config
from bench.allocation import owl_allocation
from bench.engine import prune_layerwise, validate_layers
from bench.evaluation.evaluate import check_finite_weights, check_pattern, measure_sparsity, perplexity
from bench.packages import REPO_ROOT
from bench.zoo import model_provenance, spec_for
from methods import registry
from methods.base import LayerwiseMethod, MethodError, ModelMethod, PruneBenchError, parse_pattern

log = logging.getLogger(__name__)
# what a non-uniform allocation (bench/allocation.py) adds to the run JSON's method_report
ALLOCATION_KEYS = ("allocation", "owl_m", "owl_lambda", "outlier_ratio", "block_params",
                   "block_sparsity", "seconds_allocation")


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


def check_params(params: Any) -> None:
    """Hyperparameter overrides must be a mapping (the CLI's `--params` is parsed before)."""
    if params is not None and not isinstance(params, dict):
        raise PruneBenchError(f"--params must be a JSON object such as '{{\"blocksize\": 64}}', "
                              f"got a JSON {type(params).__name__}")


def _run_method(method: Any, model: Any, adapter: Any, pattern: Any, calib_ids: Any,
                cfg: dict[str, Any], tok: Any, model_key: str, progress: bool
                ) -> tuple[Any, dict[str, Any]]:
    engine = cfg["engine"]
    if method.kind == "baseline":
        return model, {}                            # the dense reference: weights untouched
    if isinstance(method, LayerwiseMethod):
        alloc = (owl_allocation(model, adapter, method, pattern, calib_ids, engine["batch_size"],
                                progress) if method.allocation == "owl" else {})
        rep = prune_layerwise(model, adapter, method, pattern, calib_ids, engine["batch_size"],
                              method.sequential, progress,
                              block_sparsity=alloc.get("block_sparsity"))
        return model, {"seconds_stats": rep.seconds_stats, "seconds_prune": rep.seconds_prune,
                       "seconds_propagate": rep.seconds_propagate, "n_tokens": rep.n_tokens,
                       **alloc, **({"in_perms": rep.in_perms} if rep.in_perms else {})}
    method.progress = progress
    mdata = structured_run.model_data(calib_ids, tok, cfg, model_key)
    try:
        result = method.prune_model(model, adapter, mdata, pattern)
    except Exception as exc:  # noqa: BLE001 - a method's (or plugin's) error, named
        raise MethodError(f"{registry.label(method.name)} failed: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc
    check_finite_weights(result.model, f"{registry.label(method.name)} produced a model that")
    return result.model, result.report


def prune(model_key: str, method_name: str, pattern_slug: str, out: Path,
          config: str | Path | dict | None = None, params: dict[str, Any] | None = None,
          calib: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Prune one model with one method and pattern; write a loadable checkpoint + prune.json.

    Every input is checked before the long work: names, pattern, hyperparameters, capability,
    sequence lengths and N:M widths (from the model's config), `--calib`, and `out` (claimed:
    refused when it is not a checkpoint this tool wrote, locked against concurrent writers)."""
    cfg = load_config(config)
    _setup(cfg, progress)
    spec = spec_for(cfg, model_key)
    pattern = parse_pattern(pattern_slug)
    check_params(params)
    method = registry.create(method_name, {**cfg["methods"].get(method_name, {}), **(params or {})})
    method.check(pattern, spec.arch)
    calibration.check_explicit(calib)
    zoo_cfg = fits.zoo_config(spec)
    fits.check_lengths(cfg, model_key, zoo_cfg, [method])
    why = fits.nm_problem(pattern, fits.prunable_widths(zoo_cfg)) if zoo_cfg is not None else None
    if why is not None:
        raise PruneBenchError(f"model '{model_key}': {why}")
    engine = cfg["engine"]
    device = models.device(engine["device"])
    with outputs.claim(Path(out), "--out", "dir", checkpoint_mod.is_checkpoint) as claim:
        source = models.prepare(spec)
        model, tok = models.load_model(source, models.DTYPES[engine["dtype"]])   # tokenizer: once
        calib_ids, calib_meta = (None, None)
        if method.capabilities.needs_calibration:
            calib_ids, calib_meta = load_calibration_for(model_key, cfg, calib, tok)
        check_finite_weights(model, f"the input model '{model_key}'")
        adapter = adapter_for(model)
        validate_layers(model, adapter, pattern)
        if zoo_cfg is None:                     # a hub model not in the local cache
            fits.check_lengths(cfg, model_key, model.config, [method])
        vocab = model.get_input_embeddings().num_embeddings
        if calib_ids is not None and int(calib_ids.max()) >= vocab:
            raise PruneBenchError(f"calibration ids reach {int(calib_ids.max())}, beyond the "
                                  f"{vocab} embeddings of model '{model_key}'")
        dense_structure = structure.describe(model, adapter) if isinstance(method, ModelMethod) else None
        model.to(device)
        t0 = time.perf_counter()
        model, engine_report = _run_method(method, model, adapter, pattern, calib_ids, cfg, tok,
                                           model_key, progress)
        prune_seconds = time.perf_counter() - t0
        in_perms = engine_report.pop("in_perms", None)      # N:M under an input permutation
        if in_perms:
            engine_report["in_perm_file"] = checkpoint_mod.write_in_perms(claim.tmp, in_perms)
            engine_report["permuted_layers"] = len(in_perms)
        info = _prune_info(spec, model, adapter, method, pattern, calib_ids, calib_meta, cfg,
                           source, device, prune_seconds, engine_report)
        if dense_structure is not None:
            info["structure"] = structured_run.structure_record(dense_structure, model, adapter)
        model.to("cpu")
        model.save_pretrained(claim.tmp)
        tok.save_pretrained(claim.tmp)
        record = checkpoint_mod.seal_record(claim.tmp, info, model.config)
        (claim.tmp / PRUNE_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("pruned %s/%s/%s in %.1fs -> %s", model_key, method.name, pattern.slug,
             prune_seconds, out)
    return record


def _prune_info(spec: Any, model: Any, adapter: Any, method: Any, pattern: Any,
                calib_ids: torch.Tensor | None, calib_meta: dict | None, cfg: dict[str, Any],
                source: Any, device: torch.device, prune_seconds: float,
                engine_report: dict[str, Any]) -> dict[str, Any]:
    """What prune.json records of a run (before the checkpoint's files and seal are added)."""
    return {
        "model": {"key": spec.key, "arch": spec.arch, "source": spec.source,
                  "trained_here": spec.trained_here, "n_layers": len(adapter.blocks(model)),
                  "provenance": model_provenance(Path(source)) if isinstance(source, Path) else {}},
        "method": {"name": method.name, "params": method.params_dict(), "kind": method.kind,
                   "origin": registry.origin(method.name),
                   **({"sequential": method.sequential} if isinstance(method, LayerwiseMethod)
                      else {})},
        "pattern": pattern.to_dict(),
        "calibration": None if calib_meta is None or calib_ids is None else {
            "source": calib_meta.get("corpus"), "corpus_sha256": calib_meta.get("corpus_sha256"),
            "n_samples": int(calib_ids.shape[0]), "seqlen": int(calib_ids.shape[1]),
            "seed": int(calib_meta.get("seed", cfg["calibration"]["seed"])),
            "sha256": data.token_ids_sha256(calib_ids)},
        "cost": {"prune_seconds": prune_seconds, "peak_rss_mb": _peak_rss_mb(),
                 "device": str(device), "engine": engine_report,
                 "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20
                                 if device.type == "cuda" else None)},
        "protocol": {"config": cfg["name"], "engine": cfg["engine"], "calibration": cfg["calibration"]},
        "environment": results.environment_info(),
        "code": results.git_info(REPO_ROOT),
        "created_at": _now(),
    }


def evaluate(checkpoint: Path, out: Path | None = None, config: str | Path | dict | None = None,
             progress: bool = True, zeroshot: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Measure sparsity on the saved weights and perplexity (plus the zero-shot results of
    `zeroshot`, when given); write the run JSON atomically.

    Before any model is loaded: the checkpoint against its seal and file hashes, its config
    against prune.json and the zoo model it names, the `--zeroshot` file against the checkpoint,
    and `out` (claimed: refused when it is not a run file this tool wrote)."""
    if out is not None and not re.match(results.EXAMPLES_NAME, examples.path_for(Path(out)).name):
        raise PruneBenchError(f"--out {out}: a run file's name may hold only letters, digits, "
                              f"'_', '.' and '-' (its per-example file is named after it)")
    cfg = load_config(config)
    _setup(cfg, progress)
    checkpoint = Path(checkpoint)
    info = checkpoint_mod.read(checkpoint)
    checkpoint_mod.verify_against_zoo(info, checkpoint, cfg)
    pattern = parse_pattern(info["pattern"]["slug"])
    zs = None
    if zeroshot is not None:
        zs = zeroshot_mod.read_record(Path(zeroshot), info, cfg["evaluation"].get("zeroshot"))
    default = out is None
    if out is None:
        out = results.run_path(Path(cfg["results_dir"]), info["model"]["key"], info["method"]["name"],
                               pattern.slug)
    ex_path = examples.path_for(Path(out))
    with outputs.claim(Path(out), "run file" if default else "--out", "file", results.is_run_file,
                       create_parent=default) as claim, \
            outputs.claim(ex_path, "examples file", "file", examples.is_examples_file) as ex_claim:
        run, window = _measure(checkpoint, info, pattern, cfg, progress)
        if zs is not None:
            run["metrics"].update(zs["metrics"])
            run["metrics_meta"]["zeroshot"] = {k: v for k, v in zs["meta"].items()
                                               if k != "examples"}
        run["examples"] = ex_path.name
        ex_claim.tmp.write_bytes(examples.dumps(_examples_record(info, run, window, zs)))
        claim.tmp.write_text(results.dump_run(run, str(out)), encoding="utf-8")
    log.info("%s: %s, sparsity %.4f -> %s", checkpoint, run["metrics"], run["sparsity"]["achieved"], out)
    return Path(out), run


def _measure(checkpoint: Path, info: dict[str, Any], pattern: Any, cfg: dict[str, Any],
             progress: bool) -> dict[str, Any]:
    """The run record of a verified checkpoint: sparsity on its weights, perplexity, latency."""
    ppl_cfg = cfg["evaluation"]["ppl"]
    corpus = data.load_corpus(ppl_cfg["corpus"])
    dtype = models.DTYPES[cfg["engine"]["dtype"]]
    model, tok = models.load_model(checkpoint, dtype)
    check_finite_weights(model, f"checkpoint {checkpoint}")
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
        engine_rep = info["cost"].get("engine") or {}
        check_pattern(model, adapter, pattern, sp["per_layer"],
                      block_sparsity=engine_rep.get("block_sparsity"),
                      in_perms=checkpoint_mod.read_in_perms(checkpoint, info))
        if "allocation" in engine_rep:                 # OWL: the block sparsities and why
            extra["method_report"] = {k: engine_rep[k] for k in ALLOCATION_KEYS if k in engine_rep}
        if "in_perm_file" in engine_rep:               # RIA's channel permutation (ria_cp)
            extra["method_report"] = {"channel_permutation": "per layer, saved with the checkpoint",
                                      "permuted_layers": engine_rep["permuted_layers"]}
    device = models.device(cfg["engine"]["device"])
    model.to(device)
    reference = model if info["method"]["kind"] == "baseline" else _dense(info, cfg, dtype, device)
    ids = data.eval_token_ids(tok, corpus, ppl_cfg["max_tokens"])
    t0 = time.perf_counter()
    bos = data.bos_id(tok)
    ppl = perplexity(model, ids, ppl_cfg["seqlen"], ppl_cfg["batch_size"], progress, reference,
                     bos=bos)
    eval_seconds = time.perf_counter() - t0
    del reference
    if info["method"]["kind"] == "model":
        extra["method_report"] = info["cost"]["engine"]
    if pattern.kind == "structured":
        speed = structured_run.latency(model, info["model"]["key"], cfg, dtype, progress)
        if speed is not None:
            extra["speed"] = speed
    key = f"ppl/{ppl_cfg['corpus']}"
    kl_key = f"kl/{ppl_cfg['corpus']}"
    window = {"corpus": ppl_cfg["corpus"], "token_ids_sha256": data.token_ids_sha256(ids),
              "seqlen": ppl["seqlen"], "window_ids": list(range(ppl["n_windows"])),
              "nll": ppl["window_nll"], "kl": ppl["window_kl"]}
    return {
        "schema_version": results.SCHEMA_VERSION,
        "model": {k: info["model"][k] for k in ("key", "arch", "source", "trained_here", "n_layers")},
        "method": info["method"],
        "pattern": info["pattern"],
        "sparsity": {"achieved": sp["achieved"], "per_layer": sp["per_layer"],
                     "prunable_params": sp["prunable_params"]},
        "params": {"total": sp["total_params"], "nonzero": sp["nonzero_params"]},
        "metrics": {key: ppl["ppl"], kl_key: ppl["kl"]},
        "metrics_meta": {key: {"seqlen": ppl["seqlen"], "n_tokens": ppl["n_tokens"],
                               "n_windows": ppl["n_windows"], "bos": bos is not None, "nll": ppl["nll"],
                               "corpus_sha256": corpus.sha256,
                               "token_ids_sha256": window["token_ids_sha256"]},
                         kl_key: {"reference": "dense", "direction": "KL(dense || run)",
                                  "dtype": "float32", "vocabulary": "full",
                                  "windows": "those of " + key}},
        "cost": {**{k: info["cost"][k] for k in ("prune_seconds", "peak_rss_mb", "device")},
                 "eval_seconds": eval_seconds},
        "calibration": info["calibration"],
        "environment": info["environment"],
        "code": info["code"],
        "created_at": info["created_at"],
        **extra,
    }, window


def _dense(info: dict[str, Any], cfg: dict[str, Any], dtype: torch.dtype,
           device: torch.device) -> Any:
    """The dense model a run was pruned from (the KL reference), from the prepared cache."""
    spec = spec_for(cfg, info["model"]["key"])
    dense, _ = models.load_model(models.prepare(spec), dtype)
    return dense.to(device)


def _examples_record(info: dict[str, Any], run: dict[str, Any], window: dict[str, Any],
                     zs: dict[str, Any] | None) -> dict[str, Any]:
    """The per-example record of a run (bench/evaluation/examples.py)."""
    return {"schema": examples.SCHEMA,
            "run": {"model": info["model"]["key"], "method": info["method"]["name"],
                    "pattern": info["pattern"]["slug"], "created_at": info["created_at"]},
            "ppl": window,
            "zeroshot": None if zs is None else zs["meta"]["examples"]}
