"""Live sources against real streaming servers on loopback, each with a kill/restart drill.

Servers (Debian packages, installed by ``.ci/run``; a test skips naming the missing
binary when one is absent):

* RTSP over UDP and the automatic TCP->UDP fallback: VLC (``cvlc``, refuses TCP with 461)
* RTSP over TCP (interleaved) and HTTP tunnelling: GStreamer's gst-rtsp-server
* RTMP: nginx + libnginx-mod-rtmp, fed by ``ffmpeg``
* SRT: ``srt-live-transmit`` relaying an ``ffmpeg`` MPEG-TS feed
* HLS: ``ffmpeg``'s HLS muxer (rolling live playlist) behind ``http.server``

Every stream is a real face clip (``tests/data/d18.mp4`` re-encoded small); the
drill kills the server 5 times (SIGKILL: a crash), restarts it and checks the
stream goes to backoff, comes back live, scores faces again, and that no thread
or memory is left behind. All waits are bounded.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scanner.live.config import parse_config
from scanner.live.publish import ServerProcess as Proc
from scanner.live.publish import port_open as listening
from scanner.live.publish import transcode_clip, vlc_rtsp
from scanner.live.service import LiveService
from scanner.live.source import LiveSource, SourceSettings
from conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
FACE_CLIP = ROOT / "tests" / "data" / "d18.mp4"
GST_SERVER = ROOT / "tests" / "servers" / "gst_rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
CYCLES = 5


# ---------------------------------------------------------------- helpers
def need(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None and not os.path.exists(b)]
    if missing:
        pytest.skip(f"server binary not installed: {', '.join(missing)} (.ci/run installs it)")


class Group:
    """Processes started in order and killed together (e.g. nginx + its ffmpeg publisher)."""

    def __init__(self, *parts):
        self.parts = parts

    def start(self) -> "Group":
        for p in self.parts:
            p.start()
        return self

    def stop(self) -> None:
        for p in reversed(self.parts):
            p.stop()


class HttpDir:
    """``http.server`` serving a folder on loopback in a thread (the HLS origin)."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.httpd = folder, free_port(), None

    def start(self) -> "HttpDir":
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), partial(Quiet, directory=str(self.folder)))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@pytest.fixture(scope="module")
def media() -> Path:
    """World-readable folder with the face clip re-encoded: 320x320, 15 fps, keyframe every second.

    Not under pytest's tmp_path: that is private to root, and VLC runs as nobody.
    """
    if not FACE_CLIP.exists():
        pytest.skip("tests/data/d18.mp4 missing")
    d = Path(tempfile.mkdtemp(prefix="dfscan-servers-"))
    d.chmod(0o777)  # VLC (as nobody) keeps its config under $HOME, which is this folder
    (d / "clip.mp4").write_bytes(transcode_clip(str(FACE_CLIP), 320, 320, fps=15, gop=15, fmt="mp4"))
    # The GStreamer server plays each client's copy once, from the start: make it long.
    (d / "long.mp4").write_bytes(transcode_clip(str(FACE_CLIP), 320, 320, fps=15, gop=15, fmt="mp4", loops=6))
    for f in d.iterdir():
        f.chmod(0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def service(streams: list[dict], **defaults) -> LiveService:
    """A live service with the tiny test detector; any scored face makes the verdict "fake"."""
    cfg = parse_config({
        "api": {"enabled": False},
        "model": {"detector": "test_tiny", "batch_frames": 4, "max_wait_ms": 30},
        "faces": {"min_face": 40, "det_max_side": 320},
        # a long window: on a loaded machine frames can take seconds to be scored, and samples
        # older than the window no longer count
        "verdict": {"window_s": 60, "fake_above": 0.0, "real_below": 0.0, "min_samples": 1, "emit_interval_s": 5},
        "defaults": {"sample_fps": 2, "stall_s": 1.5, "open_timeout_s": 3, "backoff_initial_s": 0.1,
                     "backoff_max_s": 0.5, **defaults},
        "streams": streams,
    })
    return LiveService(cfg).start()


def metric(svc: LiveService, name: str, stream: str, **labels) -> float:
    want = ",".join([*(f'{k}="{v}"' for k, v in sorted({"stream": stream, **labels}.items()))])
    for line in svc.metrics.render().decode().splitlines():
        if line.startswith(f"{name}{{{want}}}"):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def faces(svc: LiveService, name: str) -> float:
    return metric(svc, "dfscan_stream_faces_total", name)


def _os_threads() -> list[str]:
    """Names of this process's OS threads (Python's, FFmpeg's decoder threads, OpenMP's ...)."""
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{t}/comm").read().strip())
        except OSError:  # ended meanwhile
            pass
    return sorted(names)


def _threads_rss() -> tuple[int, list[str], float]:
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    names = sorted(t.name for t in threading.enumerate() if t.name.startswith("dfscan-"))
    return len(os.listdir("/proc/self/task")), names, rss


def go_live(svc: LiveService, name: str, timeout: float = 30) -> dict:
    """Wait for ``name`` to be live with at least one face scored (a verdict)."""
    wait_for(lambda: svc.describe(name)["state"] == "live" and faces(svc, name) > 0, timeout,
             f"{name} live with faces scored (last error: {svc.describe(name)['last_error']!r})")
    d = svc.describe(name)
    assert d["verdict"] == "fake" and d["frames_sampled"] > 0
    return d


def drill(svc: LiveService, name: str, server, cycles: int = CYCLES) -> list[float]:
    """Kill/restart ``server`` ``cycles`` times; each time the stream must leave "live", come
    back live on a new connection and score faces again. Returns the restart->live seconds."""
    baseline, back = None, []
    for cycle in range(cycles):
        connects = svc.describe(name)["connects"]
        server.stop()
        wait_for(lambda: svc.describe(name)["state"] in ("stalled", "backoff", "connecting"), 15,
                 f"{name} to notice the server died (cycle {cycle})")
        t0 = time.monotonic()
        server.start()
        wait_for(lambda: svc.describe(name)["connects"] > connects and svc.describe(name)["state"] == "live",
                 30, f"{name} live again (cycle {cycle}; last error {svc.describe(name)['last_error']!r})")
        back.append(time.monotonic() - t0)
        scored = faces(svc, name)
        wait_for(lambda: faces(svc, name) > scored, 15, f"{name} verdicts to resume (cycle {cycle})")
        if cycle == 0:
            baseline = _threads_rss()
    # A closed connection's decoder threads end a moment after it: a leak is growth that stays.
    settled = lambda: _threads_rss()[0] <= baseline[0] + 3  # noqa: E731
    end = time.monotonic() + 10
    while not settled() and time.monotonic() < end:
        time.sleep(0.2)
    threads, names, rss = _threads_rss()
    assert names == baseline[1], "service threads changed over the drill"
    assert threads <= baseline[0] + 3, f"threads grew {baseline[0]} -> {threads}: {_os_threads()}"
    assert rss - baseline[2] < 60, f"RSS grew {rss - baseline[2]:.0f} MB over {cycles} cycles"
    assert svc.describe(name)["reconnects"] >= cycles
    return back


def vlc(media: Path, port: int, *extra: str) -> Proc:
    need("cvlc", *(["setpriv"] if os.geteuid() == 0 else []))
    return vlc_rtsp(media / "clip.mp4", port, media / f"vlc-{port}.log", *extra)


def gst_rtsp(media: Path, port: int, lower: str = "tcp") -> Proc:
    need(SYSTEM_PYTHON)
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True)
    if probe.returncode:
        pytest.skip("gst-rtsp-server not installed (python3-gi gir1.2-gst-rtsp-server-1.0 "
                    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad; .ci/run installs them)")
    # 40 s: the server's HOME is the test's folder, so GStreamer scans every installed plugin
    # into a new registry on each start; on a busy 2-core machine that passed 10 s (CI flake).
    return Proc([SYSTEM_PYTHON, str(GST_SERVER), str(port), str(media / "long.mp4"), lower],
                media / f"gst-{port}.log", ready=lambda: listening(port), timeout_s=40)


