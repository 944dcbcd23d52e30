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
