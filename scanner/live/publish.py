"""Loopback live publisher: a video clip served as an endless MPEG-TS over HTTP.

Used by the tests and ``bench/live_capacity.py`` to exercise the live path with a
real server, real sockets and real H.264 without an ffmpeg binary: each HTTP
client gets its own PyAV ``mpegts`` muxer fed with the clip's packets (no
re-encoding) paced to real time, looping with continuous timestamps.
:meth:`HttpTsPublisher.stop` drops every connection (clients see EOF, like a
crashed camera); :meth:`start` again serves on the same port.

``python -m scanner.live.publish CLIP [--port P] [--size 1280x720]`` runs one.

:class:`ServerProcess` runs an *external* server (VLC, nginx, ffmpeg...) the same
way for the real-server tests and the benchmark: own process group, loopback,
``stop()`` is a SIGKILL (a crash), ``start()`` again restarts it.
"""
from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np


def transcode_clip(path: str, width: int, height: int, fps: int = 25, seconds: float | None = None,
                   gop: int = 25, fmt: str = "mpegts", loops: int = 1) -> bytes:
    """Re-encode ``path`` to H.264 ``width x height`` (letterboxed) bytes in container ``fmt``.

    Used to make e.g. 720p test streams from the small portrait clips, or MP4
    files (``fmt="mp4"``) for external servers. No B-frames (``ultrafast``), a
    keyframe every ``gop`` frames; the source frames are repeated ``loops`` times
    (input frame rate ignored: frame ``n`` is shown at ``n / fps`` s).
    """
    buf = io.BytesIO()
    limit = None if seconds is None else int(seconds * fps)
    with av.open(path) as inp:
        frames = [_letterbox(fr.to_ndarray(format="rgb24"), width, height)
                  for _, fr in zip(range(limit) if limit is not None else iter(int, 1), inp.decode(video=0))]
    with av.open(buf, "w", format=fmt) as out:
        st = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "tune": "zerolatency"})
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.codec_context.gop_size = gop
        # BT.709, tagged: untagged, swscale's BT.601 encoding of a 720p stream would be read
        # back as BT.709 (what players and dfscan assume for HD), with shifted colours.
        cc = st.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = 1
        cc.color_range = 1
        for n, img in enumerate(frames * max(1, loops)):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
            vf.colorspace, vf.color_range = 1, 1
            vf.pts, vf.time_base = n, Fraction(1, fps)
            for p in st.encode(vf):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return buf.getvalue()


def _letterbox(img: np.ndarray, width: int, height: int) -> np.ndarray:
    canvas = np.zeros((height, width, 3), np.uint8)
    s = min(width / img.shape[1], height / img.shape[0])
    small = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
        width=int(img.shape[1] * s) // 2 * 2, height=int(img.shape[0] * s) // 2 * 2).to_ndarray()
    y0, x0 = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return canvas


class _Clip:
    """Video packets of a clip (file path or in-memory container bytes), kept in memory."""

    def __init__(self, src: str | bytes):
        self._c = av.open(io.BytesIO(src) if isinstance(src, bytes) else src)
        self.stream = self._c.streams.video[0]
        self.packets = [p for p in self._c.demux(self.stream) if p.size and p.pts is not None]
        if len(self.packets) < 2:
            raise ValueError("clip has fewer than 2 video packets")
        pts = sorted(p.pts for p in self.packets)
        self.start = pts[0]
        self.period = pts[-1] - pts[0] + (pts[1] - pts[0])  # one loop, in stream time_base units
        self.time_base = self.stream.time_base


class HttpTsPublisher:
    """Serves ``clip`` as a live MPEG-TS at ``http://127.0.0.1:PORT/live.ts``."""

    def __init__(self, clip: str | bytes, host: str = "127.0.0.1", port: int = 0):
        self.clip = _Clip(clip)
        self.host, self.port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self.paused = threading.Event()  # set: keep connections open but send nothing (a hung camera)
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/live.ts"

    def start(self) -> "HttpTsPublisher":
        pub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                pub.connections += 1
                try:
                    pub._serve(self.wfile)
                except (OSError, av.error.FFmpegError):
                    pass  # client went away, or we are stopping

        self._stop = threading.Event()
        httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                         name="publisher", daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket and end every client connection."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _serve(self, wfile) -> None:
        with av.open(wfile, "w", format="mpegts", buffer_size=4096,
                     container_options={"flush_packets": "1"}) as out:
            mux_loop(out, self.clip, self._stop, self.paused)


