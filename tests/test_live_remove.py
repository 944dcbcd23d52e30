"""Removing a stream while it is connecting, and adding one of the same name meanwhile.

The removal waits for the decode thread (blocked in FFmpeg's open). A namesake added in that
window used to share the old stream's metric series, which the removal then deleted: the new,
live stream was missing from /metrics for good. Frames of the old stream still in an inference
batch must not count for the new one either.
"""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from scanner.live.batcher import FrameResult
from scanner.live.config import StreamConfig, parse_config
from scanner.live.service import LiveService, StreamExists
from scanner.live.source import LiveFrame
from conftest import wait_for


def _result() -> FrameResult:
    return FrameResult(np.array([[0, 0, 10, 10]], np.float32), np.ones(1, np.float32), np.full(1, 0.9, np.float32))


def test_readd_while_removing_refused_and_stale_frames_ignored():
    cfg = parse_config({"model": {"detector": "test_tiny"}, "api": {"enabled": False},
                        "defaults": {"open_timeout_s": 1.0, "stall_s": 1.0}})
    svc = LiveService(cfg, analyzer_factory=lambda dev: (lambda frames: [_result() for _ in frames])).start()
    silent = socket.socket()  # accepts connections, never answers: FFmpeg's open blocks
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    cam = StreamConfig(name="X", url=f"http://127.0.0.1:{silent.getsockname()[1]}/x.ts")
    try:
        svc.add_stream(cam)
        time.sleep(0.2)  # the decode thread is inside av.open now
        removal = threading.Thread(target=svc.remove_stream, args=("X",))
        removal.start()
        wait_for(lambda: "X" not in svc.names(), 2, what="the removal to start")
        with pytest.raises(StreamExists, match="being removed"):
            svc.add_stream(cam)
        # a second DELETE meanwhile: 409 as the POST, not a 404 (its series are still exported)
        with pytest.raises(StreamExists, match="being removed"):
            svc.remove_stream("X")
        removal.join(10)
        stale = LiveFrame("X", 1, 0.0, time.monotonic(), None)  # the old stream's frame, still in flight
        svc.add_stream(cam)
        assert b'stream="X"' in svc.metrics.render()  # the new stream's series survived the removal
        svc._on_result(stale, _result())
        assert svc.describe("X")["samples"] == 0
        svc._on_result(LiveFrame("X", 2, 0.0, time.monotonic(), None), _result())
        assert svc.describe("X")["samples"] == 1
    finally:
        svc.stop()
        silent.close()


def test_list_while_a_stream_is_removed():
    """GET /streams listed the names, then looked each one up: a stream removed in between made
    the whole listing a 404 'no stream named ...' (the status page polling it showed an error)."""
    cfg = parse_config({"model": {"detector": "test_tiny"}, "api": {"enabled": False},
                        "defaults": {"open_timeout_s": 1.0, "stall_s": 1.0}})
    svc = LiveService(cfg, analyzer_factory=lambda dev: (lambda frames: [_result() for _ in frames])).start()
    try:
        for name in ("a", "b"):
            svc.add_stream(StreamConfig(name=name, url="rtsp://127.0.0.1:1/x"))
        a, b = svc._streams["a"].source, svc._streams["b"].source
        describe_a = a.describe

        def removed_meanwhile():  # "b" is removed while "a" is being described
            with svc._lock:
                svc._streams.pop("b", None)
            return describe_a()

        a.describe = removed_meanwhile
        assert [s["name"] for s in svc.describe()][0] == "a"
    finally:
        svc.stop()
        b.stop()