# ---------------------------------------------------------------- RTSP
def test_rtsp_vlc_auto_falls_back_to_udp_and_survives_restarts(media, caplog):
    """VLC answers 461 to RTSP over TCP: ``auto`` (the default) goes live over UDP without any
    flag, remembers UDP across 5 server crashes, and reports the transport."""
    caplog.set_level(logging.INFO, logger="scanner.live")
    port = free_port()
    server = vlc(media, port).start()
    svc = service([{"name": "cam", "url": f"rtsp://127.0.0.1:{port}/live"}])
    try:
        d = go_live(svc, "cam")
        assert d["transport"] == "udp"

        def fallbacks() -> int:
            return sum("RTSP over TCP failed" in r.getMessage() and "trying UDP" in r.getMessage()
                       for r in caplog.records)

        tried_tcp = fallbacks()
        assert tried_tcp >= 1  # TCP was asked for first, refused, then UDP
        assert metric(svc, "dfscan_stream_transport_info", "cam", transport="udp") == 1.0
        assert metric(svc, "dfscan_stream_transport_info", "cam", transport="tcp") == 0.0
        drill(svc, "cam", server)
        assert svc.describe("cam")["transport"] == "udp"
        # 5 reconnects went straight to the transport that worked: TCP never asked for again
        assert fallbacks() == tried_tcp
    finally:
        svc.stop()
        server.stop()


