"""The HTML report and the live status page rendered in headless Chromium (Debian's package).

Chromium runs with its proxy pointed at a dead port, and every request the page
makes is recorded: a report opened from disk may load nothing but itself.
Skipped when Chromium or Playwright's Python package is missing (.ci/run
installs both).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from conftest import DATA, ROOT, free_port
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
    # test_adm: a conv detector with artifact boxes, so boxes and Grad-CAM heatmaps both show.
    write_report(results, out, ReportOptions(open_sections=2, explain="gradcam"))
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
    tip = page.locator("details.video[open] svg.timeline circle.pt title").first.text_content()
    assert re.fullmatch(r"frame score: t=\d+\.\d\d s, P\(fake\)=[01]\.\d{3}", tip)  # hover text
    assert page.locator("details.error .errmsg").text_content().startswith("not_video")
    assert page.locator("rect.artifact").count() >= len(CLIPS)
    # Thumbnails in the open sections are decoded images, with their boxes drawn over them.
    open_imgs = page.locator("details.video[open] figure.thumb img")
    assert open_imgs.count() == 2 * 4
    for i in range(open_imgs.count()):
        open_imgs.nth(i).scroll_into_view_if_needed()
        assert open_imgs.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    cams = page.locator("details.video[open] figure.cam img")
    assert cams.count() == 2 * 4  # a Grad-CAM view beside each thumbnail
    for i in range(cams.count()):
        cams.nth(i).scroll_into_view_if_needed()
        assert cams.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    assert "Grad-CAM on test_adm layer base_model.layer4" in page.locator("header").inner_text()
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


def test_only_the_report_own_script_runs(browser, report, tmp_path):
    """The CSP names the report's script by its SHA-256: markup an escaping slip let into the
    page (an inline script, an event-handler attribute) does not run ('unsafe-inline' let both)."""
    out, _ = report
    html = out.read_text(encoding="utf-8").replace(
        "<main>", '<main><script>document.title = "pwned-script"</script>'
                  '<img src="data:," onerror="document.title = \'pwned-handler\'">', 1)
    slipped = tmp_path / "slipped.html"
    slipped.write_text(html, encoding="utf-8")
    page, _, _ = _open(browser, slipped.as_uri())
    page.wait_for_timeout(300)
    assert "pwned" not in page.title()
    score = page.locator("table.videos th", has_text="score")
    score.click()  # the report's own script still sorts
    assert score.get_attribute("aria-sort") == "descending"
    page.close()


def test_report_screenshot(browser, report, tmp_path):
    out, _ = report
    page, _, _ = _open(browser, out.as_uri())
    png = tmp_path / "report.png"
    page.screenshot(path=str(png), full_page=False)
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one
    page.close()


# -- the live status page of `dfscan serve` --------------------------------------------------

TOKEN = "status-page-token-0123456789"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`dfscan serve` (a real process) with one live loopback stream and one dead one, token set."""
    from scanner.live.publish import HttpTsPublisher

    pub = HttpTsPublisher(str(DATA / "d1.mp4")).start()
    port = free_port()
    cfg = tmp_path_factory.mktemp("serve") / "serve.yaml"
    cfg.write_text(
        f"api: {{host: 127.0.0.1, port: {port}, token_env: DFSCAN_STATUS_TOKEN}}\n"
        "model: {detector: test_tiny, engine: eager, batch_frames: 4, max_wait_ms: 30}\n"
        "faces: {min_face: 40}\nverdict: {min_samples: 1}\nsinks: []\n"
        "defaults: {sample_fps: 3, open_timeout_s: 2, backoff_initial_s: 0.2, backoff_max_s: 0.5}\n"
        f"streams:\n  - {{name: cam-1, url: '{pub.url}'}}\n"
        f"  - {{name: lobby, url: 'http://viewer:hunter2@127.0.0.1:{free_port()}/never.ts'}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "scanner.cli", "serve", "--config", str(cfg)],
                            cwd=ROOT, env={**os.environ, "DFSCAN_STATUS_TOKEN": TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(base + "readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        pub.stop()


def test_status_page_lists_streams_from_the_api(browser, service):
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(service + "#token=" + TOKEN)  # the fragment never reaches the server
    assert page.url == service  # the token is taken out of the address bar
    page.wait_for_function("() => document.querySelectorAll('#streams tbody tr').length == 2", timeout=30_000)
    row = page.locator("#streams tbody tr[data-name='cam-1']")
    page.wait_for_function(
        "() => { const r = document.querySelector(\"#streams tr[data-name='cam-1']\");"
        " return r && r.querySelector('.badge').textContent === 'live' && r.querySelector('td.score').textContent !== '–'; }",
        timeout=60_000)
    assert 0.0 <= float(row.locator("td.score").inner_text()) <= 1.0
    lobby = page.locator("#streams tbody tr[data-name='lobby']").inner_text()
    assert "hunter2" not in lobby and "127.0.0.1" in lobby  # credentials masked by the API
    assert "updated" in page.locator("#api-status").inner_text()
    assert {r.split("#")[0] for r in requests} == {service, service + "streams"}  # own origin only
    page.close()


def test_status_page_asks_for_the_token(browser, service):
    page = browser.new_page()
    page.goto(service)
    page.wait_for_selector("#token-form:not([hidden])", timeout=15_000)
    assert "bearer token" in page.locator("#api-status").inner_text()
    page.fill("#token-form input[name=token]", TOKEN)
    page.click("#token-form button")
    page.wait_for_function("() => document.querySelectorAll('#streams tbody tr').length == 2", timeout=30_000)
    assert page.locator("#token-form").is_hidden()
    page.close()


def test_status_page_survives_a_malformed_token_in_the_address(browser, service):
    """#token=50%-off (a stray %) made decodeURIComponent throw before anything ran: the
    page never polled, stayed at 'loading…' and left the token in the address bar."""
    page = browser.new_page()
    page.goto(service + "#token=50%-off")
    page.wait_for_selector("#token-form:not([hidden])", timeout=15_000)
    assert page.url == service and "bearer token" in page.locator("#api-status").inner_text()
    page.close()
