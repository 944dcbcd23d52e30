"""Audit of what a live stream's frames become (verdicts, the watch table, watch's exit): a stream
judged on nothing must say why, and a watch with nothing left to watch must end, saying why."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest

from scanner.live.config import parse_config
from scanner.live.rolling import StreamVerdicts, VerdictSettings
from conftest import wait_for, smallest_clip

BOX = np.array([[10, 10, 90, 90]], np.float32)


@pytest.fixture(scope="module")
def clip() -> str:
    return smallest_clip()


class _NanDetector:
    """The real analyzer (faces found on the real frames), its detector scoring every face NaN."""

    def __init__(self, device: str):
        from scanner.live.batcher import FrameAnalyzer

        self.inner = FrameAnalyzer("test_tiny", device=device, engine="eager")
        self.threshold = self.inner.threshold

    def __call__(self, frames):
        out = self.inner(frames)
        for r in out:
            r.p_fake = np.full(len(r.p_fake), np.nan, np.float32)
        return out


def _table_text(rows, bounds) -> str:
    from rich.console import Console

    from scanner.live.watch import stream_table

    console = Console(width=250, record=True, file=io.StringIO())
    console.print(stream_table(rows, bounds))
    return console.export_text()


def test_a_stream_whose_faces_all_score_nan_says_why_in_streams_and_the_watch_table(clip):
    """A real face clip streamed live, every face scored NaN: /streams and `dfscan watch` showed
    faces and verdict ``unknown`` with nothing saying why (watch logs errors only, and the NaN
    warning is one), so it read as a stream not yet judged."""
    import torch

    from scanner.live.publish import HttpTsPublisher
    from scanner.live.service import LiveService

    torch.set_num_threads(1)
    pub = HttpTsPublisher(clip).start()
    cfg = parse_config({
        "model": {"detector": "test_tiny", "engine": "eager", "batch_frames": 4, "max_wait_ms": 30},
        "verdict": {"window_s": 3, "min_samples": 3, "emit_interval_s": 60},
        "defaults": {"sample_fps": 4}, "sinks": [],
        "streams": [{"name": "cam", "url": pub.url}],
    })
    svc = LiveService(cfg, analyzer_factory=_NanDetector).start()
    try:
        wait_for(lambda: svc.describe("cam")["nonfinite_scores"] >= 3, 90, what="NaN scores counted")
        row = svc.describe("cam")
        text = _table_text([row], (0.4, 0.6))
    finally:
        svc.stop()
        pub.stop()
    assert row["verdict"] == "unknown" and row["score"] is None and row["samples"] == 0
    assert "NaN/inf" in text and "left out of the verdict" in text, text


def test_nan_scores_are_counted_over_the_window_and_lapse_with_it():
    """The count is of the window's face scores: one NaN long ago must not be shown for good."""
    sv = StreamVerdicts("cam", VerdictSettings(window_s=5, min_samples=1, emit_interval_s=3600))
    t = time.monotonic()
    sv.update(t, np.tile(BOX, (2, 1)) + [[0, 0, 0, 0], [200, 0, 200, 0]], np.array([np.nan, np.inf]))
    sv.update(t + 1, BOX, np.array([np.nan]))
    assert sv.summary["nonfinite_scores"] == 3 and sv.summary["verdict"] == "unknown"
    sv.update(t + 5.5, BOX, np.array([0.1]))  # the first frame's two have left the window
    assert sv.summary["nonfinite_scores"] == 1
    sv.expire(t + 7)
    assert sv.summary["nonfinite_scores"] == 0
    assert _table_text([{"name": "cam", "state": "live", "fps": 2.0, "frames_sampled": 9, "frames_dropped": 0,
                         "reconnects": 0, "faces": 1, "last_error": "", **sv.summary}], (0.4, 0.6)).count("NaN") == 0


def test_watch_of_a_stream_that_stopped_for_good_ends_with_exit_1_naming_why(capsys):
    """A stream that can never play (no 'srt' protocol: stopped at once, never retried) kept
    `dfscan watch` running until a signal: a script waited for good, and piped (the table
    printed only at the end) it showed nothing at all."""
    from scanner.cli import main

    t0 = time.monotonic()
    rc = main(["watch", "srt://127.0.0.1:9/x", "--detector", "test_tiny", "--duration", "120"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert time.monotonic() - t0 < 60
    assert "stream s1 stopped" in err and "no 'srt' protocol" in err


def test_watch_in_a_terminal_ends_too_when_every_stream_stopped():
    """The terminal (redrawn table) path has its own loop: it must end as the piped one does."""
    from rich.console import Console

    from scanner.live.watch import all_stopped, parse_targets, run_watch

    cfg = parse_config({"api": {"enabled": False}, "model": {"detector": "test_tiny"}, "sinks": [],
                        "streams": [s.model_dump(exclude_none=True) for s in parse_targets(["srt://127.0.0.1:9/x"])]})
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    rows = run_watch(cfg, duration_s=120, console=console)
    assert all_stopped(rows) and "srt" in rows[0]["last_error"]