def test_dfscan_watch_goes_live_on_udp_only_server_without_flags(media):
    """The issue's acceptance check: ``dfscan watch rtsp://...`` against VLC, no transport flag."""
    import sys

    port = free_port()
    server = vlc(media, port).start()
    try:
        out = subprocess.run([sys.executable, "-c", "import sys; from scanner.cli import main; sys.exit(main())",
                              "watch", f"rtsp://127.0.0.1:{port}/live", "--detector", "test_tiny",
                              "--duration", "8"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env={**os.environ, "COLUMNS": "160", "OMP_NUM_THREADS": "1"})
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-2]  # the final table's row for the stream
    assert "s1" in last and " live " in last, out.stdout[-2000:]


def test_rtsp_vlc_explicit_udp_and_refused_tcp(media):
    """``rtsp_transport: udp`` works; ``tcp`` against a UDP-only server fails with a reason that says so."""
    port = free_port()
    server = vlc(media, port).start()
    udp = LiveSource("u", f"rtsp://127.0.0.1:{port}/live", SourceSettings(rtsp_transport="udp", open_timeout_s=3))
    tcp = LiveSource("t", f"rtsp://127.0.0.1:{port}/live", SourceSettings(rtsp_transport="tcp", open_timeout_s=3,
                                                                         max_retries=0))
    try:
        udp.start()
        wait_for(lambda: udp.stats.sampled >= 2, 20, "UDP frames")
        assert udp.describe()["transport"] == "udp"
        # only now: while VLC prepares the stream it may answer 5XX, and with max_retries=0
        # that first answer (not the 461 this test is about) would stop the source
        tcp.start()
        wait_for(lambda: tcp.state == "stopped", 15, "TCP to be refused")
        assert tcp.stats.connects == 0 and tcp.describe()["transport"] is None  # never went live
        assert "refused this transport" in tcp.stats.last_error and "461" in tcp.stats.last_error
        assert "rtsp_transport: auto" in tcp.stats.last_error
    finally:
        udp.stop(), tcp.stop()
        server.stop()


def test_rtsp_gstreamer_tcp_interleaved_and_http_tunnel(media):
    """gst-rtsp-server offers only TCP (UDP gets 461): ``auto`` stays on TCP, ``http`` tunnelling
    works (needs ``http`` in the protocol whitelist), explicit ``udp`` is refused; drill over TCP."""
    port = free_port()
    server = gst_rtsp(media, port, "tcp").start()
    url = f"rtsp://127.0.0.1:{port}/live"
    svc = service([{"name": "tcp", "url": url}, {"name": "tunnel", "url": url, "rtsp_transport": "http"},
                   {"name": "udp", "url": url, "rtsp_transport": "udp", "max_retries": 0}])
    try:
        assert go_live(svc, "tcp")["transport"] == "tcp"
        assert go_live(svc, "tunnel")["transport"] == "http"
        assert metric(svc, "dfscan_stream_transport_info", "tunnel", transport="http") == 1.0
        wait_for(lambda: svc.describe("udp")["state"] == "stopped", 15, "udp to be refused")
        assert "461" in svc.describe("udp")["last_error"]
        drill(svc, "tcp", server)
        assert svc.describe("tcp")["transport"] == "tcp"
    finally:
        svc.stop()
        server.stop()


