"""The HTML report and the live status page rendered in headless Chromium (Debian's package).

Chromium runs with its proxy pointed at a dead port, and every request the page
makes is recorded: a report opened from disk may load nothing but itself.
Skipped when Chromium or Playwright's Python package is missing (.ci/run
installs both).
"""
from __future__ import annotations

import shutil
import tempfile

import pytest

from report_data import CLIPS, ERROR_INPUT, scan_corpus
from scanner.report import ReportOptions, load_rows, write_report

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--proxy-server=http://127.0.0.1:9"]  # nothing may leave; loopback bypasses proxies


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS,
                                                   headless=True, viewport={"width": 1280, "height": 900})
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    results = scan_corpus(root)
    out = root / "report.html"
    write_report(results, out, ReportOptions(open_sections=2))
    return out, load_rows(results)[0]


def _open(browser, url):
    page = browser.new_page()
    requests, failures = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failures.append((r.url, r.failure)))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, requests, failures


def _visible_paths(page):
    return page.eval_on_selector_all("table.videos tbody tr:not([hidden])", "rs => rs.map(r => r.dataset.path)")


def test_report_renders_every_part(browser, report):
    out, rows = report
    page, requests, _ = _open(browser, out.as_uri())
    assert page.locator("details.video").count() == len(rows) == len(CLIPS) + 1
    assert page.locator("table.videos tbody tr").count() == len(rows)
    assert page.locator("svg.timeline").count() == len(CLIPS)
    assert page.locator("svg.timeline circle.pt").count() == sum(r["frames_with_faces"] for r in rows)
    assert page.locator("details.error .errmsg").text_content().startswith("not_video")
    assert page.locator("rect.artifact").count() >= len(CLIPS)
    # Thumbnails in the open sections are decoded images, with their boxes drawn over them.
    open_imgs = page.locator("details.video[open] figure.thumb img")
    assert open_imgs.count() == 2 * 4
    for i in range(open_imgs.count()):
        open_imgs.nth(i).scroll_into_view_if_needed()
        assert open_imgs.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator("details.video:not([open])").count() == len(rows) - 2  # the rest collapsed
    assert requests == [out.as_uri()]  # the document itself and nothing else
    page.close()


def test_sort_filter_and_links(browser, report):
    out, rows = report
    page, requests, _ = _open(browser, out.as_uri())
    score = page.locator("table.videos th", has_text="score")

    def scores():
        return page.eval_on_selector_all("table.videos tbody tr td:nth-child(3)",
                                         "tds => tds.map(td => td.dataset.v === '' ? null : +td.dataset.v)")

    score.click()
    got = scores()
    assert [s for s in got if s is not None] == sorted((r["score"] for r in rows if r["score"] is not None),
                                                       reverse=True)
    assert score.get_attribute("aria-sort") == "descending"
    score.click()
    got = [s for s in scores() if s is not None]
    assert got == sorted(got) and score.get_attribute("aria-sort") == "ascending"

    page.locator("input.verdict-filter[value=error]").uncheck()
    assert not any(p.endswith(ERROR_INPUT) for p in _visible_paths(page))
    assert page.locator("details.video.error").is_hidden()
    assert page.locator(".shown-count").inner_text() == str(len(rows) - 1)
    page.locator("input.text-filter").fill("d18")
    assert [p.rsplit("/", 1)[1] for p in _visible_paths(page)] == ["d18.mp4"]
    page.locator("input.text-filter").fill("")
    page.locator("input.verdict-filter[value=error]").check()

    closed = page.locator("details.video:not([open])").first
    sec_id = closed.get_attribute("id")
    page.locator(f"table.videos a[href='#{sec_id}']").click()
    assert page.locator(f"#{sec_id}").evaluate("d => d.open")
    assert requests == [out.as_uri()]
    page.close()


def test_report_page_cannot_reach_the_network(browser, report):
    """The Content-Security-Policy blocks any load or connection a script might attempt."""
    out, _ = report
    page, requests, failures = _open(browser, out.as_uri())
    blocked = page.evaluate("""async () => {
        const out = [];
        try { await fetch('http://127.0.0.1:9/x'); out.push('fetch'); } catch (e) {}
        await new Promise(r => { const i = new Image(); i.onload = () => { out.push('img'); r(); };
                                  i.onerror = r; i.src = 'https://example.org/p.png'; });
        return out; }""")
    assert blocked == []
    # The image request never reached the (dead) proxy: Chromium refused it for the CSP.
    assert requests == [out.as_uri(), "https://example.org/p.png"]
    assert failures == [("https://example.org/p.png", "csp")]
    page.close()


def test_report_screenshot(browser, report, tmp_path):
    out, _ = report
    page, _, _ = _open(browser, out.as_uri())
    png = tmp_path / "report.png"
    page.screenshot(path=str(png), full_page=False)
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one
    page.close()
