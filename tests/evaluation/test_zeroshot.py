"""Zero-shot evaluation: offline task data, fixed subsets, lm-eval on an in-memory model, and
equality with the `lm_eval` command line on the same saved checkpoint."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import transformers

from bench.data import zeroshot_data
from bench.evaluation import zeroshot
from bench.packages import REPO_ROOT
from tests.conftest import tiny_model

# lm-eval's evaluation split sizes (test for ARC and OpenBookQA, validation for the rest)
SIZES = {"arc_easy": 2376, "arc_challenge": 1172, "boolq": 3270, "hellaswag": 10042,
         "openbookqa": 500, "piqa": 1838, "winogrande": 1267, "rte": 277}


def test_subset_is_fixed_sorted_and_per_task() -> None:
    a = zeroshot.subset(1000, 50, 0, "pb_piqa")
    assert a == sorted(a) and len(set(a)) == 50 and a == zeroshot.subset(1000, 50, 0, "pb_piqa")
    assert a != zeroshot.subset(1000, 50, 0, "pb_rte") and a != zeroshot.subset(1000, 50, 1, "pb_piqa")
    assert zeroshot.subset(20, 50, 0, "x") == list(range(20))


def test_average_and_its_stderr_are_the_closed_forms() -> None:
    # two tasks: the mean, and sqrt(0.05^2 + 0.03^2) / 2 for the stderr of the mean
    m = {"zeroshot/a/acc": 0.5, "zeroshot/a/acc_stderr": 0.05, "zeroshot/a/acc_norm": 0.6,
         "zeroshot/a/acc_norm_stderr": 0.04, "zeroshot/b/acc": 0.3, "zeroshot/b/acc_stderr": 0.03,
         "zeroshot/b/acc_norm": None, "zeroshot/b/acc_norm_stderr": None}
    avg = zeroshot.average_metrics(m, ["a", "b"])
    assert avg["zeroshot/average/acc"] == pytest.approx(0.4)
    assert avg["zeroshot/average/acc_stderr"] == pytest.approx(math.sqrt(0.05**2 + 0.03**2) / 2)
    # a task without the value: no average and no stderr (never a mean over fewer tasks)
    assert avg["zeroshot/average/acc_norm"] is None and avg["zeroshot/average/acc_norm_stderr"] is None
    # 8 tasks at 100 documents each (stderr ~0.049): the mean's stderr is ~1.7 points
    eight = {f"zeroshot/t{i}/{k}": v for i in range(8)
             for k, v in (("acc", 0.4), ("acc_stderr", 0.049), ("acc_norm", 0.4), ("acc_norm_stderr", 0.049))}
    assert zeroshot.average_metrics(eight, [f"t{i}" for i in range(8)])[
        "zeroshot/average/acc_stderr"] == pytest.approx(0.049 / math.sqrt(8))


def test_offline_tasks_match_lm_eval_splits_and_prompts() -> None:
    manifest = json.loads(zeroshot_data.prepare().read_text())
    assert {t: e["rows"] for t, e in manifest["tasks"].items()} == SIZES
    tm, _, _ = zeroshot.plan({"tasks": list(SIZES), "limit": 2})
    tasks = tm.load([f"pb_{t}" for t in SIZES])["tasks"]
    assert {t: len(tasks[f"pb_{t}"].eval_docs) for t in SIZES} == SIZES
    arc = tasks["pb_arc_easy"]
    doc = arc.eval_docs[0]
    assert arc.doc_to_text(doc).startswith("Question: ") and arc.doc_to_text(doc).endswith("\nAnswer:")
    boolq = tasks["pb_boolq"]
    first = boolq.eval_docs[0]                  # super_glue's "Title -- passage" layout
    assert " -- " in first["passage"] and boolq.doc_to_choice(first) == ["no", "yes"]
    hs = tasks["pb_hellaswag"]
    assert hs.doc_to_text(hs.eval_docs[0]) == "Roof shingle removal: A man is sitting on a roof. He"


def test_in_memory_evaluation_gives_metrics_and_provenance() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(REPO_ROOT / "zoo" / "opt-tiny")
    model = tiny_model("llama")
    model.resize_token_embeddings(len(tok))
    metrics, meta = zeroshot.evaluate(model, tok, {"tasks": ["arc_easy", "winogrande"], "limit": 4})
    for task in ("arc_easy", "winogrande"):
        for m in zeroshot.task_metrics(task):
            assert 0.0 <= metrics[f"zeroshot/{task}/{m}"] <= 1.0
            assert metrics[f"zeroshot/{task}/{m}_stderr"] is not None
        assert meta["tasks"][task]["n"] == 4 and len(meta["tasks"][task]["doc_indices"]) == 4
        # the per-document records reproduce lm-eval's own accuracy, document by document
        rec = meta["examples"]["tasks"][task]
        assert rec["doc_ids"] == meta["tasks"][task]["doc_indices"]
        assert sum(rec["acc"]) / 4 == pytest.approx(metrics[f"zeroshot/{task}/acc"])
        for ll, gold, acc in zip(rec["loglik"], rec["target"], rec["acc"]):
            assert acc == int(max(range(len(ll)), key=ll.__getitem__) == gold)
    # lm-eval's WinoGrande has no acc_norm; the acc_norm average is over the tasks that have it
    assert "zeroshot/winogrande/acc_norm" not in metrics
    assert metrics["zeroshot/average/acc_norm"] == pytest.approx(metrics["zeroshot/arc_easy/acc_norm"])
    assert metrics["zeroshot/average/acc"] == pytest.approx(
        (metrics["zeroshot/arc_easy/acc"] + metrics["zeroshot/winogrande/acc"]) / 2)
    assert metrics["zeroshot/average/acc_stderr"] == pytest.approx(
        math.hypot(metrics["zeroshot/arc_easy/acc_stderr"],
                   metrics["zeroshot/winogrande/acc_stderr"]) / 2)
    assert meta["lm_eval"] and meta["tasks"]["arc_easy"]["version"] == 1.0


@pytest.mark.slow
def test_equals_the_lm_eval_command_line(tmp_path) -> None:
    """Same saved checkpoint, same task YAML, same documents: the lm_eval CLI's numbers."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(REPO_ROOT / "zoo" / "opt-tiny")
    torch.manual_seed(0)
    model = tiny_model("llama")
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    cfg = {"tasks": ["arc_easy", "piqa"], "limit": 6, "batch_size": 1}
    ours, _ = zeroshot.evaluate(model, tok, cfg)
    _, ids, _ = zeroshot.plan(cfg)
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
         f"pretrained={tmp_path / 'ckpt'}", "dtype=float32", "--tasks", *ids,
         "--include_path", str(zeroshot.TASK_DIR), "--samples", json.dumps(ids),
         "--batch_size", "1", "--output_path", str(out)],
        capture_output=True, text=True, timeout=900, cwd=REPO_ROOT,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    for task in cfg["tasks"]:
        for m in ("acc", "acc_norm"):
            assert found[f"pb_{task}"][f"{m},none"] == pytest.approx(ours[f"zeroshot/{task}/{m}"])


