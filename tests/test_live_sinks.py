"""A sink still busy when the service stops: its undelivered events are reported, not lost silently."""
from __future__ import annotations

import logging
import threading

from scanner.live.metrics import LiveMetrics
from scanner.live.sinks import Sink


class _Stuck(Sink):
    """A webhook whose receiver hangs: each delivery blocks until released."""

    def __init__(self, **kw):
        super().__init__("hook", **kw)
        self.release = threading.Event()

    def deliver(self, event):
        self.release.wait(10)


def test_undelivered_events_at_shutdown_are_logged_and_counted(caplog):
    m = LiveMetrics()
    sink = _Stuck(metrics=m).start()
    try:
        for i in range(3):
            sink.emit({"stream": "s", "n": i})
        with caplog.at_level(logging.WARNING, logger="scanner.live.sinks"):
            sink.stop(timeout=0.2)
        assert sink.dropped == 3  # one in delivery, two queued
        assert "3 event(s) not delivered" in caplog.text
        assert b'dfscan_sink_dropped_total{sink="hook"} 3.0' in m.render()
    finally:
        sink.release.set()


def test_a_webhook_dripping_its_response_body_does_not_hold_the_sink():
    """The webhook read each response body whole with httpx's per-read timeout: a receiver (or
    proxy) that answered 200 and then dripped its body, or sent an endless one, held the sink
    for good; every later alert waited, then was dropped. Only the status is read now."""
    import time
    from http.server import BaseHTTPRequestHandler

    from conftest import start_http, stop_http, wait_for
    from scanner.live.sinks import WebhookSink

    class Drip(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

    httpd, port = start_http(Drip)
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", timeout_s=1, retries=0).start()
    try:
        for i in range(2):
            sink.emit({"stream": "s", "alert": True, "n": i})
        wait_for(lambda: sink.delivered == 2, 4, "both events delivered")
        assert sink.failed == 0
    finally:
        sink.stop(timeout=1)
        stop_http(httpd)


def test_a_webhook_dripping_its_response_headers_does_not_hold_the_sink(caplog):
    """httpx's timeout is per read: a receiver (or a broken proxy, a tarpit) sending its status
    line and then a header byte now and then kept one POST going for as long as it dripped,
    holding the sink; every later alert waited, then was dropped. Each POST now has a total
    deadline of timeout_s."""
    import time
    from conftest import drip_headers_handler, start_http, stop_http, wait_for
    from scanner.live.sinks import WebhookSink

    httpd, port = start_http(drip_headers_handler())
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", timeout_s=1, retries=0, name="hook").start()
    t0 = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="scanner.live.sinks"):
            for i in range(2):
                sink.emit({"stream": "s", "alert": True, "n": i})
            wait_for(lambda: sink.failed == 2, 5, "both deliveries to give up")
        assert time.monotonic() - t0 < 4 and sink.delivered == 0
        assert "no whole response within 1" in caplog.text, caplog.text
    finally:
        sink.stop(timeout=1)
        stop_http(httpd)
