"""2:4 speed benchmark: shapes, kernel constraints, the 2:4 mask, the no-GPU record, and the whole
timing harness on CPU with a masked-dense stand-in for the kernel (real kernels need a GPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import speed
from bench.speed import speed_run
from bench.config import load_config
from bench.packages import REPO_ROOT
from bench.zoo.shapes import PAPER_CONFIGS, linear_shapes, meta_model, paper_config
from bench.zoo import LICENSE_ENV, get_spec
from tests.conftest import tiny_model

SMOKE = REPO_ROOT / "config" / "smoke.yaml"
HAS_SPARSE_GPU = speed.gpu_unavailable_reason() is None


def stand_in(weight: torch.Tensor, backend: str) -> torch.Tensor:
    """CPU stand-in for the kernel: the same 2:4 weight, kept dense."""
    return weight.clone()


def test_paper_shapes_are_the_published_dims() -> None:
    shapes = {(s.out_features, s.in_features): s for s in linear_shapes(meta_model(paper_config("llama-3-8b")))}
    assert set(shapes) == {(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)}
    assert shapes[(1024, 4096)].layers == ["self_attn.k_proj", "self_attn.v_proj"]
    assert sum(s.count for s in shapes.values()) == 7 * 32
    mamba = {(s.out_features, s.in_features) for s in linear_shapes(meta_model(paper_config("mamba-2.8b")))}
    assert mamba == {(10240, 2560), (192, 5120), (5120, 160), (2560, 5120)}   # dt_rank 160, 2 x 16 states


def test_linear_shapes_cover_every_prunable_linear(arch: str) -> None:
    from bench.adapters import adapter_for

    model = tiny_model(arch)
    linears = adapter_for(model).prunable(model)
    shapes = linear_shapes(model)
    assert sum(s.count for s in shapes) == len(linears)
    assert {(s.out_features, s.in_features) for s in shapes} == {tuple(l.weight.shape) for l in linears.values()}


def test_kernel_shape_constraints() -> None:
    fp16, bf16 = torch.float16, torch.bfloat16
    assert speed.unsupported_reason("cusparselt", fp16, 5120, 160) is None
    assert "in % 64" in speed.unsupported_reason("cutlass", fp16, 5120, 160)      # Mamba dt_proj
    assert speed.unsupported_reason("cutlass", bf16, 4096, 11008) is None
    assert "out % 16" in speed.unsupported_reason("cusparselt", bf16, 8, 64)
    assert speed.unsupported_reason("cusparselt", torch.float32, 64, 64) is not None
    with pytest.raises(ValueError, match="unknown 2:4 backend"):
        speed.unsupported_reason("torchao", fp16, 64, 64)


def test_prune_2of4_keeps_the_two_largest_of_every_four() -> None:
    w = torch.randn(32, 64)
    pruned = speed.prune_2of4(w)
    groups = pruned.reshape(32, 16, 4)
    assert ((groups != 0).sum(-1) == 2).all()
    top2 = w.abs().reshape(32, 16, 4).topk(2, dim=-1).values.sum(-1)
    assert torch.allclose(groups.abs().sum(-1), top2)


@pytest.mark.skipif(HAS_SPARSE_GPU, reason="this machine has a GPU: the record holds figures")
def test_no_gpu_record_holds_the_plan_and_no_figure(tmp_path: Path) -> None:
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    out = tmp_path / "speed" / "opt-6.7b.json"
    out.parent.mkdir()
    rec = speed_run.run_target("opt-6.7b", cfg, out, progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(rec))
    assert [p.name for p in out.parent.iterdir()] == ["opt-6.7b.json"]     # no temp file left
    assert rec["status"] == "no GPU" and rec["reason"].startswith("no GPU")
    assert rec["layers"] == [] and rec["e2e"] == [] and not rec["stand_in"]
    s = speed_run.settings_of(cfg)
    full = 3 * len(s["dtypes"]) * len(s["backends"]) * len(s["tokens"]) * len(s["modes"])
    assert rec["planned_cells"] + len(rec["unsupported"]) == full


def test_targets_follow_the_config(monkeypatch) -> None:
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    monkeypatch.setenv(LICENSE_ENV, "gemma")
    assert speed_run.targets(cfg) == list(cfg["models"]) + list(PAPER_CONFIGS)
    monkeypatch.delenv(LICENSE_ENV)               # as the planner: unaccepted terms, no target
    assert speed_run.targets(cfg) == [m for m in cfg["models"] if m != "gemma3-270m"] + list(PAPER_CONFIGS)
    assert speed_run.targets({**cfg, "speed": None}) == []


def test_wrong_kernel_output_is_refused() -> None:
    def wrong(weight: torch.Tensor, backend: str) -> torch.Tensor:
        return weight.roll(1, dims=1)                  # a mis-indexed kernel

    with pytest.raises(RuntimeError, match="refusing to time"):
        speed.layer_case(64, 128, 16, torch.float32, "cusparselt", "eager", device=torch.device("cpu"),
                         warmup=1, repeats=2, min_sample_s=1e-4, make_sparse=wrong)


def test_time_calls_interleaves_and_reports_medians() -> None:
    calls: list[str] = []
    res = speed.time_calls({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                           torch.device("cpu"), warmup=2, repeats=3, min_sample_s=0.0)
    assert set(res) == {"a", "b"} and all(len(r["seconds"]) == 3 for r in res.values())
    timed = calls[-6:]                                 # after warm-up and sizing: a, b, a, b, ...
    assert timed == ["a", "b"] * 3


def test_harness_end_to_end_on_cpu_with_a_stand_in(tmp_path: Path) -> None:
    """Every step a GPU run takes (plan, equality checks, layer and bare-mm timing, the model with
    swapped linears, end-to-end latency, the record) on CPU with the dense stand-in."""
    cfg = load_config(SMOKE)
    out = tmp_path / "tiny-llama.json"
    rec = speed_run.run_target("tiny-llama", cfg, out, progress=False, device=torch.device("cpu"),
                               make_sparse=stand_in)
    assert rec["stand_in"] and rec["status"] == "measured" and rec["errors"] == []
    assert len(rec["layers"]) == rec["planned_cells"] > 0
    for row in rec["layers"]:
        assert row["dense_s"] > 0 and row["sparse_s"] > 0 and row["max_abs_err"] == 0.0
        assert row["bare_mm"]["speedup"] > 0 and row["harness_vs_bare"] > 0
    [e2e] = [e for e in rec["e2e"] if e["backend"] == "cusparselt"]
    assert e2e["logits_max_abs_err"] == 0.0 and e2e["swapped_linears"] == 2 * 7
    assert e2e["prefill_speedup"] > 0 and e2e["decode_speedup"] > 0
    assert json.loads(out.read_text())["target"] == "tiny-llama"


def test_sparsify_model_leaves_taps_and_refused_shapes_dense() -> None:
    model = tiny_model("mamba").to(torch.float16)
    swapped = speed_run.sparsify_model(model, "cusparselt", stand_in)
    assert swapped and not any(name.endswith("dt_proj") for name in swapped)    # weight used directly
    model = tiny_model("mamba").to(torch.float16)
    swapped = speed_run.sparsify_model(model, "cutlass", stand_in)
    assert not any(name.endswith("dt_proj") for name in swapped)


def test_bad_speed_config_is_one_line_error() -> None:
    from methods.base import PruneBenchError

    raw = json.loads(json.dumps(load_config(SMOKE)))
    raw["speed"]["backends"] = ["torchao"]
    with pytest.raises(PruneBenchError, match="config invalid at speed/backends/0"):
        load_config(raw)


@pytest.mark.skipif(not HAS_SPARSE_GPU, reason="needs a CUDA GPU with sparse tensor cores (sm_80+)")
@pytest.mark.parametrize("backend", speed.BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_real_kernels_equal_dense_on_gpu(backend: str, dtype: torch.dtype) -> None:
    if speed.backend_unavailable_reason(backend):
        pytest.skip(speed.backend_unavailable_reason(backend))
    row = speed.layer_case(256, 512, 128, dtype, backend, "eager", device=torch.device("cuda"),
                           warmup=2, repeats=3, min_sample_s=1e-3)
    assert row["speedup"] > 0


def test_e2e_on_every_architecture_with_a_stand_in(arch: str) -> None:
    s = speed_run.settings_of({"speed": {"dtypes": ["float16"], "backends": ["cusparselt"],
                                         "e2e": {"batch_sizes": [2], "prompt_len": 8,
                                                 "decode_tokens": 3, "warmup": 0, "repeats": 1}}})
    [row] = speed_run.e2e_cases(tiny_model(arch), s, torch.device("cpu"), make_sparse=stand_in,
                                progress=False)
    assert "error" not in row and row["logits_max_abs_err"] == 0.0
    # Mamba: in_proj and out_proj; dt_proj is a tap, x_proj [24, 128] has out % 16 != 0
    assert row["swapped_linears"] == {"llama": 14, "opt": 12, "mamba": 4, "gemma3": 14}[arch]
    assert row["dense"]["settings"]["batch_size"] == 2


def test_random_weights_target_has_the_real_shapes_and_says_so(tmp_path: Path) -> None:
    """`--weights random` (a machine without the real weights): the grid model's config with
    seeded random weights, the same linear shapes, measured end to end, and the record says so."""
    from bench.zoo import models
    from bench.board.speed_table import speed_sections

    cfg = load_config(SMOKE)
    real, _ = models.load_model(models.prepare(get_spec("opt-tiny")), torch.float32)
    fake, kind = speed_run._target_model("opt-tiny", cfg, "random")
    assert kind == "model" and [s.as_dict() for s in linear_shapes(fake)] == \
        [s.as_dict() for s in linear_shapes(real)]
    assert sum(p.numel() for p in fake.parameters()) == sum(p.numel() for p in real.parameters())
    assert not torch.equal(fake.lm_head.weight, real.lm_head.weight)
    again, _ = speed_run._target_model("opt-tiny", cfg, "random")        # seeded
    assert all(torch.equal(a, b) for a, b in zip(fake.parameters(), again.parameters()))
    out = tmp_path / "opt-tiny.json"
    rec = speed_run.run_target("opt-tiny", cfg, out, progress=False, device=torch.device("cpu"),
                               make_sparse=stand_in, weights="random")
    assert rec["weights"] == "random" and rec["e2e"] and rec["errors"] == []
    assert all(e["logits_max_abs_err"] == 0.0 for e in rec["e2e"])
    assert speed_sections({"opt-tiny": rec})[0]["kind"] == "model, random weights"
    assert speed_run.run_target("opt-6.7b", cfg, tmp_path / "p.json", progress=False)["weights"] \
        == "none (shapes only)"


def test_bad_weights_and_missing_config_are_one_line_errors() -> None:
    from methods.base import PruneBenchError

    from bench.zoo.shapes import grid_config

    cfg = load_config(SMOKE)
    with pytest.raises(PruneBenchError, match=r"unknown weights 'fake' \(one of real, random\)"):
        speed_run._target_model("opt-tiny", cfg, "fake")
    with pytest.raises(PruneBenchError, match="no offline config for 'opt-125m'.*--weights real"):
        grid_config("opt-125m")


@pytest.mark.slow
def test_smollm2_config_snapshot_matches_the_real_model() -> None:
    """GRID_CONFIGS['smollm2-135m'] against the model `prepare` converts (downloads 93 MB if
    absent): same config fields that set shapes, same prunable shapes, same parameter count."""
    from bench.zoo import models
    from bench.zoo.shapes import GRID_CONFIGS, grid_config, random_model

    real, _ = models.load_model(models.prepare(get_spec("smollm2-135m")), torch.float32)
    snap = grid_config("smollm2-135m")
    for key in GRID_CONFIGS["smollm2-135m"][1]:
        assert getattr(snap, key) == pytest.approx(getattr(real.config, key)), key
    fake = random_model(snap)
    assert [s.as_dict() for s in linear_shapes(fake)] == [s.as_dict() for s in linear_shapes(real)]
    assert sum(p.numel() for p in fake.parameters()) == sum(p.numel() for p in real.parameters())


@pytest.mark.skipif(HAS_SPARSE_GPU, reason="this machine has a GPU: it would measure")
def test_a_machine_without_gpu_keeps_a_measured_record(tmp_path: Path) -> None:
    """`snakemake -R speed` on a CPU must not replace GPU figures by a plan."""
    out = tmp_path / "opt-6.7b.json"
    measured = {"schema": speed_run.SCHEMA, "target": "opt-6.7b", "status": "measured",
                "gpu": {"gpu": "NVIDIA H200"}, "layers": [{"speedup": 0.2}]}
    out.write_text(json.dumps(measured))
    rec = speed_run.run_target("opt-6.7b", load_config(SMOKE), out, progress=False)
    assert rec == measured and json.loads(out.read_text()) == measured
