"""Shared fixtures: synthetic clips made with PyAV, paths to real footage."""
from __future__ import annotations

import os
import socket
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SAMPLES = ROOT / "scanner" / "samples"
SHARED = ROOT.parent / "shared"  # CI clones the repo with shared/ beside it

torch.set_num_threads(2)
# Engine caches of the tests live in a throw-away folder, never the user's cache.
os.environ.setdefault("DFSCAN_CACHE_DIR", tempfile.mkdtemp(prefix="dfscan-test-cache-"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module's tests (the CI box has 2 shared cores; tiny models
    gain nothing from more), restored after. Use: ``pytestmark = pytest.mark.usefixtures(
    "one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def free_port(kind=socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str = "condition", step: float = 0.05):
    """Poll ``pred`` until it returns something truthy (returned) or fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def smallest_clip() -> str:
    """The smallest real face clip of tests/data (committed with the repo)."""
    return str(min(DATA.glob("*.mp4"), key=lambda p: p.stat().st_size))


def make_video(path: Path, frames: int = 30, size=(160, 120), fps: int = 25, gop: int = 12,
               codec: str = "libx264", rotation: int | None = None, pattern=None,
               pts_step=None, sar: Fraction | None = None, fmt: str | None = None,
               options: dict | None = None) -> Path:
    """Write a synthetic clip whose frame i has red channel = i (mod 256).

    ``pattern(i) -> HxWx3 uint8`` overrides the content; ``pts_step(i)`` gives a
    variable frame rate (pts increments in 1/fps units); ``sar``: non-square pixels;
    ``fmt``: container format (default: by extension); ``options``: encoder options.
    """
    w, h = size
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = options if options is not None else {"g": str(gop), "bf": "2"} if codec == "libx264" else {}
        if rotation is not None:
            s.set_display_rotation(rotation)
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        pts = 0
        for i in range(frames):
            img = pattern(i) if pattern else _default_pattern(i, w, h)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_step:
                f.pts = pts
                f.time_base = Fraction(1, fps)
                pts += pts_step(i)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _default_pattern(i: int, w: int, h: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (i * 8) % 256  # frame id, robust to codec noise: 8 levels per step
    img[: h // 4, : w // 4, 1] = 255  # top-left marker (orientation checks)
    return img


def frame_id(img: np.ndarray) -> int:
    """Inverse of the default pattern's red channel (centre region)."""
    h, w = img.shape[:2]
    return int(round(float(img[h // 2 - 4: h // 2 + 4, w // 2 - 4: w // 2 + 4, 0].mean()) / 8))


@pytest.fixture(scope="session")
def real_clips() -> list[Path]:
    clips = sorted(DATA.glob("d*.mp4"))
    assert clips, "tests/data must hold the real face clips"
    return clips


@pytest.fixture(scope="session")
def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def start_http(handler, ssl_context=None) -> tuple:
    """A ThreadingHTTPServer for ``handler`` on a free loopback port, serving in a daemon
    thread: ``(server, port)``; stop it with :func:`stop_http`. With ``ssl_context`` it serves
    HTTPS (the handshake runs in accept: a client refusing the certificate sends no request)."""
    import threading
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return httpd, httpd.server_address[1]


def routes_handler(routes: dict, requests: list):
    """A request handler answering GET ``routes[path] = (content type, body)`` (404 elsewhere)
    and appending ``(path, Authorization header)`` of every request to ``requests``."""
    from http.server import BaseHTTPRequestHandler

    class Routes(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            requests.append((self.path, self.headers.get("Authorization")))
            ctype, body = routes.get(self.path, ("text/plain", None))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    return Routes


def stop_http(httpd) -> None:
    httpd.shutdown()
    httpd.server_close()


def drip_headers_handler():
    """An HTTP handler answering any GET or POST with its status line, then one header byte
    every 0.2 s for 30 s: each read well within a per-read timeout, the response never whole."""
    from http.server import BaseHTTPRequestHandler

    class DripHeaders(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(150):
                    self.wfile.flush()
                    time.sleep(0.2)
                    self.wfile.write(b"a")
            except OSError:
                pass  # the client hung up

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

    return DripHeaders
