"""Drill of the live service: stream names, the JSONL sink under logrotate, a changed token file.

Each test is a regression of a wrong answer given without an error: a look-alike stream
name, events written where nobody reads them, a revoked token still accepted.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from scanner.live.batcher import FrameResult
from scanner.live.cli import serve_main
from scanner.live.config import ConfigError, StreamConfig, parse_config
from scanner.live.service import LiveService
from scanner.live.sinks import JsonlSink, Sink, WebhookSink
from scanner.live.source import LiveFrame, LiveSource, SourceError, SourceSettings
from conftest import make_video, wait_for
from test_api import _serve


@pytest.mark.parametrize("name", ["cam\n", "cam\r\n", "cam\n2026-01-01 ERROR forged"])
def test_stream_name_with_a_final_newline_is_refused(name):
    """NAME_RE's '$' matches before a final newline: "cam\\n" was a second stream looking like
    "cam" in the table and the logs (and could forge a log line)."""
    with pytest.raises(ValueError):
        StreamConfig(name=name, url="rtsp://cam.local/x")
    svc, server = _serve(None)
    try:
        r = httpx.post(f"http://127.0.0.1:{server.port}/streams", json={"name": name, "url": "rtsp://cam.local/x"},
                       timeout=10)
        assert r.status_code == 400, r.text
        assert svc.names() == []
    finally:
        server.stop()
        svc.stop()


def _lines(path: Path) -> list[int]:
    return [json.loads(x)["n"] for x in path.read_text().splitlines()] if path.exists() else []


def test_jsonl_sink_follows_logrotate_and_a_deleted_file(tmp_path):
    """After logrotate's move-and-create the sink wrote on into the rotated file (compressed
    or deleted at the next rotation); after an rm every event failed until a restart."""
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path).start()
    try:
        def emit(n):
            sink.emit({"stream": "s", "n": n})
            wait_for(lambda: sink.delivered + sink.failed >= n, 5, f"event {n}")

        emit(1)
        path.rename(tmp_path / "events.jsonl.1")  # logrotate 'create'
        path.touch()
        emit(2)
        emit(3)
        assert _lines(tmp_path / "events.jsonl.1") == [1]
        assert _lines(path) == [2, 3]
        path.unlink()  # rm, or logrotate without 'create'
        emit(4)
        assert _lines(path) == [4]
        shutil.copy(path, tmp_path / "events.jsonl.2")  # logrotate 'copytruncate'
        os.truncate(path, 0)
        emit(5)
        assert _lines(path) == [5]
        assert sink.failed == 0
    finally:
        sink.stop()


def test_a_changed_token_file_revokes_the_old_token(tmp_path, caplog):
    """The token file was read once at start: a token rotated after a leak (a Kubernetes Secret
    updated in place) went on being accepted until a restart."""
    old, new = "old-token-0123456789abcdef", "new-token-0123456789abcdef"
    token_file = tmp_path / "token"
    token_file.write_text(old + "\n")
    svc, server = _serve(None, token_env=None, token_file=str(token_file))
    url = f"http://127.0.0.1:{server.port}/streams"

    def status(tok):
        return httpx.get(url, headers={"Authorization": f"Bearer {tok}"} if tok else {}, timeout=10).status_code

    try:
        assert status(old) == 200
        tmp = tmp_path / "token.new"  # replaced whole, as Kubernetes and editors do
        tmp.write_text(new)
        tmp.replace(token_file)
        assert (status(old), status(new)) == (401, 200)
        token_file.write_text("short")  # no valid token now: nothing is accepted, not everything
        with caplog.at_level(logging.ERROR, logger="scanner.live.server"):
            assert (status(new), status("short"), status("")) == (401, 401, 401)
        assert "holds no token" in caplog.text
        token_file.unlink()
        assert status(new) == 401
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10).status_code == 200
    finally:
        server.stop()
        svc.stop()


@pytest.mark.parametrize("bad", [b"tok-2short-9\n", b"\xff\xfe-tok-not-utf-8-0123456789"])
def test_a_token_file_reloaded_bad_is_refused_as_at_start(tmp_path, caplog, bad):
    """TokenFile had its own reader (strip, length, words): one function now reads the file at
    start and on every reload, so a token refused at start is refused on reload with the same
    message, and the token itself is in neither. On reload nothing is accepted (fail closed)
    until the file holds a valid token again."""
    token_file = tmp_path / "token"
    token_file.write_bytes(bad)
    with pytest.raises(ConfigError) as at_start:
        parse_config({"api": {"token_env": None, "token_file": str(token_file)}, "model": {"detector": "test_tiny"}})
    refused = str(at_start.value)
    assert refused.startswith(f"api.token_file {token_file}: ")
    good, again = "good-token-0123456789abcdef", "again-token-0123456789abcdef"
    token_file.write_text(good)
    svc, server = _serve(None, token_env=None, token_file=str(token_file))
    url = f"http://127.0.0.1:{server.port}/streams"

    def status(tok: str | bytes):
        tok = tok if isinstance(tok, bytes) else tok.encode()
        return httpx.get(url, headers={"Authorization": b"Bearer " + tok}, timeout=10).status_code

    try:
        assert status(good) == 200
        token_file.write_bytes(bad)
        with caplog.at_level(logging.ERROR):
            assert (status(good), status(bad.strip())) == (401, 401)
        assert refused in caplog.text and "holds no token" in caplog.text
        for secret in ("tok-2short-9", "tok-not-utf-8", good):
            assert secret not in refused and secret not in caplog.text
        token_file.write_text(again)
        assert (status(good), status(again)) == (401, 200)
    finally:
        server.stop()
        svc.stop()


@pytest.mark.parametrize("content", [None, b"\xff\xfe-not-utf-8-0123456789"])
def test_unreadable_token_file_is_one_config_line(tmp_path, content, capsys):
    """A token file that is not UTF-8 was a UnicodeDecodeError traceback from dfscan serve (a
    missing one an errno line naming no setting)."""
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_bytes(content)
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"api: {{token_file: '{token_file}', token_env: null}}\nmodel: {{detector: test_tiny}}\n")
    args = argparse.Namespace(config=str(cfg), host=None, port=None, log_level="ERROR")
    assert serve_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "api.token_file" in err[0] and "Traceback" not in err[0], err


def _still(i: int) -> np.ndarray:
    img = np.zeros((120, 160, 3), np.uint8)
    img[30:90, 50:110] = (200, 150, 120)
    return img


def _played(path: Path) -> LiveSource:
    src = LiveSource("cam", str(path), SourceSettings(allow_files=True, max_retries=0, sample_fps=5, stall_s=0.5))
    src.start()
    try:
        wait_for(lambda: src.state == "stopped", 15, what="file to end")
    finally:
        src.stop()
    return src


def test_a_stream_frozen_on_one_picture_is_not_live_evidence(tmp_path):
    """A camera stuck on one picture (same frame sent again and again) stayed 'live' and every
    sampled copy of it renewed the verdict's window: a verdict of a moment long gone."""
    cam = LiveSource("cam", "rtsp://127.0.0.1:9/x", SourceSettings(stall_s=0.5))
    still = _still(0)
    assert cam._same_picture(still, 0.0) is False  # the picture once, not once per sample
    assert cam._same_picture(still, 0.1) is True and cam._same_picture(still, 0.5) is True
    with pytest.raises(SourceError, match="frozen: the same picture"):
        cam._same_picture(still, 0.7)  # dropped like a stalled connection: a new session