def mux_loop(out, clip: _Clip, stop: threading.Event, paused: threading.Event) -> None:
    """Mux ``clip`` into ``out`` forever, paced to real time, until ``stop`` is set."""
    ost = out.add_stream_from_template(clip.stream)
    t0, loop = time.monotonic(), 0
    while not stop.is_set():
        off = loop * clip.period
        for p in clip.packets:
            while paused.is_set():
                if stop.wait(0.05):
                    return
                t0 += 0.05  # resume where we paused, not with a burst
            delay = t0 + float((p.pts - clip.start + off) * clip.time_base) - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            q = av.Packet(bytes(p))
            q.pts, q.dts = p.pts + off, (p.dts + off) if p.dts is not None else None
            q.time_base, q.is_keyframe, q.stream = clip.time_base, p.is_keyframe, ost
            out.mux(q)
        loop += 1


class UdpTsPublisher:
    """Sends ``clip`` as live MPEG-TS datagrams to ``udp://host:port`` (the reader listens)."""

    def __init__(self, clip: str | bytes, port: int, host: str = "127.0.0.1"):
        self.clip = _Clip(clip)
        self.url = f"udp://{host}:{port}"
        self._stop = threading.Event()
        self.paused = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "UdpTsPublisher":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher-udp", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with av.open(f"{self.url}?pkt_size=1316", "w", format="mpegts") as out:
            mux_loop(out, self.clip, self._stop, self.paused)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run as ``nobody`` when we are root (VLC refuses to run as root)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv]


class ServerProcess:
    """An external server process; :meth:`start` waits until ``ready()`` (bounded)."""

    def __init__(self, argv: list[str], log: str | Path, ready: Callable[[], bool] | None = None,
                 timeout_s: float = 10.0):
        self.argv, self.log, self.ready, self.timeout_s = argv, Path(log), ready, timeout_s
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        with open(self.log, "ab") as out:  # HOME: VLC writes its config there (nobody has none)
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env={**os.environ, "HOME": str(self.log.parent)})
        end = time.monotonic() + self.timeout_s
        while self.ready is not None and not (self.proc.poll() is None and self.ready()):
            if time.monotonic() > end or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.argv[0]} did not start: {self.log.read_text(errors='replace')[-1500:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGKILL the whole process group (the server and anything it spawned)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def vlc_rtsp(clip: str | Path, port: int, log: str | Path, *extra: str) -> ServerProcess:
    """VLC serving ``clip`` in a loop at ``rtsp://127.0.0.1:PORT/live`` (RTP over UDP only:
    VLC answers 461 to TCP interleaving). ``clip`` must be readable by ``nobody`` under root.

    ``gather`` keeps one RTP session across loops: without it VLC ends the session (RTCP
    BYE, an EOF for the client) each time the clip starts over. A short file cache: with
    VLC's default (1 s) every loop starts with a 1 s burst, so a 4 s clip streams at ~1.3x.
    """
    argv = unprivileged(["cvlc", "-q", "--no-audio", "--file-caching=50", str(clip), "--loop", "--sout-keep",
                         "--sout", f"#gather:rtp{{sdp=rtsp://127.0.0.1:{port}/live}}", *extra])
    return ServerProcess(argv, log, ready=lambda: port_open(port))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--size", default=None, help="re-encode to WxH, e.g. 1280x720")
    a = ap.parse_args()
    src = a.clip
    if a.size:
        w, h = (int(v) for v in a.size.lower().split("x"))
        src = transcode_clip(a.clip, w, h)
    pub = HttpTsPublisher(src, port=a.port).start()
    print(f"publishing {a.clip} at {pub.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pub.stop()


if __name__ == "__main__":
    main()
