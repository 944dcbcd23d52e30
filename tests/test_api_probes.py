"""The probes answer while every worker thread of the API waits on a stream removal.

DELETE /streams/{name} runs in Starlette's thread pool (40 threads) and waits for the stream's
decode thread, up to open_timeout + 2 * stall_s + 5 s when the stream is connecting. Removing
many connecting streams at once (an orchestrator reconciling a dead site) filled the pool, and
/healthz and /readyz, run in the same pool, waited behind them: a liveness probe timed out.
Also: a bearer token that is not ASCII.
"""
from __future__ import annotations

import threading
import time

import httpx

from test_api import _serve


def test_probes_answer_while_removals_fill_the_thread_pool():
    svc, server = _serve(None, limit_concurrency=200)
    base = f"http://127.0.0.1:{server.port}"
    release, waiting = threading.Event(), []

    def slow_remove(name):  # a removal waiting on a decode thread stuck in FFmpeg's open
        waiting.append(name)
        release.wait(20)

    svc.remove_stream = slow_remove
    deletes = [threading.Thread(target=httpx.delete, args=(f"{base}/streams/s{i}",), kwargs={"timeout": 30})
               for i in range(60)]
    try:
        for t in deletes:
            t.start()
        end = time.monotonic() + 10
        while len(waiting) < 40 and time.monotonic() < end:  # the pool is full
            time.sleep(0.05)
        assert len(waiting) >= 40
        for path in ("/healthz", "/readyz"):
            assert httpx.get(base + path, timeout=2).status_code == 200
    finally:
        release.set()
        for t in deletes:
            t.join(30)
        server.stop()
        svc.stop()


def test_non_ascii_token_accepted():
    """A token with a non-ASCII character (UTF-8 from a token file) was refused on every request."""
    token = "pässwörd-token-0123456789"
    svc, server = _serve(token)
    try:
        url = f"http://127.0.0.1:{server.port}/streams"
        assert httpx.get(url, headers={"Authorization": b"Bearer " + token.encode()}).status_code == 200
        assert httpx.get(url, headers={"Authorization": b"Bearer " + token.encode("latin-1")}).status_code == 401
    finally:
        server.stop()
        svc.stop()


def test_token_ending_in_a_utf8_byte_latin1_calls_whitespace_accepted():
    """The header's latin-1 text was str.strip()ped: "à" is UTF-8 C3 A0, and A0 (NBSP in
    latin-1) was stripped, so a token ending in "à" was refused on every request."""
    token = "token-0123456789-voilà"
    svc, server = _serve(token)
    try:
        url = f"http://127.0.0.1:{server.port}/streams"
        assert httpx.get(url, headers={"Authorization": b"Bearer " + token.encode()}).status_code == 200
        assert httpx.get(url, headers={"Authorization": b"Bearer " + token.encode()[:-1]}).status_code == 401
    finally:
        server.stop()
        svc.stop()


def test_healthz_fails_while_an_inference_batch_hangs():
    """A detector or device that hangs inside a batch (a wedged GPU, a deadlocked engine) left
    the worker thread alive: /healthz answered ok forever while no stream was scored, so no
    liveness probe ever restarted the service."""
    import numpy as np
    from pathlib import Path

    from scanner.live.batcher import FrameResult
    from scanner.live.config import parse_config
    from scanner.live.server import ApiServer
    from scanner.live.service import LiveService

    release, entered = threading.Event(), threading.Event()

    def hanging(frames):
        entered.set()
        release.wait(30)
        return [FrameResult(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
                for _ in frames]

    clip = Path(__file__).parent / "data" / "d1.mp4"
    cfg = parse_config({"api": {"port": 0}, "model": {"detector": "test_tiny", "batch_timeout_s": 0.5},
                        "allow_files": True, "streams": [{"name": "cam", "url": str(clip)}]})
    svc = LiveService(cfg, analyzer_factory=lambda dev: hanging).start()
    server = ApiServer(svc, "127.0.0.1", 0, None, api=cfg.api).start()
    try:
        assert entered.wait(10), "no batch reached the detector"
        time.sleep(0.7)
        r = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert (r.status_code, r.json()) == (503, {"status": "unhealthy"})
        release.set()  # the batch ends: healthy again
        end = time.monotonic() + 5
        while httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < end
            time.sleep(0.05)
    finally:
        release.set()
        server.stop()
        svc.stop()