def test_a_file_with_a_still_stretch_plays_on_to_its_end(tmp_path):
    """A file whose picture stays still longer than stall_s (a title card) was taken for a
    frozen camera and reconnected: played again from its start and caught there again, for
    good, so nothing after the still stretch was ever scanned."""
    frozen = _played(make_video(tmp_path / "frozen.mp4", frames=75, pattern=_still, options={"g": "1000"}))
    assert len(frozen.buffer) == 1  # the picture once, not once per sample
    assert frozen.stats.last_error == "end of stream" and frozen.stats.connects == 1
    moving = _played(make_video(tmp_path / "moving.mp4", frames=75))
    assert len(moving.buffer) == 4 and moving.buffer.dropped > 0 and moving.stats.last_error == "end of stream"


class _Collect(Sink):
    def __init__(self):
        super().__init__("collect")
        self.events: list[dict] = []

    def deliver(self, event):
        self.events.append(event)


def _fake_face() -> FrameResult:
    return FrameResult(np.array([[0, 0, 10, 10]], np.float32), np.ones(1, np.float32), np.full(1, 0.9, np.float32))


def test_removed_and_shut_down_streams_end_their_verdict_with_an_event():
    """A stream removed (DELETE /streams/x) or shut down sent no more events: a consumer of
    the JSONL or webhook kept its last verdict ('fake') as current for good."""
    sink = _Collect()
    cfg = parse_config({"model": {"detector": "test_tiny"}, "api": {"enabled": False},
                        "defaults": {"open_timeout_s": 1.0, "stall_s": 1.0}})
    svc = LiveService(cfg, analyzer_factory=lambda dev: (lambda frames: [_fake_face() for _ in frames]),
                      extra_sinks=[sink]).start()
    try:
        for name in ("a", "b"):
            svc.add_stream(StreamConfig(name=name, url="rtsp://127.0.0.1:1/x"))
            for i in range(3):
                svc._on_result(LiveFrame(name, i, 0.0, time.monotonic(), None), _fake_face())
            assert svc.describe(name)["verdict"] == "fake"
        svc.remove_stream("a")
    finally:
        svc.stop()
    last = {}
    for ev in sink.events:
        last[(ev["stream"], ev["track"])] = ev
    assert {k: (v["verdict"], v["reason"], v["previous"]) for k, v in last.items()} == {
        ("a", None): ("unknown", "removed", "fake"), ("a", 1): ("unknown", "removed", "fake"),
        ("b", None): ("unknown", "shutdown", "fake"), ("b", 1): ("unknown", "shutdown", "fake")}
    assert all(v["score"] is None and v["samples"] == 0 and v["state"] == "stopped" for v in last.values())


def test_webhook_retry_waits_are_capped():
    """retries 20 with backoff_s 60 (both allowed) waited 60 * 2**19 s before the last attempt:
    one event held the webhook for a year, every alert queued behind it was dropped."""
    waits: list[float] = []
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    silent.close()  # nothing listens: every attempt is refused at once
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", retries=20, backoff_s=60, sleep=waits.append)
    with pytest.raises(ConnectionError, match="after 21 attempt"):
        sink.deliver({"stream": "s", "alert": True})
    assert len(waits) == 20 and max(waits) == 60 and waits[:2] == [60, 60]
    sink.close()
