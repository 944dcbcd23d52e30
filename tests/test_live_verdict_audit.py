"""Audit of the live path from scored frames to verdict events: which event a reader of the
sinks sees last must be the stream's current verdict, whatever the threads' interleaving."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np

from scanner.decode import Frame
from scanner.live.batcher import FrameResult
from scanner.live.config import parse_config
from scanner.live.rolling import StreamVerdicts, VerdictSettings
from scanner.live.service import LiveService, _Stream
from scanner.live.source import LiveFrame

BOX = np.array([[10, 10, 90, 90]], np.float32)
IMG = np.zeros((8, 8, 3), np.uint8)


def _service(s: VerdictSettings):
    """A service with one stream "cam" (no source thread) whose published events are recorded."""
    svc = LiveService(parse_config({}))
    st = _Stream(None, SimpleNamespace(_m=svc.metrics.stream("cam"), state="live"), StreamVerdicts("cam", s), None)
    svc._streams["cam"] = st
    published: list[dict] = []
    svc.sinks.emit = published.append
    return svc, st, published


def _result(svc, k: int, p: float, t: float | None = None) -> None:
    t = time.monotonic() if t is None else t
    svc._on_result(LiveFrame("cam", k, k, t, Frame(k, 0.0, IMG)), FrameResult(BOX, np.ones(1), np.array([p])))


class _LateLock:
    """A lock that runs ``hook`` once, just before its first acquisition (a thread preempted there)."""

    def __init__(self, hook):
        self._lock, self._hook = threading.Lock(), hook

    def __enter__(self):
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        self._lock.acquire()

    def __exit__(self, *exc):
        self._lock.release()


def test_a_result_in_flight_when_its_stream_is_removed_emits_nothing_after_removed():
    """The worker looked the stream up, then the removal closed it (``removed`` events to
    unknown) before the worker took the stream's lock: the frame's ``fake`` went out after
    ``removed``, and a reader kept a stopped stream's verdict as current for good."""
    s = VerdictSettings(window_s=5, fake_above=0.6, real_below=0.4, min_samples=1, emit_interval_s=3600)
    svc, st, published = _service(s)
    _result(svc, 0, 0.1)
    assert st.verdicts.summary["verdict"] == "real"

    def removal():  # remove_stream: popped, then closed
        with svc._lock:
            svc._streams.pop("cam")
        svc._close(st, "removed")

    st.lock = _LateLock(removal)
    _result(svc, 1, 0.95)
    last = [e for e in published if e["track"] is None][-1]
    assert (last["reason"], last["verdict"]) == ("removed", "unknown")
    assert st.verdicts.summary["verdict"] == "unknown"


def test_an_interval_event_is_never_published_after_a_newer_change():
    """The watchdog judged the interval summary (``real``) under the stream's lock and published
    it after releasing it; a result that changed the verdict to ``fake`` meanwhile went out
    first, so the last event a reader saw said ``real`` while the stream was ``fake``."""
    s = VerdictSettings(window_s=5, fake_above=0.6, real_below=0.4, min_samples=2, emit_interval_s=1)
    svc, st, published = _service(s)
    for k in range(2):
        _result(svc, k, 0.1)
    assert st.verdicts.summary["verdict"] == "real"
    st.verdicts.last_emit = time.monotonic() - 10  # the interval summary is due
    worker_done = threading.Event()

    def worker():
        for k in range(2, 8):
            _result(svc, k, 0.99)
        worker_done.set()

    publish = svc._publish

    def watchdog_preempted(events):  # the worker's results arrive between judging and publishing
        if threading.current_thread().name == "ticker" and any(e["reason"] == "interval" for e in events):
            threading.Thread(target=worker).start()
            worker_done.wait(1.0)
        publish(events)

    svc._publish = watchdog_preempted
    ticker = threading.Thread(target=svc._tick, args=(time.monotonic(),), name="ticker")
    ticker.start()
    ticker.join(5)
    assert worker_done.wait(5)
    assert st.verdicts.summary["verdict"] == "fake"
    last = [e for e in published if e["track"] is None][-1]
    assert last["verdict"] == "fake", [(e["reason"], e["verdict"]) for e in published if e["track"] is None]


def test_a_verdict_the_interval_ageing_changes_is_a_change_event():
    """``update`` ages the windows to the frame's capture time, then the interval summary ages the
    stream's to now: a verdict that changed in between went out only as reason ``interval`` (a
    summary), and no ``change`` event ever followed (the verdict had already moved)."""
    s = VerdictSettings(window_s=5, fake_above=0.6, real_below=0.4, min_samples=2, emit_interval_s=30)
    sv = StreamVerdicts("cam", s)
    now = time.monotonic()
    for t, p in ((now - 5.3, 0.9), (now - 5.2, 0.9), (now - 3.0, 0.5)):
        sv.update(t, BOX, np.array([p]))
    assert sv.summary["verdict"] == "fake"
    sv.last_emit = now - 60  # the interval summary is due
    events = [e for e in sv.update(now - 0.4, BOX, np.array([0.3])) if e["track"] is None]
    assert sv.summary["verdict"] == "real"
    assert [(e["reason"], e["previous"], e["verdict"]) for e in events] == [
        ("change", "fake", "real"), ("interval", "real", "real")]