def test_rtsp_auto_renegotiates_when_the_server_changes(media, caplog):
    """The camera behind a URL is replaced: VLC (UDP only) -> gst-rtsp-server (TCP only) on the
    same port. ``auto`` remembered UDP, gets 461 for it, switches to TCP and stays live."""
    caplog.set_level(logging.INFO, logger="scanner.live")
    port = free_port()
    first, second = vlc(media, port), gst_rtsp(media, port, "tcp")
    first.start()
    svc = service([{"name": "cam", "url": f"rtsp://127.0.0.1:{port}/live"}])
    try:
        assert go_live(svc, "cam")["transport"] == "udp"
        connects = svc.describe("cam")["connects"]
        first.stop()
        second.start()
        wait_for(lambda: svc.describe("cam")["connects"] > connects and svc.describe("cam")["state"] == "live",
                 30, "live again over TCP")
        scored = faces(svc, "cam")
        wait_for(lambda: faces(svc, "cam") > scored, 15, "faces over TCP")
        assert svc.describe("cam")["transport"] == "tcp"
        assert metric(svc, "dfscan_stream_transport_info", "cam", transport="tcp") == 1.0
        assert metric(svc, "dfscan_stream_transport_info", "cam", transport="udp") == 0.0
        assert any("RTSP over UDP failed" in r.getMessage() and "trying TCP" in r.getMessage()
                   for r in caplog.records)
    finally:
        svc.stop()
        first.stop()
        second.stop()


def test_rtsp_credentials_on_real_server_never_leak(media, caplog):
    """VLC requiring a user/password: the right one connects, the wrong one is refused with a
    clear reason, and neither password shows up in logs, metrics, /streams or errors."""
    from scanner.live.server import ApiServer

    caplog.set_level(logging.DEBUG)
    good, bad = "s3cret-Pw-4417", "wr0ng-Pw-9932"
    port = free_port()
    server = vlc(media, port, "--sout-rtsp-user", "viewer", "--sout-rtsp-pwd", good).start()
    svc = service([{"name": "ok", "url": f"rtsp://viewer:{good}@127.0.0.1:{port}/live"},
                   {"name": "denied", "url": f"rtsp://viewer:{bad}@127.0.0.1:{port}/live"}])
    token = "t0ken-for-server-tests-0123456789"
    api = ApiServer(svc, "127.0.0.1", 0, token).start()
    try:
        assert go_live(svc, "ok")["transport"] == "udp"
        wait_for(lambda: svc.describe("denied")["errors"] >= 2, 20, "denied to fail twice")
        err = svc.describe("denied")["last_error"]
        assert "401" in err or "nauthorized" in err, err
        assert svc.describe("denied")["transport"] is None  # refused before any transport was tried
        import urllib.request

        texts = [json.dumps(svc.describe()), svc.metrics.render().decode(), caplog.text]
        for path in ("/streams", "/streams/ok", "/streams/denied", "/metrics"):
            req = urllib.request.Request(f"http://127.0.0.1:{api.port}{path}",
                                         headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                texts.append(r.read().decode())
        joined = "\n".join(texts)
        for secret in (good, bad):
            assert secret not in joined
        assert "***@127.0.0.1" in json.dumps(svc.describe())
    finally:
        api.stop()
        svc.stop()
        server.stop()


# ---------------------------------------------------------------- RTMP
def test_rtmp_nginx_and_restarts(media, tmp_path):
    """nginx-rtmp fed by ffmpeg: ``rtmp://127.0.0.1:PORT/live/cam`` goes live, survives 5 crashes."""
    module = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
    need("nginx", "ffmpeg", module)
    port = free_port()
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"load_module {module};\n"
        f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/logs/error.log warn;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n"
        "  application live { live on; record off; wait_key on; wait_video on; } } }\n")
    nginx = Proc(["nginx", "-p", str(tmp_path), "-e", str(tmp_path / "logs" / "error.log"), "-c", str(conf)],
                 tmp_path / "nginx.log", ready=lambda: listening(port))
    feed = Proc(["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(media / "clip.mp4"),
                 "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/cam"], tmp_path / "ffmpeg.log")
    server = Group(nginx, feed).start()
    svc = service([{"name": "rtmp", "url": f"rtmp://127.0.0.1:{port}/live/cam"}])
    try:
        assert go_live(svc, "rtmp")["transport"] is None  # not RTSP
        drill(svc, "rtmp", server)
    finally:
        svc.stop()
        server.stop()


