"""A file that changes while it is scanned gets a ``changed`` error row, never a verdict.

The row's size was read when it started, its SHA-256 later and the decoder opened
the path after that (index pass, then decode pass): a file still being copied,
renamed over or truncated meanwhile got a row mixing three states, with no error.
Each test changes the file at a deterministic point of a real scan: right after the
decoder's index pass (``build_index`` runs with the file open; the decode pass opens
the path again) or right after hashing.
"""
from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import DATA, make_video
from scanner import decode, metrics, pipeline, rows
from scanner.config import ScanConfig
from scanner.pipeline import build_context, scan_paths
from scanner.warmstart import close_all, prestart

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OLD_MTIME_NS = 1_600_000_000 * 10**9  # set on every clip: a later write moves it for sure


@pytest.fixture(scope="module")
def ctx():
    return build_context(ScanConfig(frames=4, detector="test_tiny", workers=1))


@pytest.fixture
def clip(tmp_path) -> Path:
    path = make_video(tmp_path / "clip.mp4", frames=40)
    os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return path


def _after_index(monkeypatch, change) -> list[int]:
    """Run ``change()`` once, right after the decoder's first index pass."""
    calls = []
    real = decode.build_index

    def hooked(container, stream):
        index = real(container, stream)
        if not calls:
            calls.append(1)
            change()
        return index
    monkeypatch.setattr(decode, "build_index", hooked)
    return calls


def _append(path: Path, n: int) -> None:
    with open(path, "ab") as f:  # as a copy or a download still going on
        f.write(b"\0" * n)


def _scan(ctx, path) -> dict:
    (row,) = list(scan_paths([path], ctx=ctx))
    return row


def _assert_changed(row: dict, *words: str) -> None:
    assert row["verdict"] == "error" and row["score"] is None, row
    assert row["error"]["kind"] == "changed", row["error"]
    msg = row["error"]["message"]
    assert "changed while it was scanned" in msg and "rescan it once the file is complete" in msg
    for w in words:
        assert w in msg, msg
    # Nothing of the mixed analysis is kept: no frames, faces or hash of unverified bytes.
    assert row["sha256"] is None and row["frames"] == 0 and "frames_detail" not in row


def test_file_growing_during_the_scan_gets_a_changed_row(ctx, clip, monkeypatch):
    size = clip.stat().st_size
    counted = metrics.REGISTRY.get_sample_value("dfscan_errors_total", {"kind": "changed"}) or 0.0
    calls = _after_index(monkeypatch, lambda: _append(clip, 4096))
    row = _scan(ctx, clip)
    assert calls, "the hook never ran"
    assert metrics.REGISTRY.get_sample_value("dfscan_errors_total", {"kind": "changed"}) == counted + 1
    _assert_changed(row, f"size went from {size} to {size + 4096} bytes")
    assert row["size_bytes"] == size  # the size when the row started, as the message says


def test_file_replaced_during_the_scan_gets_a_changed_row(ctx, clip, tmp_path, monkeypatch):
    other = make_video(tmp_path / "other.mp4", frames=40,
                       pattern=lambda i: np.full((120, 160, 3), 200 - i, np.uint8))
    _after_index(monkeypatch, lambda: os.replace(other, clip))  # as `mv new.mp4 clip.mp4`
    _assert_changed(_scan(ctx, clip), "replaced by another file")


def test_file_truncated_during_the_scan_is_changed_not_truncated(ctx, clip, monkeypatch):
    _after_index(monkeypatch, lambda: os.truncate(clip, clip.stat().st_size // 2))
    _assert_changed(_scan(ctx, clip), "size went from")


@pytest.mark.parametrize("restore_mtime", [False, True], ids=["modified", "mtime_set_back"])
def test_file_rewritten_in_place_at_the_same_size_gets_a_changed_row(ctx, clip, monkeypatch, restore_mtime):
    def rewrite():
        time.sleep(0.05)  # past the file system's timestamp tick, so ctime moves
        with open(clip, "r+b") as f:
            f.seek(clip.stat().st_size // 2)
            f.write(b"\xff" * 64)
        if restore_mtime:  # rsync --inplace --times: only ctime tells
            os.utime(clip, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    _after_index(monkeypatch, rewrite)
    _assert_changed(_scan(ctx, clip), "status changed" if restore_mtime else "was modified")


def test_file_changed_after_hashing_gets_a_changed_row(ctx, clip, monkeypatch):
    """The hash must name the bytes judged: appended after it, before the decoder reads."""
    real = pipeline.file_sha256

    def hash_then_append(path):
        digest = real(path)
        _append(path, 100)
        return digest
    monkeypatch.setattr(pipeline, "file_sha256", hash_then_append)
    _assert_changed(_scan(ctx, clip), "size went from")


def test_file_changed_while_decoded_before_the_model_loaded(ctx, clip, monkeypatch):
    """A prestarted video (decoded while the model loads) was stat'ed before its decode
    thread opened it: a change after that is seen, not only one after its row started."""
    pre = prestart([clip], ScanConfig(frames=4, detector="test_tiny", workers=1))
    assert str(clip) in pre
    try:
        _append(clip, 512)  # between the early decode's start and the row's
        monkeypatch.setattr(ctx, "prestarted", pre)
        _assert_changed(_scan(ctx, clip), "size went from")
    finally:
        close_all(pre)


def test_unchanged_file_keeps_its_verdict_and_costs_no_extra_read(ctx, tmp_path, monkeypatch):
    video = tmp_path / "d1.mp4"
    shutil.copy(DATA / "d1.mp4", video)
    stats, opened, av_opened = [], [], []
    real_identity, real_open, real_av_open = rows.file_identity, builtins.open, av.open

    def identity(path):
        stats.append(path)
        return real_identity(path)

    def spy_open(file, *a, **k):
        if str(file) == str(video):
            opened.append(file)
        return real_open(file, *a, **k)

    def spy_av_open(file, *a, **k):
        if str(file) == str(video):
            av_opened.append(file)
        return real_av_open(file, *a, **k)
    monkeypatch.setattr(rows, "file_identity", identity)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(av, "open", spy_av_open)
    row = _scan(ctx, video)
    monkeypatch.undo()
    assert row["verdict"] in ("real", "fake") and row["error"] is None, row
    assert row["size_bytes"] == video.stat().st_size
    assert row["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    # The check is two stats (row start, row end); reads stay the hash's one open, the edit
    # list check's walk to the moov box (scanner.edit_list), the cut check's walk of the
    # top-level box headers (scanner.cut_files: seeks, no payload read) and the decoder's two
    # (index pass, decode pass).
    assert len(stats) == 2
    assert len(opened) == 3 and row["video"]["frames_refetched"] == 0 and len(av_opened) == 2


def test_missing_file_and_fifo_keep_their_own_errors(ctx, tmp_path):
    fifo = tmp_path / "capture.mp4"
    os.mkfifo(fifo)
    rows = list(scan_paths([tmp_path / "gone.mp4", fifo], ctx=ctx))
    assert [r["error"]["kind"] for r in rows] == ["not_found", "not_video"]


def test_file_appearing_during_its_scan_has_no_start_size(ctx, clip, monkeypatch):
    """No regular file when the row started (copied in after the listing): the row said
    'keeps the size from the start' but took a size stat'ed at the end."""
    monkeypatch.setattr(pipeline, "start_identity", lambda path, ctx: None)
    row = _scan(ctx, clip)
    _assert_changed(row, "appeared")
    assert row["size_bytes"] is None
