"""An HTTP stream with ``user:password@``: its Authorization header never follows a redirect.

FFmpeg re-sends the ``headers`` option to wherever a redirect points, so a camera (or an open
redirect on it) answering 302 to another host used to hand that host the stream's password.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from scanner.live.source import LiveSource, SourceSettings
from conftest import wait_for


def _server(handle) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            handle(self)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return srv


def _reply(h, code: int, **headers: str) -> None:
    h.send_response(code)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", "0")
    h.end_headers()


def test_credentials_not_sent_across_redirect():
    seen: list[tuple[str, str | None]] = []
    other = _server(lambda h: (seen.append(("other", h.headers.get("Authorization"))), _reply(h, 404)))
    loc = f"http://127.0.0.1:{other.server_address[1]}/x.mp4"
    cam = _server(lambda h: (seen.append(("cam", h.headers.get("Authorization"))), _reply(h, 302, Location=loc)))
    src = LiveSource("cam", f"http://viewer:s3cret-pw@127.0.0.1:{cam.server_address[1]}/x.mp4",
                     SourceSettings(open_timeout_s=2, max_retries=0))
    try:
        src.start()
        wait_for(lambda: src.state == "stopped", 10, what="the stream to give up")
        assert ("cam", src.src.auth) in seen  # the camera itself got the credentials
        assert not [a for who, a in seen if who == "other" and a], seen  # the other host never did
        assert "redirect" in src.stats.last_error and "s3cret" not in src.stats.last_error
    finally:
        src.stop()
        cam.shutdown(), other.shutdown()
        cam.server_close(), other.server_close()
