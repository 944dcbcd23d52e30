"""Prometheus metrics of batch scans: the exposition a scrape and a Pushgateway get.

Real scans of the bundled clips (``test_tiny``, ``--frames 2``) in this process; the text is
read with prometheus_client's own parser. Counters are process-wide, so each check compares
what one scan added (a delta) with the rows it wrote.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scanner import metrics, run
from scanner.cli import main
from scanner.metrics_push import MetricsPusher
from conftest import free_port, start_http, stop_http, wait_for

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [str(ROOT / "tests" / "data" / "d1.mp4"), str(ROOT / "tests" / "data" / "d2.mp4")]
OPTS = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def registry_samples() -> dict[tuple, float]:
    return samples(generate_latest(metrics.REGISTRY).decode())


def added(before: dict, after: dict, name: str) -> dict[tuple, float]:
    """What a scan added to ``name``'s series, by labels (series left unchanged are left out)."""
    return {lab: v - before.get((n, lab), 0.0) for (n, lab), v in after.items()
            if n == name and v != before.get((n, lab), 0.0)}


def check_exposition(text: str) -> None:
    """The project's rules: dfscan_ names, _total counters, no path or file name as a label value."""
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("dfscan_"), fam.name
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
        for s in fam.samples:
            assert not any("/" in v or v.endswith(".mp4") for v in s.labels.values()), s


def test_metrics_port_answers_during_the_scan_and_is_freed_at_its_end(tmp_path, monkeypatch):
    """`--metrics-port`: a scrape while the scan runs parses and follows the naming rules; once
    the scan ends the port refuses connections (a scrape is not left hanging) and the next
    scan of the same process can bind it again."""
    port = free_port()
    scraped: list[str] = []
    line = run._print_line

    def scrape_then_print(console, row, ctx):  # while the scan runs: its first row is written
        if not scraped:
            scraped.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        return line(console, row, ctx)

    monkeypatch.setattr(run, "_print_line", scrape_then_print)
    for n in range(2):
        code = main(["scan", *CLIPS, *OPTS, "--metrics-port", str(port), "--out", str(tmp_path / f"rows{n}.jsonl")])
        assert code == 0, f"scan {n + 1} of the same process on the same port: exit {code}"
        with pytest.raises(ConnectionRefusedError):  # was: accepted, then no answer
            socket.create_connection(("127.0.0.1", port), timeout=3).close()
    check_exposition(scraped[0])
    names = {n for n, _ in samples(scraped[0])}
    assert {"dfscan_frames_decoded_total", "dfscan_videos_total", "dfscan_build_info",
            "dfscan_stage_duration_seconds_bucket"} <= names


def test_counters_follow_the_rows_through_errors_resume_and_retries(tmp_path):
    """One series per verdict/kind, each video counted once: a scan with an error row, a
    --resume that scans nothing, a --retry-errors that scans the error input once more."""
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "rows.jsonl"
    args = ["scan", *CLIPS, str(bad), *OPTS, "--out", str(out)]
    s0 = registry_samples()
    assert main(args) == 1
    s1 = registry_samples()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    check_exposition(generate_latest(metrics.REGISTRY).decode())
    assert added(s0, s1, "dfscan_videos_total") == {(("verdict", "fake"),): 2.0, (("verdict", "error"),): 1.0}
    assert added(s0, s1, "dfscan_errors_total") == {(("kind", "not_video"),): 1.0}
    assert added(s0, s1, "dfscan_frames_decoded_total") == {(): sum(r["frames"] for r in rows)}
    assert added(s0, s1, "dfscan_faces_detected_total") == {(): sum(r["faces"] for r in rows)}
    assert added(s0, s1, "dfscan_video_duration_seconds_count") == {(): 3.0}  # error rows too
    assert added(s0, s1, "dfscan_sink_events_total") == {(("sink", "jsonl"),): 3.0}

    assert main([*args, "--resume"]) == 1  # every input done: nothing scanned, nothing counted
    s2 = registry_samples()
    assert not added(s1, s2, "dfscan_videos_total") and not added(s1, s2, "dfscan_frames_decoded_total")

    assert main([*args, "--retry-errors"]) == 1  # the error input once more, the others kept
    s3 = registry_samples()
    assert added(s2, s3, "dfscan_videos_total") == {(("verdict", "error"),): 1.0}
    assert added(s2, s3, "dfscan_errors_total") == {(("kind", "not_video"),): 1.0}
    assert not added(s2, s3, "dfscan_frames_decoded_total")


