"""Bounded producer thread: back-pressure, end marker, error forwarding, early stop."""
from __future__ import annotations

import time

import pytest

from conftest import DATA
from scanner.config import ScanConfig
from scanner.pipeline import build_context, scan_video
from scanner.streaming import BoundedPrefetch, Inline


def test_producer_waits_when_queue_is_full():
    made = []

    def gen():
        for i in range(100):
            made.append(i)
            yield i

    it = BoundedPrefetch(gen, maxsize=3)
    time.sleep(0.3)
    assert len(made) <= 5  # 3 queued + one blocked in put (+ one being made)
    assert list(it) == list(range(100))


def test_errors_are_forwarded_after_items():
    def gen():
        yield 1
        raise ValueError("boom")

    it = BoundedPrefetch(gen, maxsize=2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="boom"):
        next(it)


def test_close_stops_the_producer():
    def gen():
        while True:
            yield 0

    with BoundedPrefetch(gen, maxsize=2) as it:
        next(it)
    it._thread.join(timeout=2)
    assert not it._thread.is_alive()


def _slow_items(n: int, secs: float):
    for i in range(n):
        time.sleep(secs)  # "decoding" takes at least this long per item
        yield i


@pytest.mark.parametrize("source", [Inline, BoundedPrefetch])
def test_busy_time_counts_producing_not_waiting(source):
    it = source(lambda: _slow_items(4, 0.05), maxsize=1)
    got = []
    for x in it:
        got.append(x)
        time.sleep(0.15)  # a slow consumer: the producer waits, which is not busy time
    assert got == [0, 1, 2, 3]
    assert 0.2 <= it.busy_s < 0.2 + 4 * 0.15 - 0.05  # >= the sleeps, < sleeps + consumer's time


def test_threaded_and_inline_decode_give_the_same_row():
    rows = []
    for threaded in (True, False):
        ctx = build_context(ScanConfig(frames=6, detector="test_tiny", hash=False, decode_thread=threaded))
        rows.append(scan_video(DATA / "d2.mp4", ctx))
    a, b = rows
    assert a["verdict"] == b["verdict"] and a["faces"] == b["faces"] == 6
    assert a["score"] == pytest.approx(b["score"], abs=1e-6)


def test_parallel_workers_give_the_same_rows_as_one():
    from scanner.pipeline import scan_paths

    clips = [DATA / "d1.mp4", DATA / "d2.mp4", DATA / "missing.mp4", DATA / "d18.mp4"]
    out = {}
    for workers in (1, 2):
        ctx = build_context(ScanConfig(frames=4, detector="test_tiny", hash=False, workers=workers))
        assert ctx.workers == workers
        out[workers] = {r["path"]: r for r in scan_paths(clips, ctx=ctx)}
    assert out[1].keys() == out[2].keys() and len(out[1]) == 4
    for path, row in out[1].items():
        other = out[2][path]
        assert (row["verdict"], row["faces"]) == (other["verdict"], other["faces"])
        if row["score"] is not None:
            assert row["score"] == pytest.approx(other["score"], abs=1e-5)
