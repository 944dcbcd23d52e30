"""Drill of the live service: stream names, the JSONL sink under logrotate, a changed token file.

Each test is a regression of a wrong answer given without an error: a look-alike stream
name, events written where nobody reads them, a revoked token still accepted.
"""
from __future__ import annotations

import httpx
import pytest

from scanner.live.config import StreamConfig
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