# ---------------------------------------------------------------- HLS
def _media_sequence(playlist: Path) -> int:
    try:
        for line in playlist.read_text().splitlines():
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return -1


class HlsOrigin:
    """ffmpeg writing a rolling live playlist (3 segments of 1 s) + the HTTP server in front."""

    def __init__(self, media: Path, folder: Path):
        self.folder = folder
        self.http = HttpDir(folder)
        self.feed = Proc(["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(media / "clip.mp4"),
                          "-c", "copy", "-f", "hls", "-hls_time", "1", "-hls_list_size", "3",
                          "-hls_flags", "delete_segments", str(folder / "live.m3u8")],
                         folder.parent / "ffmpeg-hls.log", ready=lambda: _media_sequence(self.playlist) >= 0,
                         timeout_s=15)

    @property
    def playlist(self) -> Path:
        return self.folder / "live.m3u8"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}/live.m3u8"

    def start(self) -> "HlsOrigin":
        shutil.rmtree(self.folder, ignore_errors=True)  # a restarted origin starts a new playlist
        self.folder.mkdir()
        self.http.start()
        self.feed.start()
        return self

    def stop(self) -> None:
        self.feed.stop()
        self.http.stop()


def test_hls_live_playlist_rolls_over_and_restarts(media, tmp_path):
    """A live HLS playlist whose segments are deleted as new ones arrive, read without a
    reconnect across the rollover; then 5 origin crashes."""
    need("ffmpeg")
    origin = HlsOrigin(media, tmp_path / "hls").start()
    svc = service([{"name": "hls", "url": origin.url}])
    try:
        go_live(svc, "hls")
        seq0, d0 = _media_sequence(origin.playlist), svc.describe("hls")
        # every segment listed when we connected gets deleted while we keep reading
        wait_for(lambda: _media_sequence(origin.playlist) >= seq0 + 4, 20, "playlist to roll over")
        scored = faces(svc, "hls")
        wait_for(lambda: faces(svc, "hls") > scored, 10, "faces after the rollover")
        d1 = svc.describe("hls")
        assert d1["connects"] == d0["connects"] and d1["state"] == "live"
        assert d1["frames_decoded"] > d0["frames_decoded"] + 15 * 3  # > the 3 segments seen at connect
        drill(svc, "hls", origin)
    finally:
        svc.stop()
        origin.stop()


