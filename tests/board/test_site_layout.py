"""The site as a reader sees it on a 1,400 px screen and a 390 px phone, in real chromium.

No page scrolls sideways (wide tables scroll inside their own box); at 1,400 px the leaderboard's
key columns are all in view without scrolling, the rest in column groups a reader shows; at
390 px the identity column stays put while the table scrolls. Ranks, ties and the paired
intervals render as text (no hovering) from a results fixture whose intervals are known; every
accuracy plot draws its chance line. Marked `browser` (tests/board/test_site_browser.py has the set-up)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.board.leaderboard import build_site
from tests.board.test_leaderboard import write_paired_results
from tests.board.test_site_browser import PAGES, Page, browser, site, tab  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser
KEY = ["method", "model", "pattern", "ppl", "Δppl %", "rank", "KL", "0-shot avg", "flips", "speedup"]
# elements past the right edge of the window that no scroll box holds (each one would make the
# whole page scroll sideways or be cut off)
STRAYS = """() => { const W = document.documentElement.clientWidth; const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.getBoundingClientRect().right <= W + 1) continue;
    let p = el.parentElement, held = false;
    for (; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll' || o === 'hidden') { held = true; break; } }
    if (!held) out.push(el.tagName + ' ' + (el.textContent || '').trim().slice(0, 50)); }
  return out; }"""


def _open(browser: Any, path: Path, width: int) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(path.as_uri(), wait_until="load")
    return context, page


@pytest.mark.parametrize("width", [1400, 390])
@pytest.mark.parametrize("name", PAGES)
def test_no_page_scrolls_sideways(site: Path, browser: Any, name: str, width: int) -> None:
    context, page = _open(browser, site / name, width)
    try:
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        assert page.evaluate(STRAYS) == []
    finally:
        context.close()


def _header_boxes(page: Any) -> dict[str, Any]:
    heads = page.locator("#runs thead th")
    return {heads.nth(i).inner_text().strip(): heads.nth(i) for i in range(heads.count())}


def test_key_columns_fit_at_1400_and_groups_show_the_rest(site: Path, tab: Page) -> None:
    page = tab.open(site / "leaderboard.html")
    box = page.locator("div.scroll").first.bounding_box()
    heads = _header_boxes(page)
    for name in KEY:
        b = heads[name].bounding_box()
        assert heads[name].is_visible() and b["x"] + b["width"] <= box["x"] + box["width"] + 1, name
    assert page.evaluate("() => { const s = document.querySelector('div.scroll');"
                         " return s.scrollWidth <= s.clientWidth; }")
    assert not heads["sparsity"].is_visible() and not heads["prune s"].is_visible()
    page.check("input[data-group=sparsity]")
    assert heads["sparsity"].is_visible() and heads["params"].is_visible()
    assert not heads["prune s"].is_visible()
    page.uncheck("input[data-group=sparsity]")
    assert not heads["sparsity"].is_visible()


def test_identity_column_stays_put_at_390(site: Path, browser: Any) -> None:
    context, page = _open(browser, site / "leaderboard.html", 390)
    try:
        first = page.locator("#runs tbody tr").first.locator("td").first
        x0 = first.bounding_box()["x"]
        page.evaluate("() => { const s = document.querySelector('div.scroll');"
                      " s.scrollLeft = s.scrollWidth; }")
        assert abs(first.bounding_box()["x"] - x0) < 1 and first.is_visible()
        speed = _header_boxes(page)["speedup"].bounding_box()
        assert 0 <= speed["x"] and speed["x"] + speed["width"] <= 390 + 1   # scrolled into view
    finally:
        context.close()


def test_ranks_ties_and_intervals_show_without_hovering(tmp_path: Path, tab: Page) -> None:
    res, out = tmp_path / "results", tmp_path / "site"
    write_paired_results(res)
    build_site(res, out)
    rows = {r["method"]: r for r in json.loads((out / "runs.json").read_text())}
    page = tab.open(out / "leaderboard.html")
    names = list(_header_boxes(page))
    shown = {}
    for tr in page.locator("#runs tbody tr").all():
        cells = tr.locator("td")
        shown[cells.nth(0).locator("a").inner_text()] = {
            n: cells.nth(i) for i, n in enumerate(names)}
    assert shown["wanda"]["rank"].inner_text() == "1=" == shown["sparsegpt"]["rank"].inner_text()
    assert shown["magnitude"]["rank"].inner_text() == "3"
    assert shown["llm_pruner_lora"]["rank"].inner_text() == "1"       # best of its own group
    assert shown["llm_pruner_lora"]["method"].locator(".tag").inner_text() == "recovery training"
    wanda = rows["wanda"]
    ref = wanda["dense_ppl/wiki"]
    line = shown["wanda"]["Δppl %"].locator("small.iv")
    assert line.is_visible() and line.inner_text() == (
        f"{100 * wanda['ppl_vs_dense_lo'] / ref:+.1f} to {100 * wanda['ppl_vs_dense_hi'] / ref:+.1f}%")
    assert shown["magnitude"]["0-shot avg"].locator("small.iv").is_visible()
    assert "at chance" in shown["magnitude"]["0-shot avg"].inner_text()
    assert "Chance level of the 0-shot average: m 25.0" in page.locator("#legend").inner_text()
    landing = tab.open(out / "index.html").locator("ul.best").inner_text()
    assert "2of4 one-shot tied on ppl/wiki: sparsegpt" in landing
    assert "2of4 recovery training best: llm_pruner_lora" in landing


def test_every_accuracy_plot_draws_its_chance_line(site: Path, tab: Page) -> None:
    page = tab.open(site / "plots.html")
    plot = page.locator("div.plot").filter(has_text="chance")
    assert plot.count() >= 1
    for i in range(plot.count()):
        plot.nth(i).locator("svg.main-svg").first.wait_for()
        assert plot.nth(i).locator(".shapelayer path").count() >= 1
