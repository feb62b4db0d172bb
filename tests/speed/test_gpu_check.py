"""The GPU call's harness on CPU: smoke comparison against the reference, the speed budget's
estimate and ladder, the paper-shaped block at rehearsal scale, the archive it brings back."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from bench import results
from bench.speed import gpu_block, gpu_check, gpu_profile, gpu_speed


def _smoke(dtype: str, ppls: dict[str, float | None]) -> dict:
    runs = [{"id": k, "ppl": v} if v is not None else {"id": k, "error": "RuntimeError: boom"}
            for k, v in ppls.items()]
    return {"device": "cuda", "dtype": dtype, "runs": runs, "seconds": 1.0}


def test_compare_smoke_against_the_cpu_reference() -> None:
    ref = _smoke("float32", {"a": 100.0, "b": 200.0, "c": 50.0})
    got = gpu_check.compare_smoke(_smoke("float32", {"a": 100.5, "b": 203.0, "c": None}), ref)
    rows = {r["id"]: r for r in got["runs"]}
    assert rows["a"]["rel_diff"] == pytest.approx(0.005) and rows["a"]["within_1pct"]
    assert rows["b"]["rel_diff"] == pytest.approx(0.015) and not rows["b"]["within_1pct"]
    assert got["outside_1pct"] == ["b"] and got["failed"] == 1 and got["not_run"] == 0
    assert got["max_abs_rel_diff"] == pytest.approx(0.015)
    half = gpu_check.compare_smoke(_smoke("float16", {"a": 110.0}), ref)
    assert "within_1pct" not in half["runs"][0] and half["outside_1pct"] == []   # recorded only
    assert gpu_check.compare_smoke(_smoke("float32", {"a": 1.0}), None)["max_abs_rel_diff"] is None


def test_speed_estimate_and_ladder() -> None:
    rung = gpu_speed.LADDER[-1]
    cells = 3 * len(rung["tokens"]) * len(rung["dtypes"]) * 2        # shapes x tokens x dtypes x backends
    assert gpu_speed.estimate(3, rung, 0.4) == pytest.approx(
        cells * 0.4 * (rung["repeats"] + 3) / (gpu_speed.PROBE_REPEATS + 3))
    costs = [gpu_speed.estimate(4, r, 0.1) for r in gpu_speed.LADDER]
    assert costs == sorted(costs, reverse=True)                        # richest rung first


def test_block_at_rehearsal_scale_meets_the_pattern() -> None:
    rec = gpu_block.measure("sparsegpt", "2of4", "tiny", torch.device("cpu"))
    assert rec["sparsity"] == pytest.approx(0.5) and rec["seconds"] > 0
    assert rec["calibration_shape"] == [4, 128] and rec["dtype"] == "float16"
    assert rec["shapes"] == {"hidden_size": 256, "intermediate_size": 688, "num_attention_heads": 4}
    model = gpu_block.block_model("paper", torch.device("meta"), torch.float16)
    mlp = model.model.layers[0].mlp
    assert len(model.model.layers) == 1 and tuple(mlp.down_proj.weight.shape) == (4096, 11008)
    # one entry per group of the adapter, each timed inside the prune step
    assert len(rec["group_seconds"]) == 4 and all(t > 0 for t in rec["group_seconds"].values())
    assert sum(rec["group_seconds"].values()) <= rec["breakdown"]["prune"] + 1e-6


def test_a_stopped_case_keeps_the_groups_its_log_says_were_pruned() -> None:
    log = ("2026-12-04 14:10:01,5 bench.engine pruned model.layers.0.self_attn.q_proj, "
           "model.layers.0.self_attn.k_proj in 12.50 s\n"
           "apt blocks:   0%|          | 0/1 [00:12<?, ?it/s]\n"
           "2026-12-04 14:10:09,1 bench.engine pruned model.layers.0.self_attn.o_proj in 3.25 s\n")
    done = {"model.layers.0.self_attn.q_proj, model.layers.0.self_attn.k_proj": 12.5,
            "model.layers.0.self_attn.o_proj": 3.25}
    assert gpu_block.groups_done(log) == done == gpu_block.groups_done(log.encode())
    assert gpu_block.groups_done(None) == {}


def test_profile_on_the_cpu_stand_in_is_marked_and_complete(tmp_path: Path) -> None:
    part = gpu_profile.run_all(tmp_path, "cpu", 60.0, "tiny")
    assert part["stand_in"] and not part["skipped"] and len(part["cases"]) == 2
    for case in part["cases"]:
        assert case["max_abs_err"] == 0.0 and case["wall_speedup"] > 0
        assert case["sparse"]["graph_s"] == "no CUDA graphs on this device"
        assert case["dense"]["host_op"].startswith("aten::") and case["dense"]["host_s"] > 0
    assert json.loads((tmp_path / "part-profile.json").read_text())["cases"] == part["cases"]


def test_profile_times_compiled_calls_and_the_site_shows_them(tmp_path: Path) -> None:
    from bench.board.cuda_table import _profile

    part = gpu_profile.run_all(tmp_path, "cpu", 120.0, "tiny", ("reduce-overhead",))
    assert part["compile_modes"] == ["reduce-overhead"] and len(part["cases"]) == 2
    for case in part["cases"]:
        for name in ("dense", "sparse"):
            got = case[name]["compiled"]["reduce-overhead"]
            assert got["s"] > 0 and got["first_call_s"] >= got["s"]
        want = case["dense"]["compiled"]["reduce-overhead"]["s"] / \
            case["sparse"]["compiled"]["reduce-overhead"]["s"]
        assert case["compiled_speedup"] == {"reduce-overhead": want}
        assert _profile(case)["compiled"] == f"reduce-overhead: {want:.2f}x"
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        gpu_profile.run_all(tmp_path, "cpu", 1.0, "tiny", ("fast",))


def test_assemble_brings_back_records_and_raw_parts(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "speed").mkdir(parents=True)
    out.mkdir()
    (work / "part-smoke-float32.json").write_text(json.dumps(_smoke("float32", {"a": 1.0})))
    (work / "speed" / "opt-tiny.json").write_text("{}")
    (work / "smoke.log").write_text("log")
    check = gpu_check.assemble(work, out, "cpu", 0.0)
    assert check["schema"] == gpu_check.SCHEMA and "smoke-float32" in check["parts"]
    with tarfile.open(out / "records.tar.gz") as tar:
        names = set(tar.getnames())
    assert names == {"results/cuda/check-cpu-rehearsal.json", "results/speed/opt-tiny.json",
                     "raw/part-smoke-float32.json", "raw/smoke.log"}


def test_commit_of_a_copied_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRUNEBENCH_COMMIT", raising=False)
    assert results.git_info(tmp_path) == {"git_commit": None, "git_dirty": True}
    monkeypatch.setenv("PRUNEBENCH_COMMIT", "a" * 40)
    assert results.git_info(tmp_path) == {"git_commit": "a" * 40, "git_dirty": False}


def test_site_summaries_of_the_committed_gpu_records(tmp_path: Path) -> None:
    from bench.board.cuda_table import check_sections, load_checks
    from bench.packages import REPO_ROOT

    checks = load_checks(REPO_ROOT / "results")
    assert list(checks)[:2] == ["check-1.json", "check-2.json"]
    first, second = check_sections(checks)[:2]
    assert first["tests"] == "58 passed, 2 failed, 0 skipped"        # CUTLASS on sm_90, since skipped
    assert second["tests"] == "58 passed, 0 failed, 2 skipped"
    f32 = {s["dtype"]: s for s in first["smoke"]}["float32"]
    assert f32["within"] is True and f32["failed_methods"] == ["darwinlm", "llm_pruner",
                                                               "llm_pruner_lora"]
    assert {b["case"]: b["seconds"] for b in first["block"]}["sparsegpt 2of4"].endswith(" s")
    third, fourth = check_sections(checks)[2:4]
    assert {s["dtype"]: s["failed_methods"] for s in third["smoke"]}["float16"] == ["darwinlm"]
    assert {s["dtype"]: s["failed_methods"] for s in fourth["smoke"]} == {"float16": []}
    prof = third["profile"]
    assert len(prof) == 6 and prof[0]["case"] == "[4096, 4096] x 16 tokens"
    # the record's own numbers, formatted: speedup = dense / 2:4 per call
    raw = checks["check-3.json"]["parts"]["profile"]["cases"][3]
    kd = sum(k["per_call_s"] for k in raw["dense"]["kernels"] if k["name"].startswith("nvjet")
             or k["name"].startswith("Memset"))                       # the GEMM and its memset
    ks = sum(k["per_call_s"] for k in raw["sparse"]["kernels"] if "sparse_gemm" in k["name"]
             or k["name"].startswith("Memset"))
    assert prof[3]["kernel_speedup"] == f"{kd / ks:.2f}x" == "1.20x"
    assert prof[3]["wall"].endswith(" ms") and " / " in prof[3]["host"]
    sections = {s["file"]: s for s in check_sections(checks)}
    seventh = sections["cuda/check-7.json"]["profile"]            # compiled, weight a parameter
    assert seventh[3]["compiled"].endswith("reduce-overhead: 1.36x") and "copy" not in \
        seventh[3]["compiled"]
    assert "copy it each call" in sections["cuda/check-6.json"]["profile"][3]["compiled"]
    bad = tmp_path / "cuda"
    bad.mkdir()
    (bad / "check-9.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not a prunebench.cuda-check/1 record"):
        load_checks(tmp_path)


def test_a_foreign_check_file_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "check.json").write_text('{"mine": 1}')
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--device", "cpu", "--part", "block", "--out", str(tmp_path)])
    assert exc.value.code == 2 and (tmp_path / "check.json").read_text() == '{"mine": 1}'