class _Gateway(BaseHTTPRequestHandler):
    """A Pushgateway stand-in: answers 500 to the first ``fail`` pushes, then 200."""

    fail = 0
    seen: list[int] = []

    def log_message(self, *a):
        pass

    def do_PUT(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(1)
        self.send_response(500 if len(self.seen) <= self.fail else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _push_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "scanner.metrics_push" and r.levelno >= logging.WARNING]


def test_a_gateway_down_for_the_whole_scan_is_reported_once(caplog):
    """Every periodic push to a dead gateway logged the same warning (every 15 s for hours
    of an archive scan); the reason is said once, and the pushes still go on and are counted."""
    caplog.set_level(logging.DEBUG, logger="scanner.metrics_push")
    reg = CollectorRegistry()
    Counter("dfscan_push_audit", "test counter", registry=reg)
    p = MetricsPusher(f"http://user:hunter2-secret@127.0.0.1:{free_port()}", reg, interval_s=0.02,
                      instance="audit", timeout_s=2).start()
    try:
        wait_for(lambda: p.failures >= 4, 20, what="four failed periodic pushes")
    finally:
        assert p.stop() is False  # the final one fails too, for the same reason
    said = _push_warnings(caplog)
    assert len(said) == 1, said
    assert "refused" in said[0].lower() and "***@127.0.0.1" in said[0] and "hunter2" not in caplog.text


def test_a_push_that_works_again_after_failures_says_so(caplog):
    """A gateway answering 500 a while, then taking the pushes: one warning with the reason,
    one line when pushes work again, and the final push lands."""
    caplog.set_level(logging.WARNING, logger="scanner.metrics_push")
    handler = type("Gw", (_Gateway,), {"fail": 3, "seen": []})
    httpd, port = start_http(handler)
    reg = CollectorRegistry()
    Counter("dfscan_push_audit2", "test counter", registry=reg)
    p = MetricsPusher(f"http://127.0.0.1:{port}", reg, interval_s=0.02, instance="audit").start()
    try:
        wait_for(lambda: p.pushes >= 2, 20, what="pushes working again")
        assert p.stop() is True
    finally:
        p._stop.set()
        stop_http(httpd)
    said = _push_warnings(caplog)  # shown at dfscan's default level, as the failure was
    assert p.failures == 3 and len(said) == 2, said
    assert "500" in said[0] and said[1] == f"metrics push to http://127.0.0.1:{port} works again (3 push(es) failed)"


@pytest.mark.parametrize("gauge, change", [("state", ("set_state", "stalled")),
                                           ("transport", ("set_transport", "tcp"))])
def test_a_state_change_racing_the_removal_does_not_bring_a_removed_stream_back(monkeypatch, gauge, change):
    """The watchdog marks a stream stalled while the API removes it: set_state checked
    ``closed`` outside the lock remove_stream holds, so a removal landing between the check
    and the writes let them re-create the removed stream's state series, for good
    (``dfscan_stream_state{state="stalled"} 1`` of a stream that no longer exists)."""
    from scanner.live.metrics import LiveMetrics

    m = LiveMetrics()
    cam = m.stream("cam")
    m.stream("other")
    removal = threading.Thread(target=m.remove_stream, args=("cam",))
    labels = getattr(m, gauge).labels

    def removed_meanwhile(*names):  # the removal runs between the check and the first write
        if removal.ident is None:
            removal.start()
            removal.join(1.0)  # it finished here before; now it waits for this state change
        return labels(*names)

    monkeypatch.setattr(getattr(m, gauge), "labels", removed_meanwhile)
    getattr(cam, change[0])(change[1])
    removal.join(10)
    left = [s for fam in text_string_to_metric_families(m.render().decode()) for s in fam.samples
            if s.labels.get("stream") == "cam"]
    assert not left, left
    assert samples(m.render().decode())[("dfscan_stream_configured", ())] == 1.0


def _scan_state() -> dict[str, float]:
    got = registry_samples()
    return {s: got[("dfscan_scan_state", (("state", s),))] for s in metrics.SCAN_STATES}


def test_the_scan_state_says_a_failed_start_from_a_clean_scan(tmp_path, capsys):
    """A scan that failed to start (unreadable weights) pushed only zero counters: to the
    Pushgateway it looked like a clean scan, and the last scan's error alerts cleared."""
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not a safetensors file" * 10)
    rc = main(["scan", CLIPS[0], *OPTS, "--weights", str(bad), "--out", str(tmp_path / "a.jsonl")])
    assert rc != 0
    assert _scan_state() == {"running": 0, "complete": 0, "failed": 1, "interrupted": 0}
    assert main(["scan", *CLIPS, *OPTS, "--out", str(tmp_path / "b.jsonl")]) == 0
    assert _scan_state() == {"running": 0, "complete": 1, "failed": 0, "interrupted": 0}


def test_build_info_names_the_engine_that_runs_not_auto(tmp_path):
    """dfscan_build_info said engine="auto" where every row names the engine auto chose."""
    out = tmp_path / "r.jsonl"
    assert main(["scan", CLIPS[0], *OPTS, "--engine", "auto", "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    [info] = [labels for (name, labels) in registry_samples() if name == "dfscan_build_info"]
    assert dict(info)["engine"] == row["engine"] != "auto"


def test_live_build_info_names_the_engine_that_runs_not_auto():
    """A live service's dfscan_build_info said engine="auto" (the configured name), where a
    batch scan's names the engine auto chose: one dashboard panel showed two answers."""
    from scanner.live.config import parse_config
    from scanner.live.service import LiveService

    cfg = parse_config({"model": {"detector": "test_tiny", "engine": "auto"}, "sinks": []})
    svc = LiveService(cfg).start()
    try:
        [info] = [s.labels for fam in text_string_to_metric_families(generate_latest(svc.metrics.registry).decode())
                  for s in fam.samples if s.name == "dfscan_build_info"]
        expected = svc.workers[0].analyzer.engine.describe()["backend"]
        assert info["engine"] == expected != "auto" and info["detector"] == "test_tiny"
    finally:
        svc.stop()
