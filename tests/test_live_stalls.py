"""Live streams that stop delivering video without the connection going quiet.

A camera whose video encoder hangs while its audio goes on, or one that sends audio (or
data) and never a picture: packets keep arriving, so FFmpeg's read timeout never fires.
"""
from __future__ import annotations

import socket
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler

import av
import numpy as np
import pytest

from conftest import drip_headers_handler, make_video, start_http, stop_http, wait_for
from scanner.live.hls import precheck_playlist
from scanner.live.publish import _Clip
from scanner.live.source import LiveSource, SourceSettings
from scanner.live.urls import SourceError, parse_source
from scanner.live.watchdog import Watchdog

RATE, SAMPLES = 48000, 1152  # one MP2 audio frame: 24 ms


def _audio_frame(n: int) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(np.zeros((1, SAMPLES), np.int16), format="s16", layout="mono")
    f.sample_rate, f.pts, f.time_base = RATE, n * SAMPLES, Fraction(1, RATE)
    return f


class _AudioGoesOn:
    """MPEG-TS over HTTP: ``clip``'s video (or none) with audio, then audio alone, in real time."""

    def __init__(self, clip: _Clip | None):
        self.stop = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                try:
                    outer._serve(self.wfile, clip)
                except (OSError, av.error.FFmpegError):
                    pass  # the reader hung up

        self.httpd, self.port = start_http(H)

    def _serve(self, wfile, clip: _Clip | None) -> None:
        # max_interleave_delta: the muxer would otherwise hold the audio back, waiting for video.
        with av.open(wfile, "w", format="mpegts", buffer_size=4096, options={"max_interleave_delta": "1000"},
                     container_options={"flush_packets": "1"}) as out:
            v = out.add_stream_from_template(clip.stream) if clip else out.add_stream("mpeg2video", rate=25)
            a = out.add_stream("mp2", rate=RATE, layout="mono")
            video = list(clip.packets) if clip else []
            t0, n = time.monotonic(), 0
            while not self.stop.is_set():
                t = n * SAMPLES / RATE
                while video and float((video[0].pts - clip.start) * clip.time_base) <= t:
                    p = video.pop(0)
                    q = av.Packet(bytes(p))
                    q.pts, q.dts, q.time_base, q.is_keyframe, q.stream = p.pts, p.dts, p.time_base, p.is_keyframe, v
                    out.mux(q)
                for p in a.encode(_audio_frame(n)):
                    out.mux(p)
                n += 1
                time.sleep(max(0.0, t0 + t - time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        stop_http(self.httpd)


@pytest.mark.parametrize("video", [True, False], ids=["video-stops", "never-video"])
def test_a_stream_whose_video_stops_while_audio_flows_reconnects(tmp_path, video):
    """The watchdog flagged the stream 'stalled', but its abort was seen only when a video frame
    came: with audio packets still flowing, no read timed out and the stream stayed 'stalled'
    (or 'connecting', never having had a picture) for good, never reconnecting, never scored."""
    clip = _Clip(str(make_video(tmp_path / "v.mp4", frames=10, fps=25, size=(64, 48)))) if video else None
    cam = _AudioGoesOn(clip)
    src = LiveSource("cam", f"http://127.0.0.1:{cam.port}/live.ts",
                     SourceSettings(sample_fps=5, open_timeout_s=1, stall_s=0.5, backoff_initial_s=0.1,
                                    backoff_max_s=0.2))
    dog = Watchdog(lambda: [src], interval_s=0.1).start()
    try:
        src.start()
        if video:
            wait_for(lambda: src.stats.decoded > 0, 5, "the first video frames")
        end = time.monotonic() + 6
        while src.stats.reconnects < 1 and time.monotonic() < end:
            time.sleep(0.05)
        assert src.stats.reconnects >= 1, src.describe()
        assert "video frame" in src.stats.last_error or "stalled" in src.stats.last_error, src.describe()
    finally:
        cam.close()
        src.stop()
        dog.stop()


class _Drip(BaseHTTPRequestHandler):
    """An HLS playlist that never ends: a byte every 0.2 s (httpx's timeout is per read)."""

    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.apple.mpegurl")
        self.end_headers()
        self.wfile.write(b"#EXTM3U\n")
        try:
            for _ in range(300):
                self.wfile.flush()
                time.sleep(0.2)
                self.wfile.write(b"#")
        except OSError:
            pass


def test_a_playlist_dripped_byte_by_byte_times_out_and_the_stream_can_be_removed():
    """The HLS pre-check read the playlist with httpx's per-read timeout only: a server sending
    a byte now and then kept the stream 'connecting' for days without an error, and its
    decode thread outlived DELETE /streams (one thread leaked per add and remove)."""
    httpd, port = start_http(_Drip)
    src = LiveSource("cam", f"http://127.0.0.1:{port}/live.m3u8",
                     SourceSettings(open_timeout_s=1, stall_s=0.5, backoff_initial_s=5, backoff_max_s=5))
    try:
        src.start()
        wait_for(lambda: src.stats.errors >= 1, 4, "the playlist check to time out")
        assert src.stats.last_error.startswith("timeout:"), src.describe()
        assert src.stats.connects == 0  # FFmpeg never opened it
    finally:
        src.stop(timeout=3)
        alive = src.alive
        stop_http(httpd)
    assert not alive, "the stream's thread outlived its removal"


def test_a_stream_removed_during_a_dripped_playlist_check_ends_at_once():
    httpd, port = start_http(_Drip)
    src = LiveSource("cam", f"http://127.0.0.1:{port}/live.m3u8", SourceSettings(open_timeout_s=30))
    try:
        src.start()
        time.sleep(0.8)  # inside the check
        t0 = time.monotonic()
        src.stop(timeout=5)
        assert not src.alive and time.monotonic() - t0 < 2
    finally:
        stop_http(httpd)


def test_a_playlist_server_dripping_its_headers_times_out_within_open_timeout():
    """The pre-check's total deadline was only tested between body chunks: a server dripping
    its headers kept client.stream(...) open (8 s with timeout_s=1, httpx's timeout being per
    read), and DELETE /streams could not end it meanwhile."""
    httpd, port = start_http(drip_headers_handler())
    src = parse_source(f"http://127.0.0.1:{port}/live.m3u8")
    t0 = time.monotonic()
    try:
        with pytest.raises(SourceError) as e:
            precheck_playlist(src, 1.0)
        took = time.monotonic() - t0
    finally:
        stop_http(httpd)
    assert str(e.value).startswith("timeout:"), e.value
    assert took < 2.0, f"the check took {took:.1f}s"


def test_a_stream_removed_while_its_playlist_headers_drip_ends_at_once():
    httpd, port = start_http(drip_headers_handler())
    src = LiveSource("cam", f"http://127.0.0.1:{port}/live.m3u8", SourceSettings(open_timeout_s=30))
    try:
        src.start()
        time.sleep(0.8)  # inside the check, waiting for the headers
        t0 = time.monotonic()
        src.stop(timeout=5)
        assert not src.alive and time.monotonic() - t0 < 2
    finally:
        stop_http(httpd)


@pytest.fixture
def stalled_port(monkeypatch):
    """A loopback port whose TCP connects hang as if no SYN were answered: a listener with backlog
    0 that accepts nothing, its queue filled by one connect (Linux then drops further SYNs). Where
    a kernel answers anyway, socket.create_connection to it is made to hang for its timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = socket.create_connection(("127.0.0.1", port), 2)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        stalls = False
    except TimeoutError:
        stalls = True
    except OSError:
        stalls = False
    finally:
        probe.close()
    if not stalls:
        real = socket.create_connection

        def hang(address, timeout=None, *a, **kw):
            if address[1] != port:
                return real(address, timeout, *a, **kw)
            time.sleep(timeout if timeout is not None else 60)
            raise TimeoutError("timed out")

        monkeypatch.setattr(socket, "create_connection", hang)
    yield port
    fill.close()
    srv.close()


def test_a_playlist_check_whose_connect_stalls_ends_within_open_timeout(stalled_port):
    """The pre-check's deadline did not cover TCP connects (no socket to shut down until one is
    made): a master playlist served late listing a variant on a host that never answers the SYN
    gave that connect httpx's whole timeout anew, 5.5 s for a 3 s open_timeout_s."""
    master = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://127.0.0.1:{stalled_port}/low.m3u8\n".encode()

    class Late(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            time.sleep(2.5)
            self.send_response(200)
            self.send_header("Content-Length", str(len(master)))
            self.end_headers()
            self.wfile.write(master)

    httpd, port = start_http(Late)
    t0 = time.monotonic()
    try:
        with pytest.raises(SourceError) as e:
            precheck_playlist(parse_source(f"http://127.0.0.1:{port}/live.m3u8"), 3.0)
        took = time.monotonic() - t0
    finally:
        stop_http(httpd)
    assert str(e.value).startswith("timeout:"), e.value
    assert took < 3.0 + 1.5, f"the check took {took:.1f}s"


def test_a_stream_removed_while_its_playlist_connect_stalls_ends_at_once(stalled_port):
    src = LiveSource("cam", f"http://127.0.0.1:{stalled_port}/live.m3u8", SourceSettings(open_timeout_s=30))
    src.start()
    time.sleep(0.8)  # inside the check, its connect unanswered
    t0 = time.monotonic()
    src.stop(timeout=5)
    assert not src.alive and time.monotonic() - t0 < 2


class _FakeSource:
    """What the watchdog reads of a source: a live one whose last frame is 5 s old."""

    def __init__(self, name: str, fail: bool = False):
        self.name, self.fail, self.state, self.alive, self.stalls = name, fail, "live", True, 0
        self.settings = SourceSettings(stall_s=1.0)
        self._m = type("M", (), {"heartbeat_age": type("G", (), {"set": lambda self, v: None})()})()
        self._stop = threading.Event()

    def update_fps(self, now: float) -> None:
        if self.fail:
            raise RuntimeError("broken source state")

    def heartbeat_age(self, now: float) -> float:
        return 5.0

    def flag_stall(self) -> None:
        self.stalls += 1
        self.state = "stalled"


def test_a_source_whose_check_raises_does_not_stop_the_others_or_verdict_expiry(caplog):
    """One source raising inside the watchdog's round ended the round: the streams after it
    were never flagged stalled and no verdict expired (on_tick) while it kept failing."""
    bad, good = _FakeSource("bad", fail=True), _FakeSource("good")
    ticks: list[float] = []
    dog = Watchdog(lambda: [bad, good], on_tick=ticks.append)
    with caplog.at_level("ERROR", logger="scanner.live.source"):
        dog.check(100.0)
        dog.check(100.5)  # the same failure again: not logged again (throttled)
    assert good.state == "stalled" and good.stalls == 1
    assert ticks == [100.0, 100.5]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "stream bad" in errors[0].getMessage(), [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None


def test_a_hung_inference_batch_is_logged_once_when_seen_and_when_it_ends(caplog):
    """A batch over model.batch_timeout_s turned /healthz 503 without a word in the log: an
    operator saw the service restarted (or failing) and no reason. One error line when the
    hang is first seen (by the watchdog, no probe needed), however often /healthz asks, and
    one info line when the batch ends."""
    from pathlib import Path

    from scanner.live.batcher import FrameResult
    from scanner.live.config import parse_config
    from scanner.live.service import LiveService

    release, entered = threading.Event(), threading.Event()

    def hanging(frames):
        if not entered.is_set():
            entered.set()
            release.wait(30)
        return [FrameResult(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
                for _ in frames]

    clip = Path(__file__).parent / "data" / "d1.mp4"
    cfg = parse_config({"api": {"enabled": False}, "model": {"detector": "test_tiny", "batch_timeout_s": 0.3},
                        "allow_files": True, "streams": [{"name": "cam", "url": str(clip)}]})

    def lines(level):
        return [r.getMessage() for r in caplog.records if r.name == "scanner.live.batcher" and r.levelname == level]

    with caplog.at_level("INFO", logger="scanner.live.batcher"):
        svc = LiveService(cfg, analyzer_factory=lambda dev: hanging).start()
        try:
            assert entered.wait(10), "no batch reached the detector"
            wait_for(lambda: lines("ERROR"), 3, "the hang to be logged by the watchdog")
            for _ in range(20):  # liveness probes
                assert not svc.healthy
            time.sleep(0.6)  # more watchdog rounds
            release.set()
            wait_for(lambda: svc.healthy, 5, "the batch to end")
            wait_for(lambda: lines("INFO") and any("ended" in m for m in lines("INFO")), 3, "the end line")
            time.sleep(0.6)  # later batches are quick: nothing more is logged
        finally:
            release.set()
            svc.stop()
    errors, ended = lines("ERROR"), [m for m in lines("INFO") if "ended" in m]
    assert len(errors) == 1 and "cpu" in errors[0] and "running for" in errors[0], errors
    assert len(ended) == 1 and "cpu" in ended[0] and "ended after" in ended[0], ended


def test_one_stream_failing_to_age_its_verdicts_does_not_keep_the_others_current(caplog):
    """The service's watchdog tick aged every stream's verdicts in one loop: one stream whose
    ageing raised left every stream after it with its last verdict for as long as it failed."""
    from types import SimpleNamespace

    from scanner.live.config import parse_config
    from scanner.live.rolling import StreamVerdicts, VerdictSettings
    from scanner.live.service import LiveService, _Stream

    s = VerdictSettings(window_s=5, fake_above=0.6, real_below=0.4, min_samples=2, emit_interval_s=3600)
    svc = LiveService(parse_config({}))
    box = np.array([[10, 10, 90, 90]], np.float32)
    for name in ("bad", "good"):
        st = _Stream(None, SimpleNamespace(_m=svc.metrics.stream(name), state="live"), StreamVerdicts(name, s), None)
        for k in range(3):
            st.verdicts.update(100.0 + k * 0.5, box, np.array([0.9]))
        svc._streams[name] = st

    def broken(now):
        raise RuntimeError("ageing failed")

    svc._streams["bad"].verdicts.expire = broken
    with caplog.at_level("ERROR", logger="scanner.live.service"):
        svc._tick(110.0)
        svc._tick(110.5)
    assert svc._streams["good"].verdicts.summary["verdict"] == "unknown"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "stream bad" in errors[0].getMessage()


def test_log_throttle_logs_the_first_failure_then_one_per_period_with_the_count(caplog):
    """LogThrottle.log, shared by the service's tick, the watchdog and the inference worker:
    the traceback inside an except block, the count of failures left out only when there are some."""
    import logging

    from scanner.live.throttle import LogThrottle

    throttle, logger = LogThrottle(every_s=0.2), logging.getLogger("test.throttle")
    with caplog.at_level(logging.ERROR, logger="test.throttle"):
        for _ in range(3):
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                throttle.log(logger, "k", "stream %s failed", "cam")
        time.sleep(0.25)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            assert throttle.log(logger, "k", "stream %s failed", "cam")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["stream cam failed", "stream cam failed (2 more not logged)"], msgs
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
