"""The leaderboard site in a real browser: Debian's chromium driven by Playwright (PyPI), headless,
from file:// with every non-file request blocked and recorded.

Built from the committed results/ (real runs and speed records) plus a results dir with hostile
names. Marked `browser`; needs /usr/bin/chromium (`make test` installs it through apt when it is
missing; never `playwright install`). Screenshots go to $PRUNEBENCH_ARTIFACTS (default
work/test-artifacts/)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.board.leaderboard import build_site
from bench.packages import REPO_ROOT
from bench.results import example_run, run_path, write_run

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("PRUNEBENCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("PRUNEBENCH_ARTIFACTS", REPO_ROOT / "work" / "test-artifacts"))
QUIET_FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
               "--disable-default-apps", "--disable-sync", "--disable-extensions",
               "--no-first-run", "--metrics-recording-only", "--disable-domain-reliability",
               "--disable-breakpad", "--disable-features=Translate,OptimizationHints,MediaRouter",
               "--no-pings", "--dns-prefetch-disable"]
PAGES = ["index.html", "leaderboard.html", "plots.html", "methods.html",
         "runs/smollm2-135m/wanda/2of4.html"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "_build"
    build_site(REPO_ROOT / "results", out)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) "
                    "or run `make test`, which does")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=QUIET_FLAGS)
        yield b
        b.close()


class Page:
    """A page with every request recorded, non-file ones aborted, and console errors kept."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.external: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:", "blob:", "about:")):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def open(self, path: Path) -> Any:
        self.page.goto(path.as_uri(), wait_until="load")
        return self.page


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    yield p
    p.context.close()


@pytest.mark.parametrize("name", PAGES)
def test_pages_load_offline_without_errors(site: Path, tab: Page, name: str) -> None:
    page = tab.open(site / name)
    assert page.title() and page.locator("main").inner_text().strip()
    assert tab.external == [] and tab.errors == []


def _column(page: Any, name: str) -> int:
    heads = page.locator("#runs thead th").all_inner_texts()
    return [h.strip() for h in heads].index(name)


def _values(page: Any, col: int) -> list[float]:
    cells = page.locator(f"#runs tbody tr:not([hidden]) td:nth-child({col + 1})")
    return [float(v) for v in cells.evaluate_all("els => els.map(e => e.dataset.sort)") if v != ""]


def test_sorting_a_column_reorders_rows(site: Path, tab: Page) -> None:
    page = tab.open(site / "leaderboard.html")
    col = _column(page, "ppl")
    before = _values(page, col)
    page.locator("#runs thead th").nth(col).click()
    up = _values(page, col)
    assert up == sorted(before) and up != before
    page.locator("#runs thead th").nth(col).click()
    assert _values(page, col) == sorted(before, reverse=True)
    assert page.locator("#runs thead th").nth(col).get_attribute("aria-sort") == "descending"


def test_a_filter_hides_rows(site: Path, tab: Page) -> None:
    page = tab.open(site / "leaderboard.html")
    total = page.locator("#runs tbody tr").count()
    page.select_option("select[data-filter=model]", "opt-tiny")
    visible = page.locator("#runs tbody tr:not([hidden])")
    assert 0 < visible.count() < total
    assert set(visible.evaluate_all("els => els.map(e => e.dataset.model)")) == {"opt-tiny"}
    page.select_option("select[data-filter=kind]", "structured")
    assert set(visible.evaluate_all("els => els.map(e => e.dataset.kind)")) == {"structured"}
    assert page.locator("#shown").inner_text() == f"{visible.count()} of {total} runs"


def test_pattern_filter_and_search(site: Path, tab: Page) -> None:
    page = tab.open(site / "leaderboard.html")
    visible = page.locator("#runs tbody tr:not([hidden])")
    page.select_option("select[data-filter=pattern]", "2of4")
    assert set(visible.evaluate_all("els => els.map(e => e.dataset.pattern)")) == {"2of4"}
    page.fill("#search", "wanda opt")
    rows = visible.evaluate_all("els => els.map(e => [e.dataset.method, e.dataset.model])")
    assert rows and all(m == "wanda" and "opt" in model for m, model in rows)


def test_every_plot_renders(site: Path, tab: Page) -> None:
    page = tab.open(site / "plots.html")
    plots = page.locator("div.plot")
    assert plots.count() == 4
    for i in range(plots.count()):
        svg = plots.nth(i).locator("svg.main-svg").first
        svg.wait_for()
        box = svg.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 200
        # something drawn: data points, lines, or the annotation saying why there are none
        drawn = plots.nth(i).locator("g.trace, g.annotation").count()
        assert drawn > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "plots.png"), full_page=True)
    assert tab.errors == []


def test_landing_page_screenshot(site: Path, tab: Page) -> None:
    page = tab.open(site / "index.html")
    assert page.locator("table.matrix").count() >= 3
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "landing.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    tab.open(site / "leaderboard.html").screenshot(path=str(ARTIFACTS / "leaderboard.png"))


def test_hostile_names_render_as_text(tmp_path: Path, tab: Page) -> None:
    res = tmp_path / "results"
    dense = example_run("m", "dense", "dense", 10.0)
    write_run(run_path(res, "m", "dense", "dense"), dense)
    evil = example_run("m", "<script>alert(1)</script>", "unstructured-50", 12.0)
    evil["method"]["params"] = {"x": "\"><img src=x onerror=alert(2)>"}
    write_run(res / "runs" / "m" / "evil" / "unstructured-50.json", evil)
    out = tmp_path / "site"
    build_site(res, out)
    for name in ("index.html", "leaderboard.html", "plots.html", "methods.html"):
        page = tab.open(out / name)
        assert tab.dialogs == [], name
        if name != "plots.html":
            assert "<script>alert(1)</script>" in page.locator("main").inner_text()
    runs = [p for p in (out / "runs" / "m").rglob("*.html")]
    assert len(runs) == 2 and all("<" not in p.name for p in runs)
    for p in runs:
        tab.open(p)
    assert tab.dialogs == [] and tab.external == []
    shutil.rmtree(out)


def test_pages_read_without_javascript(site: Path, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto((site / "leaderboard.html").as_uri())
        rows = page.locator("#runs tbody tr")
        assert rows.count() == len(list((REPO_ROOT / "results" / "runs").rglob("*.json")))
        assert not page.locator("#filters").is_visible()          # controls that need JS stay hidden
        page.goto((site / "index.html").as_uri())
        assert page.locator("table.matrix").first.is_visible()
        page.goto((site / "plots.html").as_uri())
        assert "need JavaScript" in page.locator("header").inner_text()
    finally:
        context.close()
