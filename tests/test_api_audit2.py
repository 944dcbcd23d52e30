"""Second audit of the ``dfscan serve`` HTTP API: holes left open after the first review.

* ``api.allowed_hosts: ['*']`` on a loopback bind without a token turned the Host check off,
  and with it the DNS-rebinding guard: a page on evil.example re-resolved to 127.0.0.1 is
  same-origin and added streams.
* A token from ``$DFSCAN_API_TOKEN`` was not stripped as ``api.token_file``'s is: a Kubernetes
  Secret made ``--from-file`` ends in a newline no header can carry, so every request was a 401.
* ``Authorization: bearer <token>`` (the scheme is case-insensitive) was a 401.
"""
from __future__ import annotations

import socket

import httpx
import pytest

from scanner.live.config import ConfigError, parse_config
from test_api import TOKEN, _serve


def _post_from_a_rebinding_page(port: int) -> bytes:
    """POST /streams as a browser sends it for a page on evil.example that re-resolved to 127.0.0.1."""
    body = b'{"name":"cam","url":"rtsp://10.0.0.1/x"}'
    head = (f"POST /streams HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head.encode() + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_any_host_on_a_tokenless_loopback_api_is_refused(monkeypatch):
    monkeypatch.delenv("DFSCAN_TEST_UNSET_TOKEN", raising=False)
    api = {"host": "127.0.0.1", "token_env": "DFSCAN_TEST_UNSET_TOKEN", "allowed_hosts": ["*"]}
    with pytest.raises(ConfigError, match=r"allowed_hosts '\*'.*token"):
        parse_config({"api": api})
    # With a token the API is guarded (the rebinding page cannot know it), and the rebinding
    # request itself is a 401.
    assert _rebinding_answer(TOKEN, ["*"]).startswith(b"HTTP/1.1 401")
    # Named hosts keep the Host check on: the same request is a 400, no token needed.
    assert _rebinding_answer(None, ["dfscan.example.org"]).startswith(b"HTTP/1.1 400")


def _rebinding_answer(token: str | None, hosts: list[str]) -> bytes:
    """The answer to a rebinding page's POST /streams; no stream may have been added."""
    svc, server = _serve(token, allowed_hosts=hosts)
    try:
        answer = _post_from_a_rebinding_page(server.port)
        assert svc.names() == []
        return answer
    finally:
        server.stop()
        svc.stop()


def test_a_token_from_the_environment_ending_in_a_newline_is_usable():
    svc, server = _serve(TOKEN + "\n")
    try:
        url = f"http://127.0.0.1:{server.port}/streams"
        assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    finally:
        server.stop()
        svc.stop()


def test_the_bearer_scheme_is_case_insensitive():
    svc, server = _serve(TOKEN)
    try:
        base = f"http://127.0.0.1:{server.port}"
        for scheme in ("bearer", "BEARER", "Bearer"):
            for path in ("/streams", "/metrics"):
                r = httpx.get(base + path, headers={"Authorization": f"{scheme} {TOKEN}"})
                assert r.status_code == 200, (scheme, path)
        for bad in (f"Bearer{TOKEN}", f"Basic {TOKEN}", f"bearer {TOKEN[:-1]}", "bearer"):
            assert httpx.get(base + "/streams", headers={"Authorization": bad}).status_code == 401, bad
    finally:
        server.stop()
        svc.stop()


def test_a_nested_playlist_that_is_no_playlist_is_never_quoted_back(tmp_path):
    """A playlist nesting a URL of some internal text (a config, a status page) had its lines read
    as playlist entries: 'user: admin' was refused as a 'user:' URI and quoted,
    in the stream's last_error that GET /streams shows. FFmpeg parses no playlist that does not
    open with #EXTM3U, so such a body is not one to check."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from scanner.live.hls import precheck_playlist
    from scanner.live.urls import RefusedURL, SourceError, parse_source

    bodies = {"/live.m3u8": b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n/internal/settings\n",
              "/internal/settings": b"user: admin\npassword: hunter2-internal\n",
              "/bad.m3u8": b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n/v.m3u8\n",
              "/v.m3u8": b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n"}

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            body = bodies.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        try:
            precheck_playlist(parse_source(base + "/live.m3u8"), 3.0)  # FFmpeg says what is wrong
        except SourceError as e:  # was: "references a user: URI (user: admin)"
            pytest.fail(f"a body that is no playlist was read as one: {e}")
        # A nested playlist that is one is still checked.
        with pytest.raises(RefusedURL, match="file"):
            precheck_playlist(parse_source(base + "/bad.m3u8"), 3.0)
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_empty_token_file_at_start_is_refused_not_auth_off(tmp_path):
    """An empty api.token_file at start read as "no token": a loopback API ran with auth off
    for good (a token written into the file later was ignored); emptied while running, the
    same file already refused every request."""
    from scanner.live.config import ConfigError, parse_config

    token_file = tmp_path / "token"
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match=f"api.token_file {token_file}: .*at least"):
        parse_config({"api": {"token_env": None, "token_file": str(token_file)}})


def test_every_answer_forbids_framing_and_sniffing():
    """The status page sent no frame-ancestors / X-Frame-Options (a <meta> CSP cannot say it)
    and JSON answers no nosniff."""
    svc, server = _serve(None)
    try:
        for path in ("/", "/streams", "/nothing-here"):
            r = httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)
            assert r.headers["x-frame-options"] == "DENY", path
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    finally:
        server.stop()
        svc.stop()
