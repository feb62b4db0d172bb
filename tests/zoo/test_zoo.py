"""Tests for bench/zoo/__init__.py: a model under terms that are not an open-source license is
never fetched, and never planned, until the user accepts the terms by id."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.config import load_config, plan
from bench.packages import REPO_ROOT
from bench.zoo import LICENSE_ENV, get_spec, license_problem, load_zoo
from bench.zoo import materialize
from bench.zoo.models import prepare
from methods.base import PruneBenchError

TERMS = {"id": "gemma", "name": "Gemma Terms of Use", "terms": "pkg/data/GEMMA_TERMS.html"}
GATED = {"arch": "llama", "description": "a licensed model", "license": TERMS,
         "source": {"kind": "pypi_gguf", "package": "some-gguf", "version": "1.0.0",
                    "file": "m.gguf", "quantization": "Q4_K_M"}}


def _zoo(tmp_path: Path, **entries: dict[str, Any]) -> Path:
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def test_terms_must_be_accepted_by_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_spec("gated", load_zoo(_zoo(tmp_path, gated=GATED)))
    monkeypatch.delenv(LICENSE_ENV, raising=False)
    why = license_problem(spec)
    assert why is not None and "\n" not in why
    assert "Gemma Terms of Use" in why and "pkg/data/GEMMA_TERMS.html" in why
    assert "some-gguf==1.0.0" in why and f"{LICENSE_ENV}=gemma" in why
    monkeypatch.setenv(LICENSE_ENV, "other")
    assert license_problem(spec) == why
    monkeypatch.setenv(LICENSE_ENV, "other, gemma")
    assert license_problem(spec) is None


@pytest.mark.parametrize("lic", [{"id": "Gemma!", "name": "n", "terms": "t"}, {"id": "gemma"},
                                 "gemma"])
def test_a_malformed_license_is_one_line(tmp_path: Path, lic: Any) -> None:
    with pytest.raises(ValueError, match="model 'gated': license must be") as info:
        load_zoo(_zoo(tmp_path, gated={**GATED, "license": lic}))
    assert "\n" not in str(info.value)


def test_prepare_refuses_before_fetching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LICENSE_ENV, raising=False)
    monkeypatch.setattr(materialize, "unpacked", lambda *a: pytest.fail("fetched the weights"))
    spec = get_spec("gated", load_zoo(_zoo(tmp_path, gated=GATED)))
    with pytest.raises(PruneBenchError, match="accept them with"):
        prepare(spec)


def test_the_planner_drops_a_gated_model_with_the_reason(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = copy.deepcopy(yaml.safe_load((REPO_ROOT / "config" / "models.yaml").read_text())["tiny-llama"])
    zoo = _zoo(tmp_path, **{"tiny-llama": tiny, "gated-llama": {**tiny, "license": TERMS}})
    raw = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text())
    raw.update(zoo=str(zoo), models=["tiny-llama", "gated-llama"])
    raw.pop("seeds", None)
    monkeypatch.delenv(LICENSE_ENV, raising=False)
    runs, dropped = plan(load_config(raw))
    assert {r.model for r in runs} == {"tiny-llama"}
    gated = [(r, why) for r, why in dropped if r.model == "gated-llama"]
    cells = sum(1 if m == "dense" else len(raw["patterns"]) for m in raw["methods"])
    assert len(gated) == cells and all("Gemma Terms of Use" in w for _, w in gated)
    monkeypatch.setenv(LICENSE_ENV, "gemma")
    accepted, _ = plan(load_config(raw))
    assert sorted((r.method, r.pattern) for r in accepted if r.model == "gated-llama") == \
        sorted((r.method, r.pattern) for r in runs)


@pytest.mark.parametrize("source, message", [
    ({"parts": [{"package": "p", "version": "1", "file": "f"}]}, "needs source.sha256"),
    ({"parts": [{"package": "p"}], "sha256": "0" * 64}, "list of {package, version, file}"),
    ({"parts": [], "sha256": "0" * 64}, "list of {package, version, file}"),
])
def test_chunked_sources_are_checked(tmp_path: Path, source: dict, message: str) -> None:
    entry = {**GATED, "source": {**GATED["source"], **source}}
    with pytest.raises(ValueError, match=message):
        load_zoo(_zoo(tmp_path, chunked=entry))


def test_speed_targets_leave_out_a_model_whose_terms_are_not_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.speed.speed_run import targets

    cfg = load_config(REPO_ROOT / "config" / "config.yaml")
    assert "gemma3-270m" in cfg["models"]
    monkeypatch.delenv(LICENSE_ENV, raising=False)
    assert "gemma3-270m" not in targets(cfg) and "smollm2-135m" in targets(cfg)
    monkeypatch.setenv(LICENSE_ENV, "gemma")
    assert "gemma3-270m" in targets(cfg)
