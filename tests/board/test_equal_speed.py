"""Equal-speed comparisons: which runs count as equally fast, and the paired verdict on their
perplexity difference (bench/board/equal_speed.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.board import equal_speed, paired
from bench.evaluation import examples
from tests.board.test_compare import _record


def _row(model: str, method: str, pattern: str, prefill: tuple[float, float],
         decode: tuple[float, float], ppl: float = 10.0, kind: str = "structured") -> dict:
    return {"model": model, "method": method, "pattern": pattern, "pattern_kind": kind,
            "ppl/wiki": ppl, "speedup_prefill_min": prefill[0], "speedup_prefill_max": prefill[1],
            "speedup_decode_min": decode[0], "speedup_decode_max": decode[1]}


def test_pairs_need_overlap_in_both_phases_and_two_methods() -> None:
    a = _row("m", "a", "structured-20", (1.1, 1.3), (1.0, 1.2))
    b = _row("m", "b", "structured-50", (1.3, 1.4), (1.15, 1.3))      # touches: overlaps
    c = _row("m", "c", "structured-50", (2.0, 2.2), (1.1, 1.2))       # prefill apart
    d = _row("m", "a", "structured-50", (1.1, 1.3), (1.0, 1.2))       # same method as a
    e = _row("other", "b", "structured-20", (1.1, 1.3), (1.0, 1.2))   # another model
    f = _row("m", "dense", "dense", (1.0, 1.0), (1.0, 1.0), kind="dense")
    g = {**_row("m", "g", "structured-20", (1.1, 1.3), (1.0, 1.2)), "speedup_decode_max": None}
    pairs = [(x["method"], x["pattern"], y["method"], y["pattern"])
             for x, y in equal_speed.matches([a, b, c, d, e, f, g])]
    assert pairs == [("a", "structured-20", "b", "structured-50"),
                     ("a", "structured-50", "b", "structured-50")]


def _write(res: Path, method: str, pattern: str, nll: np.ndarray) -> None:
    path = res / "runs" / "m" / method / f"{pattern}{examples.SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(examples.dumps(_record(method, pattern, nll, np.zeros(len(nll)), {"arc_easy": np.ones(8, int)})))


def test_verdicts_come_from_the_paired_interval(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nll = rng.normal(3.0, 0.3, 64)
    _write(tmp_path, "dense", "dense", nll)
    _write(tmp_path, "a", "structured-20", nll + 0.2)
    _write(tmp_path, "b", "structured-50", nll + 0.6)                 # clearly worse than a
    _write(tmp_path, "c", "structured-20", nll + 0.2 + rng.normal(0, 0.01, 64))   # a's twin
    fast = ((1.1, 1.3), (1.0, 1.2))
    rows = [_row("m", "a", "structured-20", *fast, ppl=float(np.exp((nll + 0.2).mean()))),
            _row("m", "b", "structured-50", *fast, ppl=float(np.exp((nll + 0.6).mean()))),
            _row("m", "c", "structured-20", *fast, ppl=float(np.exp((nll + 0.2).mean()))),
            _row("m", "d", "structured-20", *fast)]                   # no per-example file
    out = {(e["runs"][0]["method"], e["runs"][1]["method"]): e
           for e in equal_speed.comparisons(tmp_path, rows)}
    diff, lo, hi = out[("a", "b")]["interval"]
    ref = paired.interval(paired.Values((nll + 0.2,), np.exp), paired.Values((nll + 0.6,), np.exp))
    assert (diff, lo, hi) == (ref.diff, ref.lo, ref.hi) and hi < 0
    assert out[("a", "b")]["verdict"] == "a better"
    assert out[("a", "c")]["verdict"] == "tie"
    assert out[("a", "d")]["verdict"] == "not paired (no per-example records)"
    assert out[("a", "d")]["interval"] is None