# ---------------------------------------------------------------- SRT
def test_srt_via_srt_live_transmit(media, tmp_path):
    """SRT from srt-live-transmit (relaying an ffmpeg MPEG-TS feed). PyAV's bundled FFmpeg has no
    SRT: then ``srt://`` must stop at once with a specific reason, and the documented relay
    (``srt-live-transmit srt://... udp://...``, dfscan reading UDP) must work through 3 crashes
    of the SRT server."""
    need("srt-live-transmit", "ffmpeg")
    feed_port, srt_port, out_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    feed = Proc(["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(media / "clip.mp4"), "-c", "copy",
                 "-f", "mpegts", f"udp://127.0.0.1:{feed_port}?pkt_size=1316"], tmp_path / "ffmpeg.log")
    srt_server = Proc(["srt-live-transmit", "-q", f"udp://127.0.0.1:{feed_port}",
                       f"srt://127.0.0.1:{srt_port}?mode=listener"], tmp_path / "slt-server.log")
    server = Group(srt_server, feed).start()
    relay = None
    srt = LiveSource("srt", f"srt://127.0.0.1:{srt_port}", SourceSettings(open_timeout_s=3, max_retries=2))
    try:
        srt.start()
        wait_for(lambda: srt.state in ("stopped", "live"), 20, "srt:// to go live or be refused")
        if srt.state == "live":  # an FFmpeg with libsrt: read it directly
            srt.stop()
            svc = service([{"name": "srt", "url": f"srt://127.0.0.1:{srt_port}"}])
        else:
            assert srt.stats.connects == 0 and srt.stats.reconnects == 0  # not retried
            assert "no 'srt' protocol" in srt.stats.last_error and "srt-live-transmit" in srt.stats.last_error
            relay = Proc(["srt-live-transmit", "-q", "-a:yes", f"srt://127.0.0.1:{srt_port}?mode=caller",
                          f"udp://127.0.0.1:{out_port}"], tmp_path / "slt-relay.log").start()
            svc = service([{"name": "srt", "url": f"udp://127.0.0.1:{out_port}"}])
        try:
            go_live(svc, "srt")
            # Three cycles (CI time): the thread/RSS baseline is taken after the first, so a
            # decoder's threads leaked on each UDP reconnect (2+ per connection) still show.
            drill(svc, "srt", server, cycles=3)
        finally:
            svc.stop()
    finally:
        srt.stop()
        if relay is not None:
            relay.stop()
        server.stop()


class SilentRtsp:
    """An RTSP server that accepts every transport (OPTIONS/DESCRIBE/SETUP/PLAY all 200) and
    then never sends a packet: media blocked on the way, as by a firewall dropping RTP."""

    SDP = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
          "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n"

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.transports: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self._answer(conn)
        except OSError:
            pass  # the client hung up

    def _answer(self, conn):
        with conn, conn.makefile("rb") as f:
            while True:
                lines = []
                while (line := f.readline()) not in (b"\r\n", b"\n", b""):
                    lines.append(line.decode().strip())
                if not lines:
                    return
                hdr = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                body, extra = "", ""
                if lines[0].startswith("DESCRIBE"):
                    body, extra = self.SDP, "Content-Type: application/sdp\r\n"
                elif lines[0].startswith("SETUP"):
                    self.transports.append(hdr.get("transport", ""))
                    extra = f"Transport: {hdr.get('transport', '')};server_port=40000-40001\r\nSession: 1234\r\n"
                conn.sendall((f"RTSP/1.0 200 OK\r\nCSeq: {hdr.get('cseq', '0')}\r\n{extra}"
                              f"Content-Length: {len(body)}\r\n\r\n{body}").encode())

    def close(self):
        self.sock.close()


def test_rtsp_auto_times_out_over_both_transports_with_reason():
    """Media that never arrives: ``auto`` gives TCP its timeout, then tries UDP, and the error
    names both attempts without the password."""
    srv = SilentRtsp()
    src = LiveSource("mute", f"rtsp://u:pw-never-shown@127.0.0.1:{srv.port}/live",
                     SourceSettings(open_timeout_s=1, max_retries=0))
    try:
        src.start()
        wait_for(lambda: src.state == "stopped", 15, "both transports to time out")
        err = src.stats.last_error
        assert "over TCP" in err and "over UDP" in err and "timeout" in err.lower(), err
        assert "pw-never-shown" not in err
        assert [t.split(";")[0] for t in srv.transports] == ["RTP/AVP/TCP", "RTP/AVP/UDP"]  # TCP, then UDP
    finally:
        src.stop()
        srv.close()


def test_rtsp_http_tunnel_whitelist():
    """``http`` tunnelling adds only ``http`` to an RTSP source's protocol whitelist."""
    from scanner.live.urls import open_options, parse_source

    src = parse_source("rtsp://cam/x")
    assert "http" not in open_options(src, 5, "tcp")["protocol_whitelist"].split(",")
    assert "http" in open_options(src, 5, "http")["protocol_whitelist"].split(",")
    assert {"https", "tls"} <= set(open_options(src, 5, "https")["protocol_whitelist"].split(","))
    with pytest.raises(Exception, match="rtsp_transport"):
        open_options(src, 5, "auto")  # resolved by the source, never passed to FFmpeg
