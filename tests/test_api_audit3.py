"""Third audit of the ``dfscan serve`` HTTP API, against a running service on loopback.

* Past the process's thread limit (a container's pids.max) ``POST /streams`` was a text/plain
  500, yet the stream stayed listed as ``connecting`` with no decode thread: its name taken
  (409 on a retry), a ``DELETE`` of it a 500 ("cannot join thread before it is started") that
  left its metric series exported for good.
* Any unexpected exception in a route was Starlette's text/plain "Internal Server Error",
  where every error of the API is ``{"error": ...}`` JSON.
* Each unknown key of a ``POST /streams`` body was an error listed on its own: a body within
  ``api.max_body_bytes`` made hundreds of thousands of them, seconds on the event loop the
  probes run on, and an answer many times the body's size.
"""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from scanner.live.config import ConfigError, parse_config
from test_api import AUTH, TOKEN, _serve

CAM = {"name": "cam", "url": "rtsp://127.0.0.1:1/x"}


@pytest.fixture()
def api():
    svc, server = _serve(TOKEN)
    try:
        yield svc, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
        svc.stop()


@pytest.fixture()
def no_decode_threads(monkeypatch):
    """Thread creation failing for stream decode threads only, as at a pids.max limit."""
    real = threading.Thread.start

    def start(self):
        if self.name.startswith("dfscan-src-"):
            raise RuntimeError("can't start new thread")
        return real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return monkeypatch


def test_a_stream_whose_thread_cannot_start_is_not_left_behind(api, no_decode_threads):
    svc, base = api
    r = httpx.post(f"{base}/streams", headers=AUTH, json=CAM)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert "thread" in r.json()["error"] and "cam" in r.json()["error"]
    assert svc.names() == []
    assert httpx.get(f"{base}/streams/cam", headers=AUTH).status_code == 404
    metrics = httpx.get(f"{base}/metrics", headers=AUTH).text
    assert 'stream="cam"' not in metrics
    assert "dfscan_stream_configured 0.0" in metrics
    no_decode_threads.undo()  # threads again: the name is free, and the stream comes and goes
    assert httpx.post(f"{base}/streams", headers=AUTH, json=CAM).status_code == 201
    r = httpx.delete(f"{base}/streams/cam", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    assert 'stream="cam"' not in httpx.get(f"{base}/metrics", headers=AUTH).text


def test_an_unexpected_failure_is_a_json_500_that_quotes_no_secret(api, monkeypatch):
    svc, base = api

    def broken(name=None):
        raise RuntimeError("rtsp://admin:s3cr3t-pass@cam/x")

    monkeypatch.setattr(svc, "describe", broken)
    r = httpx.get(f"{base}/streams", headers=AUTH)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert "RuntimeError" in r.json()["error"] and "s3cr3t" not in r.text
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"


def test_a_body_of_many_unknown_keys_is_one_error(api):
    svc, base = api
    keys = 60000 // 14  # within the default api.max_body_bytes (64 KiB)
    body = json.dumps({**CAM, **{f"k{i:08x}": 0 for i in range(keys)}}, separators=(",", ":")).encode()
    assert len(body) < 65536
    r = httpx.post(f"{base}/streams", headers={**AUTH, "content-type": "application/json"}, content=body)
    assert r.status_code == 400
    details = r.json()["details"]
    assert len(details) == 1 and "at most" in details[0]["msg"], details[:3]
    assert len(r.content) < 2048  # it was 434 KB for a 64 KB body
    assert svc.names() == []
    # A few unknown keys are still named one by one (a typo in a config or a body).
    r = httpx.post(f"{base}/streams", headers=AUTH, json={**CAM, "sample_pfs": 1})
    assert r.status_code == 400
    assert [d["loc"] for d in r.json()["details"]] == [["body", "sample_pfs"]]
    with pytest.raises(ConfigError, match="sample_pfs"):
        parse_config({"streams": [{**CAM, "sample_pfs": 1}]})
