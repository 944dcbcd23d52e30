"""Stream URL credentials beyond ``user:password@``: secrets in the query string.

Many IP cameras take their login in the query (``?usr=admin&pwd=...``, Foscam CGI;
``?user=...&password=...``), SRT a ``?passphrase=``, signed CDN URLs a signature. They
were shown in /streams, the logs and every FFmpeg error as given, since only
``token=``/``password=``-like names were masked.
"""
from __future__ import annotations

import logging
import socket

import pytest

from scanner.live.source import LiveSource, SourceSettings
from scanner.live.urls import mask_credentials, mask_text, parse_source

SECRET = "Sup3r-Secret-9"


@pytest.mark.parametrize("query", [f"usr=admin&pwd={SECRET}", f"user=admin&passwd={SECRET}",
                                   f"passphrase={SECRET}&streamid=x", f"api_key={SECRET}",
                                   f"X-Amz-Signature={SECRET}", f"access_token={SECRET}&q=1"])
def test_query_credentials_masked(query):
    src = parse_source(f"http://127.0.0.1:1/cgi-bin/CGIStream.cgi?cmd=GetMJStream&{query}")
    assert SECRET not in src.masked and "cmd=GetMJStream" in src.masked
    assert SECRET not in src.redact(f"Server returned 404 for {SECRET}")
    assert SECRET not in mask_text(f"Connection refused: 'http://other/seg.ts?{query}'")
    assert mask_credentials("http://h/x?q=keyframe&n=1") == "http://h/x?q=keyframe&n=1"  # others kept


def test_query_password_not_in_stream_error_or_log(caplog):
    caplog.set_level(logging.DEBUG)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    src = LiveSource("cam", f"rtsp://127.0.0.1:{port}/live?user=admin&pwd={SECRET}",
                     SourceSettings(open_timeout_s=1, max_retries=0))
    src.start()
    src._thread.join(10)
    info = src.describe()
    assert info["state"] == "stopped" and info["errors"] == 1 and info["last_error"]
    assert SECRET not in repr(info) and SECRET not in caplog.text
