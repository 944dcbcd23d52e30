"""Live events can be de-duplicated and their gaps seen; a full sink queue keeps the newest.

A webhook POST whose answer was lost is sent again: the receiver had no way to tell the retry
from a new event. A sink whose queue was full dropped the newest event, so a reader kept an
older verdict as current while the stream had moved on.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import numpy as np

from conftest import start_http, stop_http, wait_for
from scanner.decode import Frame
from scanner.live.batcher import FrameResult
from scanner.live.config import parse_config
from scanner.live.rolling import StreamVerdicts, VerdictSettings
from scanner.live.service import LiveService, _Stream
from scanner.live.sinks import Sink, WebhookSink
from scanner.live.source import LiveFrame

BOX = np.array([[10, 10, 90, 90]], np.float32)
IMG = np.zeros((8, 8, 3), np.uint8)


def test_every_published_event_has_a_unique_rising_id():
    svc = LiveService(parse_config({}))
    s = VerdictSettings(window_s=5, fake_above=0.6, real_below=0.4, min_samples=1, emit_interval_s=3600)
    st = _Stream(None, SimpleNamespace(_m=svc.metrics.stream("cam"), state="live"), StreamVerdicts("cam", s), None)
    svc._streams["cam"] = st
    published: list[dict] = []
    svc.sinks.emit = published.append
    for k, p in enumerate([0.1, 0.95, 0.1, 0.95]):
        svc._on_result(LiveFrame("cam", k, k, time.monotonic(), Frame(k, 0.0, IMG)), FrameResult(BOX, np.ones(1), np.array([p])))
    svc._close(st, "removed")
    ids = [e["id"] for e in published]
    assert len(ids) >= 4 and len(set(ids)) == len(ids)
    run = {i.rsplit("-", 1)[0] for i in ids}
    assert len(run) == 1  # one run id; a restarted service gets another
    assert [int(i.rsplit("-", 1)[1]) for i in ids] == list(range(1, len(ids) + 1))
    other = LiveService(parse_config({}))
    assert other._run_id not in run


class _Held(Sink):
    """A sink whose delivery waits until released, so its queue fills."""

    def __init__(self, **kw):
        super().__init__("held", **kw)
        self.release, self.got = threading.Event(), []

    def deliver(self, event):
        self.release.wait(10)
        self.got.append(event["n"])


def test_a_full_sink_queue_drops_its_oldest_event_not_the_newest():
    sink = _Held(queue_size=2).start()
    try:
        sink.emit({"n": 0})
        wait_for(lambda: sink._delivering, 5, "the first event in delivery")
        for n in range(1, 5):
            sink.emit({"n": n})
        assert sink.dropped == 2
        sink.release.set()
        wait_for(lambda: sink.delivered == 3, 5, "the rest delivered")
        assert sink.got == [0, 3, 4]  # the latest verdict reaches the reader
    finally:
        sink.release.set()
        sink.stop(timeout=2)


def test_a_retried_webhook_post_carries_the_same_idempotency_key():
    keys: list[str | None] = []

    class FlakyOnce(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802 - the first attempt's answer is a 503, as when it was lost
            self.rfile.read(int(self.headers["Content-Length"]))
            keys.append(self.headers.get("Idempotency-Key"))
            self.send_response(503 if len(keys) == 1 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd, port = start_http(FlakyOnce)
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", timeout_s=2, retries=2, backoff_s=0.01).start()
    try:
        sink.emit({"id": "abc-7", "stream": "s"})
        wait_for(lambda: sink.delivered == 1, 5, "the event delivered on its retry")
        assert keys == ["abc-7", "abc-7"]
    finally:
        sink.stop(timeout=1)
        stop_http(httpd)


def test_an_event_after_stop_is_counted_not_queued_behind_the_end_marker():
    # With a queue of one, dropping the oldest would have dropped the end marker itself and
    # the sink's thread never ended; any event queued behind the marker was lost uncounted.
    sink = _Held(queue_size=1).start()
    sink.release.set()
    sink.stop(timeout=2)
    sink.emit({"n": 1})
    assert sink.dropped == 1 and sink.got == []
