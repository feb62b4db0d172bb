"""Tests for bench/workflow.py's refresh of committed runs made under another BOS rule."""
from __future__ import annotations

import json
from pathlib import Path

from bench import workflow


def _run(path: Path, bos: bool | None) -> str:
    meta = {"ppl/wiki": {"seqlen": 512} if bos is None else {"seqlen": 512, "bos": bos}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics_meta": meta}))
    return str(path)


def test_a_run_made_under_another_bos_rule_is_made_again(tmp_path: Path) -> None:
    zoo = "config/models.yaml"
    # opt-tiny's tokenizer (trained here) adds `</s>` by default: the rule gives it a BOS
    assert workflow.model_bos("opt-tiny", zoo) is True
    assert workflow.model_bos("tiny-llama", zoo) is True           # it reads opt-tiny's tokenizer
    assert workflow.model_bos("llama-2-7b", zoo) is None           # a hub model: not here
    stale = _run(tmp_path / "runs" / "opt-tiny" / "wanda" / "2of4.json", False)
    assert workflow.refresh_inputs(stale, "opt-tiny", zoo) == [f"work/refresh/{stale}.bos"]
    current = _run(tmp_path / "runs" / "opt-tiny" / "sparsegpt" / "2of4.json", True)
    assert workflow.refresh_inputs(current, "opt-tiny", zoo) == []
    unsaid = _run(tmp_path / "runs" / "opt-tiny" / "apt" / "2of4.json", None)
    assert workflow.refresh_inputs(unsaid, "opt-tiny", zoo) == []
    assert workflow.refresh_inputs(str(tmp_path / "absent.json"), "opt-tiny", zoo) == []
    # the prune job of a stale run waits for its caches again, a current one's for nothing
    assert f"work/refresh/{stale}.bos" in workflow.prune_inputs("opt-tiny", "wanda", stale, zoo)
    assert workflow.prune_inputs("opt-tiny", "sparsegpt", current, zoo) == []
    seed = _run(tmp_path / "seeds" / "seed-1.json", False)
    assert workflow.seed_inputs(seed, "opt-tiny", "1", zoo) == [
        "work/calib-seeds/opt-tiny/seed-1.safetensors", f"work/refresh/{seed}.bos"]
    marker = tmp_path / "marker.bos"
    workflow.write_refresh_marker(str(marker))
    assert "another BOS rule" in marker.read_text()


def test_a_variants_card_follows_its_added_steps() -> None:
    from bench.workflow import method_source

    names = {m: [Path(f).name for f in method_source(m)] for m in ("wanda", "wanda_owl_dsnot", "ria")}
    assert names == {"wanda": ["wanda.py"], "wanda_owl_dsnot": ["wanda.py", "allocation.py", "dsnot.py"],
                     "ria": ["ria.py"]}
