"""A video that hangs (a read blocked on a stalled mount, a decoder that never returns)
or runs past ``video_timeout_s`` is a ``timeout`` error row; the scan goes on and ends.

A blocked read cannot be made on purpose with a regular file, so the tests block the
file's opening or hashing on an event, as a stalled network file system would; the
videos are real clips."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from conftest import DATA
from scanner.argtypes import seconds_or_none
from scanner.config import ScanConfig
from scanner.pipeline import build_context, scan_paths, scan_video
from scanner.streaming import BoundedPrefetch, DeadlinePassed, call_before


@pytest.fixture
def release():
    ev = threading.Event()
    yield ev
    ev.set()  # let the blocked threads finish after the test


def test_consumer_gives_up_on_a_blocked_producer(release):
    def gen():
        yield 1
        release.wait()  # blocked in a call no flag interrupts
        yield 2

    it = BoundedPrefetch(gen, maxsize=2)
    it.deadline = time.monotonic() + 0.5
    assert next(it) == 1
    with pytest.raises(DeadlinePassed):
        next(it)
    it.close()  # does not wait for the blocked thread
    assert it._thread.is_alive()


def test_call_before_forwards_value_and_error_and_gives_up(release):
    assert call_before(lambda: 7, time.monotonic() + 5) == 7
    assert call_before(lambda: 8, None) == 8

    def boom():
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        call_before(boom, time.monotonic() + 5)
    with pytest.raises(DeadlinePassed):
        call_before(release.wait, time.monotonic() + 0.3)


def test_video_timeout_flag_values():
    assert seconds_or_none("0") is None and seconds_or_none("none") is None
    assert seconds_or_none("2.5") == 2.5
    for bad in ("-1", "nan", "inf", "x"):
        with pytest.raises(Exception, match="positive number of seconds"):
            seconds_or_none(bad)
    assert ScanConfig().video_timeout_s == 3600
    assert ScanConfig(video_timeout_s=None).video_timeout_s is None


def test_a_hung_open_is_a_timeout_row_and_the_other_videos_are_scanned(monkeypatch, release):
    import scanner.decode as decode

    real_open = decode.open_file
    hung = DATA / "d2.mp4"

    def open_file(path):
        if str(path) == str(hung):
            release.wait()
        return real_open(path)

    monkeypatch.setattr(decode, "open_file", open_file)
    ctx = build_context(ScanConfig(frames=4, detector="test_tiny", hash=False, workers=2, video_timeout_s=1.5))
    rows = {r["path"]: r for r in scan_paths([DATA / "d1.mp4", hung, DATA / "d18.mp4"], ctx=ctx)}
    assert len(rows) == 3
    bad = rows[str(hung)]
    assert bad["verdict"] == "error" and bad["error"]["kind"] == "timeout", bad["error"]
    assert "video_timeout_s=1.5 s" in bad["error"]["message"] and "before its index" in bad["error"]["message"]
    assert bad["score"] is None
    for p in ("d1.mp4", "d18.mp4"):
        assert rows[str(DATA / p)]["verdict"] in ("real", "fake"), rows[str(DATA / p)]


def test_slow_analysis_is_a_timeout_row_saying_how_far_it_got(monkeypatch):
    import scanner.pipeline as pipeline

    ctx = build_context(ScanConfig(frames=16, detector="test_tiny", hash=False, video_timeout_s=0.6))
    detect = pipeline.detect_and_align

    def slow(*a, **k):
        time.sleep(0.4)  # each batch of 4 frames: the deadline passes after 2 batches
        return detect(*a, **k)

    monkeypatch.setattr(pipeline, "detect_and_align", slow)
    row = scan_video(DATA / "d1.mp4", ctx)
    assert row["error"]["kind"] == "timeout", row.get("error")
    assert "sampled frames were analysed" in row["error"]["message"]
    assert row["frames_requested"] == 16  # the sampling seen so far is kept in the row


def test_unlimited_and_generous_timeouts_leave_the_row_unchanged():
    rows = []
    for t in (None, 600):
        ctx = build_context(ScanConfig(frames=4, detector="test_tiny", hash=False, video_timeout_s=t))
        rows.append(scan_video(DATA / "d2.mp4", ctx))
    a, b = rows
    assert a["verdict"] == b["verdict"] != "error" and a["score"] == b["score"]


HUNG_HASH = """
import sys, threading
import scanner.pipeline as p
real = p.file_sha256
def blocked(path):
    if path.name == "d2.mp4":
        threading.Event().wait()  # a read that never returns
    return real(path)
p.file_sha256 = blocked
from scanner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_cli_hash_hung_on_a_prestarted_video_ends_with_its_timeout_row(tmp_path):
    """The first videos are decoded while the model loads and hashed in the worker:
    a hash that never returns is bounded too, and the process exits."""
    out = tmp_path / "rows.jsonl"
    cmd = [sys.executable, "-c", HUNG_HASH, "scan", str(DATA / "d2.mp4"), str(DATA / "d1.mp4"),
           "--detector", "test_tiny", "--frames", "4", "--video-timeout", "3", "--out", str(out),
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rows = {json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line) for line in out.read_text().splitlines()}
    assert set(rows) == {"d1.mp4", "d2.mp4"}, proc.stderr
    assert rows["d2.mp4"]["error"]["kind"] == "timeout"
    assert rows["d1.mp4"]["verdict"] in ("real", "fake")
    assert proc.returncode == 1, proc.stderr  # an input produced an error row (README's exit codes)