def test_only_attention_models_share_contexts() -> None:
    from bench.evaluation.zeroshot_lm import shares_contexts

    assert shares_contexts(tiny_model("llama")) and shares_contexts(tiny_model("opt"))
    assert not shares_contexts(tiny_model("mamba"))           # recurrent: HFLM's own path
    assert not shares_contexts(torch.nn.Linear(2, 2))        # unknown: HFLM's own path


def test_shared_contexts_give_lm_evals_loglikelihoods(arch: str) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from bench.evaluation.zeroshot_lm import PrefixSharingLM

    tok = AutoTokenizer.from_pretrained(REPO_ROOT / "zoo" / "opt-tiny")
    model = tiny_model(arch)
    model.resize_token_embeddings(len(tok))
    docs = {"Question: what is the capital of France?\nAnswer:": [" Paris", " London is big",
                                                                    " a much longer answer here"],
            "The cat sat on the": [" mat", " dog"], "A man is on a roof. He": [" rips shingles off"]}
    reqs = [Instance("loglikelihood", {}, (c, k), 0) for c, ks in docs.items() for k in ks]
    ref = HFLM(pretrained=model, tokenizer=tok, batch_size=4).loglikelihood(reqs, disable_tqdm=True)
    got = PrefixSharingLM(pretrained=model, tokenizer=tok, batch_size=4).loglikelihood(
        reqs, disable_tqdm=True)
    for (a, ga), (b, gb) in zip(ref, got):
        assert b == pytest.approx(a, abs=1e-4) and ga == gb


def test_the_batch_is_capped_by_the_vocabulary() -> None:
    """SmolLM2's 49,152-token vocabulary keeps the configured 16; a 262,144-token one (Gemma-3)
    gets 3; a tiny vocabulary never exceeds the configured batch."""
    from bench.evaluation.zeroshot import batch_for

    def head(vocab: int) -> torch.nn.Module:
        return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(
            "llama", vocab_size=vocab, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
            num_attention_heads=1, num_key_value_heads=1))

    assert batch_for(16, head(49_152)) == 16 and batch_for(16, head(262_144)) == 3
    assert batch_for(16, head(128)) == 16 and batch_for(2, head(49_152)) == 2


def test_speed_benchmark_compares_documents() -> None:
    from bench.tools.zeroshot_speed import compare_examples

    a = {"boolq": {"doc_ids": [3, 5], "acc": [1, 0], "loglik": [[-1.0, -2.0], [-0.5, -0.25]]}}
    b = {"boolq": {"doc_ids": [3, 5], "acc": [1, 1], "loglik": [[-1.0, -2.5], [-0.5, -0.75]]}}
    assert compare_examples(a, b) == {"documents": 2, "acc_changed": 1, "max_abs_loglik_diff": 0.5}
    with pytest.raises(ValueError, match="different documents"):
        compare_examples(a, {"boolq": {**b["boolq"], "doc_ids": [5, 3]}})
