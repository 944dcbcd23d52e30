"""Batch scan audit: the progress line names a video being scanned; a closed stdout keeps finished rows."""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest


class _Ctx:
    """Just what scan_paths needs of a scan context (the video scan itself is faked)."""

    def __init__(self, workers: int):
        self.workers, self.stop, self.prestarted = workers, threading.Event(), {}


def _row(path) -> dict:
    return {"path": str(path), "verdict": "real", "score": 0.1, "threshold": 0.5, "faces": 1,
            "frames_with_faces": 1, "frames": 1, "error": None}


def test_progress_names_a_video_being_scanned_not_the_last_one_taken(monkeypatch, tmp_path):
    """Two workers, v0 slow: once v1..v5 are done the bar named v5 (the last input taken,
    finished long before) while v0 was the only video still scanning."""
    from rich.console import Console

    import scanner.pipeline as pipeline
    import scanner.run as run
    from scanner.config import ScanConfig
    from scanner.output import SinkSet

    bars = []

    class Recorded(run.Progress):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    seen = {}

    def scan_video(path, ctx):
        if Path(path).name == "v0.mp4":  # finishes last: waits for the other five rows
            deadline = time.monotonic() + 20
            while bars[0].tasks[0].completed < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen["current"] = bars[0].tasks[0].fields["current"]
        return _row(path)

    monkeypatch.setattr(run, "Progress", Recorded)
    monkeypatch.setattr(pipeline, "scan_video", scan_video)
    paths = [tmp_path / f"v{i}.mp4" for i in range(6)]
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    tally = run.Tally()
    cfg = ScanConfig(detector="test_tiny", workers=2)
    run._scan_all(paths, _Ctx(2), cfg, SinkSet([]), tally, console, True)
    assert tally.videos == 6
    assert seen["current"] == "v0.mp4"


class _Sink:
    def __init__(self):
        self.rows = []

    def write(self, row):
        self.rows.append(row)


def test_rows_finished_when_stdout_closes_are_still_written(monkeypatch, tmp_path):
    """stdout closing stops the scan "like an interrupt", whose finished rows are written:
    the row of a video that had finished (v0, done once v1 was) was dropped with the
    generator, and only a --resume scanned it again."""
    from rich.console import Console

    import scanner.pipeline as pipeline
    import scanner.run as run
    from scanner.config import ScanConfig

    finished, v1_done = [], threading.Event()

    def scan_video(path, ctx):
        if ctx.stop.is_set():
            raise pipeline.ScanInterrupted(str(path))
        if Path(path).name == "v0.mp4":
            v1_done.wait(20)  # past its last frame: finishes whatever happens meanwhile
        finished.append(str(path))
        if Path(path).name == "v1.mp4":
            v1_done.set()
        return _row(path)

    class Closed(Console):
        def print(self, *a, **k):
            raise run.StdoutClosed("standard output was closed")

    monkeypatch.setattr(pipeline, "scan_video", scan_video)
    paths = [tmp_path / f"v{i}.mp4" for i in range(6)]
    sink, ctx = _Sink(), _Ctx(2)
    with pytest.raises(run.StdoutClosed):
        run._scan_all(paths, ctx, ScanConfig(detector="test_tiny", workers=2), sink, run.Tally(),
                      Closed(file=io.StringIO()), False)
    assert ctx.stop.is_set() and len(finished) < 6  # it stopped, as a signal stops it
    assert sorted(r["path"] for r in sink.rows) == sorted(finished)


def test_prestarted_decodes_are_all_stopped_before_any_is_waited_for():
    """close_all closed them one after another, each waiting up to 5 s for its thread: a model
    that failed to load was reported up to 5 s per prestarted video late."""
    from scanner.warmstart import Prestarted, close_all

    calls: list[str] = []

    class Frames:
        def __init__(self, name):
            self.name = name

        def stop(self):
            calls.append(f"stop {self.name}")

        def close(self):
            calls.append(f"close {self.name}")

    pre = {n: Prestarted(None, Frames(n)) for n in "abc"}
    close_all(pre)
    assert calls == ["stop a", "stop b", "stop c", "close a", "close b", "close c"] and not pre
