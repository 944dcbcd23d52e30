"""The last videos of a scan get the cores of the workers that have nothing left to scan.

Threads are set to cores / workers, so on two cores the last video of a multi-video scan
ran on one thread while the other core idled (scanner.pipeline._widen_tail).
"""
from __future__ import annotations

import threading

import pytest
import torch
from conftest import DATA

from scanner import pipeline
from scanner.config import ScanConfig
from scanner.pipeline import build_context, scan_paths

LONG = DATA / "d18.mp4"


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _recording(monkeypatch) -> dict[str, list[int]]:
    """Intra-op threads of each frame batch, by scanning thread."""
    seen: dict[str, list[int]] = {}
    real = pipeline.detect_and_align

    def spy(*a, **k):
        seen.setdefault(threading.current_thread().name, []).append(torch.get_num_threads())
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "detect_and_align", spy)
    return seen


def _kept(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "timings"}


def test_the_last_video_widens_to_the_idle_cores_and_scores_the_same(two_cores, monkeypatch):
    ctx = build_context(ScanConfig(detector="test_tiny", details=True), inputs=2)
    assert (ctx.workers, ctx.base_threads) == (2, 1)
    seen = _recording(monkeypatch)
    # The missing file's error row ends at once: the clip is alone for nearly all its scan.
    rows = {r["path"]: r for r in scan_paths([LONG, DATA / "gone.mp4"], ctx=ctx)}
    assert rows[str(DATA / "gone.mp4")]["error"]["kind"] == "not_found"
    (counts,) = seen.values()
    assert counts[-1] == 2 and set(counts) <= {1, 2}

    alone = build_context(ScanConfig(detector="test_tiny", details=True, workers=1))
    alone.cpu_threads = 1  # the thread count the clip started on above
    (row,) = scan_paths([LONG], ctx=alone)
    assert _kept(rows[str(LONG)]) == _kept(row)  # same faces, boxes and scores


def test_a_reused_context_starts_every_scan_at_its_base_threads(two_cores, monkeypatch):
    ctx = build_context(ScanConfig(detector="test_tiny", frames=8), inputs=2)
    list(scan_paths([DATA / "d1.mp4", DATA / "gone.mp4"], ctx=ctx))
    assert ctx.cpu_threads == 2  # widened for the tail
    seen = _recording(monkeypatch)
    list(scan_paths([DATA / "d1.mp4", DATA / "d2.mp4"], ctx=ctx))
    assert len(seen) == 2 and all(counts[0] == 1 for counts in seen.values())  # no 2 x 2 threads on 2 cores
