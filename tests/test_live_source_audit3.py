"""Live sources on real streams with broken timestamps, and a dropped credentialed stream's reason.

A camera stamping every frame alike (or stamps creeping back) held the media clock still: the
stream stayed ``live`` and was sampled once, for good. MPEG-TS recordings joined with ``cat``,
the second from hours later, played as a stream waited those hours before the later part. A
credentialed HTTP stream dropped by its server was blamed on a redirect it never had.
"""
from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np

from conftest import make_video, wait_for
from scanner.live.publish import HttpTsPublisher
from scanner.live.source import LiveSource, SourceSettings
from scanner.live.timing import MediaClock, Sampler


def _stuck_mkv(frames: int) -> bytes:
    """Matroska of intra-coded frames, every one stamped 0 (a camera with a stuck clock)."""
    path = f"/tmp/dfscan-stuck-{threading.get_ident()}.mkv"
    with av.open(path, "w", format="matroska") as c:  # ts_nonstrict: equal stamps are muxed
        s = c.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for i in range(frames):
            img = np.full((48, 64, 3), (i * 5) % 256, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj420p")
            for p in s.encode(f):
                p.pts = p.dts = 0
                p.time_base = Fraction(1, 1000)
                c.mux(p)
    with open(path, "rb") as fh:
        return fh.read()


def _drip_server(data: bytes, parts: int, gap_s: float) -> ThreadingHTTPServer:
    """Serves ``data`` once per GET in ``parts`` pieces ``gap_s`` apart, then closes (a live feed)."""
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "video/x-matroska")
            self.end_headers()
            step = len(data) // parts + 1
            try:
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(gap_s)
            except OSError:
                pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return srv


def _run_to_end(src: LiveSource, timeout: float) -> list:
    src.start()
    try:
        wait_for(lambda: src.state == "stopped", timeout, what="the stream to end")
    finally:
        src.stop(timeout=2)
    items = []
    while (item := src.buffer.get()) is not None:
        items.append(item)
    return items


def test_a_live_stream_whose_timestamps_stand_still_keeps_being_sampled(caplog):
    # 3 s of frames over real HTTP, all stamped 0: one sample in all (a verdict never reached)
    srv = _drip_server(_stuck_mkv(75), parts=75, gap_s=0.04)
    src = LiveSource("stuck", f"http://127.0.0.1:{srv.server_address[1]}/cam.mkv",
                     SourceSettings(max_retries=0, buffer_frames=64, sample_fps=2))
    try:
        with caplog.at_level(logging.WARNING, logger="scanner.live.source"):
            items = _run_to_end(src, 20)
    finally:
        srv.shutdown()
        srv.server_close()
    assert src.stats.decoded == 75
    assert len(items) >= 3, [i.time_s for i in items]  # 1 before
    assert all(b.time_s > a.time_s for a, b in zip(items, items[1:]))
    assert any("stream stuck: frame timestamps stopped moving on" in r.getMessage() for r in caplog.records)


def test_stamps_creeping_back_are_given_up_for_arrival_times():
    # Each stamp 10 ms before the last (within the jitter tolerance, so each held): the
    # clock stood still until the gap passed 0.5 s, i.e. 50 frames, and then moved one step.
    clock, sampler = MediaClock(None), Sampler(0.5)
    taken = [t for i in range(250) if sampler.take(t := clock(100 - i * 0.01, i * 0.04))]
    assert len(taken) >= 18, taken  # 10 s of frames at 2 fps; 1-2 before
    assert clock.stuck


def test_jitter_of_a_frame_is_still_held_not_given_up():
    clock = MediaClock(None)
    times = [clock(raw, i * 0.04) for i, raw in enumerate([0.0, 0.04, 0.08, 0.06, 0.12, 0.16])]
    assert times == [0.0, 0.04, 0.08, 0.08, 0.12, 0.16]


def test_ts_recordings_joined_with_a_later_clock_play_through_as_a_file(tmp_path):
    # The second recording starts 10 h of PTS later: the file waited 10 h, shown 'live'.
    path = make_video(tmp_path / "joined.ts", frames=40, fps=10, options={"bf": "0", "g": "5"},
                      pts_step=lambda i: 36000 * 10 if i == 19 else 1)
    src = LiveSource("joined", str(path), SourceSettings(allow_files=True, max_retries=0, buffer_frames=64))
    items = _run_to_end(src, 15)
    assert src.stats.last_error == "end of stream" and src.stats.decoded == 40
    times = [round(i.time_s, 2) for i in items]
    assert len(times) == 8 and times[4] - times[3] < 1, times  # both halves, one clock


def test_a_mp4_slide_show_still_waits_for_its_frames(tmp_path):
    # Only formats whose clock may restart take a jump forward as a new timeline.
    path = make_video(tmp_path / "slides.mp4", frames=3, fps=1, options={"bf": "0"})
    src = LiveSource("slides", str(path), SourceSettings(allow_files=True, max_retries=0, buffer_frames=8))
    t0 = time.monotonic()
    items = _run_to_end(src, 10)
    assert len(items) == 3 and time.monotonic() - t0 > 1.8


def test_a_credentialed_http_stream_dropped_by_its_server_is_not_blamed_on_a_redirect(tmp_path):
    # Every drop of a live credentialed HTTP camera read "...; if the server redirected: a
    # stream with credentials follows no redirect": a redirect happens at open, never mid-stream.
    clip = make_video(tmp_path / "c.mp4", frames=50, fps=25, options={"bf": "0", "g": "5"})
    pub = HttpTsPublisher(str(clip)).start()
    url = pub.url.replace("http://", "http://alice:S3cretPw@")
    src = LiveSource("cam", url, SourceSettings(max_retries=0, open_timeout_s=3, buffer_frames=8))
    try:
        src.start()
        wait_for(lambda: src.state == "live", 15, what="live")
        pub.stop()
        wait_for(lambda: src.state == "stopped", 15, what="the drop to be seen")
    finally:
        src.stop(timeout=2)
        pub.stop()
    err = src.stats.last_error
    assert err and "redirect" not in err and "S3cretPw" not in err, err


def test_a_stream_that_runs_out_of_retries_says_so(caplog):
    """With max_retries the source stopped after its last attempt with no line saying so
    (repeated errors are logged at DEBUG between every 10th): the log went quiet and the
    stream simply read `stopped`."""
    import logging

    from conftest import free_port, wait_for
    from scanner.live.source import LiveSource, SourceSettings

    caplog.set_level(logging.INFO, logger="scanner.live.source")
    url = f"http://alice:S3cretPw@127.0.0.1:{free_port()}/live.ts"  # nothing listens there
    src = LiveSource("gone", url, SourceSettings(max_retries=2, open_timeout_s=2)).start()
    try:
        wait_for(lambda: src.state == "stopped", 60, what="source to give up")
    finally:
        src.stop()
    lines = [r for r in caplog.records if "stopped after" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    assert "stopped after 3 attempt(s) (max_retries 2)" in lines[0].getMessage()
    assert "S3cretPw" not in caplog.text
