"""Findings of fuzzing the ``dfscan serve`` API (schemathesis plus hand-made requests),
pinned with plain httpx and raw sockets so that schemathesis stays a dev tool.

Each test names what was answered before its fix. Everything binds to 127.0.0.1;
every wait is bounded.
"""
from __future__ import annotations

import json
import logging
import select
import socket
import time

import httpx
import pytest

from conftest import wait_for
from scanner.live.server import ApiServer
from test_api import AUTH, TOKEN, _serve


@pytest.fixture()
def api():
    svc, server = _serve(TOKEN)  # request_timeout_s 1 s
    try:
        yield svc, server, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
        svc.stop()


def _allow(r: httpx.Response) -> set[str]:
    return {m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()}


def test_a_method_a_route_lacks_is_a_405_naming_every_allowed_one(api):
    """PUT/PATCH were checked for a JSON body before routing, so PUT /healthz (no body) was a
    415 'request body must be application/json', as if JSON would have done; and the 405 of
    OPTIONS /streams said 'Allow: GET' though POST /streams adds streams."""
    svc, server, base = api
    expect = {"/healthz": {"GET", "HEAD"}, "/": {"GET", "HEAD"}, "/metrics": {"GET", "HEAD"},
              "/streams": {"GET", "HEAD", "POST"}, "/streams/x": {"GET", "HEAD", "DELETE"}}
    for path, allowed in expect.items():
        for method in ("PUT", "PATCH", "OPTIONS", "TRACE"):
            r = httpx.request(method, base + path, headers=AUTH, timeout=5)
            assert (r.status_code, _allow(r)) == (405, allowed), (method, path, r.text)
            assert method in r.json()["error"]
    r = httpx.put(f"{base}/streams", json={"name": "cam", "url": "rtsp://h/x"}, headers=AUTH, timeout=5)
    assert (r.status_code, _allow(r)) == (405, {"GET", "HEAD", "POST"})
    # a path no route has is a 404 whatever the method and body; the token is still asked first
    r = httpx.post(f"{base}/nope", content=b"x", headers={**AUTH, "Content-Type": "text/plain"}, timeout=5)
    assert r.status_code == 404, r.text
    assert httpx.put(f"{base}/healthz", timeout=5).status_code == 405  # a probe: no token asked
    assert httpx.put(f"{base}/streams", timeout=5).status_code == 401
    # the routes' own methods are unchanged
    assert httpx.post(f"{base}/streams", content=b"{}", headers={**AUTH, "Content-Type": "text/plain"},
                      timeout=5).status_code == 415
    assert svc.names() == []


def test_head_is_answered_as_get_without_a_body(api):
    """HEAD (every HTTP server must support it, RFC 9110 9.1; uptime checkers send it) was a 405
    on every route but /openapi.json, so a HEAD /healthz check saw the service as down."""
    svc, server, base = api
    for path, headers in (("/healthz", {}), ("/readyz", {}), ("/", {}), ("/streams", AUTH), ("/metrics", AUTH)):
        got, head = httpx.get(base + path, headers=headers, timeout=5), httpx.head(base + path, headers=headers, timeout=5)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert httpx.head(f"{base}/streams", timeout=5).status_code == 401  # no token, no answer
    assert httpx.head(f"{base}/streams/nope", headers=AUTH, timeout=5).status_code == 404


def _raw(port: int, data: bytes, timeout: float) -> tuple[bytes, float]:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):  # socket.timeout here: the server never closed
            out += chunk
    return out, time.monotonic() - t0


def test_a_body_that_never_arrives_in_full_gets_a_408(api, caplog):
    """A POST whose Content-Length promised more than was sent (or whose chunked body never
    ended) was closed at request_timeout_s without a word: the client saw a reset connection,
    not why. It is now a 408 with a JSON reason, then the close."""
    svc, server, base = api
    caplog.set_level(logging.ERROR)
    head = (b"POST /streams HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode() +
            b"\r\nContent-Type: application/json\r\n")
    for framing, body in ((b"Content-Length: 100\r\n\r\n", b'{"name": "cam"'),
                          (b"Transfer-Encoding: chunked\r\n\r\n", b'5\r\n{"nam\r\n'),
                          (b"Transfer-Encoding: chunked\r\n\r\n", b"ffffffffffff\r\n{}")):
        out, took = _raw(server.port, head + framing + body, timeout=8)
        assert out.startswith(b"HTTP/1.1 408 "), out
        assert out.count(b"HTTP/1.1 ") == 1 and b'{"error":"the request did not arrive in full' in out, out
        assert took < 5
    # a head that never ends is still just closed (no request to answer yet)
    out, _ = _raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: 127", timeout=8)
    assert out == b""
    assert svc.names() == []
    time.sleep(0.2)  # the app's own answer to the disconnect is dropped, not an ASGI error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_no_swagger_page_that_could_never_show_the_api(api):
    """/docs served Swagger UI, whose scripts come from a CDN (blank offline) and which cannot
    send the bearer token for /openapi.json: with a token set (always, off loopback) it showed
    an error instead of the API. It is gone; the schema stays behind the token."""
    _, _, base = api
    assert httpx.get(f"{base}/docs", headers=AUTH, timeout=5).status_code == 404
    assert httpx.get(f"{base}/openapi.json", timeout=5).status_code == 401
    assert "/streams" in httpx.get(f"{base}/openapi.json", headers=AUTH, timeout=5).json()["paths"]


def _json_error(out: bytes) -> str:
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), out
    return json.loads(body)["error"]


def _slow_post(port: int) -> socket.socket:
    """An authenticated POST whose body never arrives in full: a request in progress in the app."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /streams HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")
    return s


def test_a_connection_flood_leaves_the_probes_answering(caplog):
    """Past api.limit_concurrency, uvicorn answered EVERY request 503 -- /healthz and /readyz
    too -- counting merely open connections: a burst of idle ones failed the liveness probe and
    Kubernetes restarted a healthy pod. Its 503 was plain text without Retry-After, with a log
    warning per refused request. Now the probes (and /metrics) answer from the event loop, other
    requests past the limit get a JSON 503 with Retry-After, and the log says so once."""
    caplog.set_level(logging.INFO)
    limit = 8
    svc, server = _serve(TOKEN, limit_concurrency=limit, request_timeout_s=30.0)
    base, socks = f"http://127.0.0.1:{server.port}", []
    try:
        socks += [_slow_post(server.port) for _ in range(limit)]  # every slot held...
        wait_for(lambda: httpx.get(f"{base}/streams", headers=AUTH, timeout=5).status_code == 503, 10,
                 what="the slow requests to take every slot")
        for i in range(300):  # ...and a flood of idle and half-sent connections on top
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"" if i % 2 else b"GET /streams HTTP/1.1\r\nHost: 127")
            socks.append(s)
        for path in ("/healthz", "/readyz", "/metrics"):
            t0 = time.monotonic()
            r = httpx.get(base + path, headers=AUTH, timeout=5)
            assert r.status_code == 200 and time.monotonic() - t0 < 5, (path, r.text)
        for _ in range(20):
            r = httpx.get(f"{base}/streams", headers=AUTH, timeout=5)
            assert r.status_code == 503 and "busy" in r.json()["error"], r.text
            assert r.headers["retry-after"].isdigit() and r.headers["connection"] == "close"
        # the open connections stay bounded (2 x limit): the longest idle ones were closed
        wait_for(lambda: sum(_closed(s) for s in socks[limit:]) >= 300 - 2 * limit, 10, what="idle closed")
        assert not any(_closed(s) for s in socks[:limit])  # never a request in progress
    finally:
        for s in socks:
            s.close()
        server.stop()
        svc.stop()
    refused = [r for r in caplog.records if "refused with 503" in r.getMessage()]
    assert len(refused) == 1, caplog.text  # one line per interval, not 21
    assert "Exceeded concurrency limit" not in caplog.text
    assert len([r for r in caplog.records if "connections open" in r.getMessage()]) == 1, caplog.text


def _closed(s: socket.socket) -> bool:
    """True once the server has closed ``s`` (EOF or reset); never blocks."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        return s.recv(65536, socket.MSG_PEEK) == b""
    except OSError:
        return True


def test_unparsable_requests_and_unknown_hosts_get_a_json_400(api, caplog):
    """uvicorn answered a request h11 cannot parse, and Starlette's TrustedHostMiddleware an
    unknown Host, with plain-text 400s ("Invalid HTTP request received.", "Invalid host
    header") where every other error of this API is {"error": ...} JSON; uvicorn also logged a
    warning per bad request, so a flood of them flooded the log (now one line per interval)."""
    svc, server, base = api
    caplog.set_level(logging.INFO)
    bad = (b"GARBAGE\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n",
           b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 40000)  # a head past max_header_bytes, unended
    for data in bad * 10:
        out, took = _raw(server.port, data, timeout=8)
        assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out
        assert "invalid HTTP request" in _json_error(out) and took < 5
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "Invalid HTTP" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    for host in ("evil.example", "127.0.0.1.evil.example", "bad host"):
        out, _ = _raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n", timeout=8)
        assert out.startswith(b"HTTP/1.1 400 ") and "Host" in _json_error(out), out
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # loopback names still served
    assert httpx.get(f"http://localhost:{server.port}/healthz", timeout=5).status_code == 200


def test_two_authorization_headers_are_a_400(api):
    """A request with two Authorization headers was judged on the first, so which credential
    counted depended on header order (a proxy adding its own, a client library merging);
    an ambiguous credential is now refused, whichever comes first."""
    svc, server, base = api
    for pair in ((AUTH["Authorization"], "Bearer wrong"), ("Bearer wrong", AUTH["Authorization"]),
                 (AUTH["Authorization"], AUTH["Authorization"])):
        for path in ("/streams", "/metrics", "/healthz"):
            r = httpx.get(base + path, headers=[("Authorization", v) for v in pair], timeout=5)
            assert r.status_code == 400 and "Authorization" in r.json()["error"], (path, pair, r.text)
    assert httpx.get(f"{base}/streams", headers=AUTH, timeout=5).status_code == 200


def _never_reading(port: int, path: str, requests: int = 3000) -> socket.socket:
    """A client that pipelines ``requests`` GETs of ``path`` and never reads an answer: sends
    until the server stops reading (its answers fill the socket buffers) or all are sent."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    data = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() * requests
    sent, last = 0, time.monotonic()
    while sent < len(data) and time.monotonic() - last < 0.3:
        try:
            sent += s.send(data[sent:sent + 65536])
            last = time.monotonic()
        except BlockingIOError:
            time.sleep(0.02)
    return s


def test_clients_that_never_read_cannot_shut_the_probes_out():
    """2 x limit_concurrency connections each pipelining GET /metrics (exempt from the limit,
    no token on loopback) and never reading: each kept a request 'in progress' (waiting to
    write) for good, so ConnectionCap found none idle and closed every new connection at once --
    the liveness probe's too, on every try, for as long as the clients stayed."""
    limit = 4
    svc, server = _serve(None, limit_concurrency=limit, request_timeout_s=60.0, keep_alive_s=60.0)
    base, socks = f"http://127.0.0.1:{server.port}", []
    try:
        socks += [_never_reading(server.port, "/metrics") for _ in range(2 * limit)]
        for path in ("/healthz", "/readyz", "/healthz"):
            r = httpx.get(base + path, timeout=5)  # was: connection reset, every time
            assert r.status_code == 200, (path, r.text)
    finally:
        for s in socks:
            s.close()
        server.stop()
        svc.stop()


def test_an_answer_never_read_is_cut_at_request_timeout_s():
    """A GET / (public) pipelined by a client that never reads waited to write for good: it held
    one of api.limit_concurrency slots (4 such clients: every other request a 503 until they
    left), and uvicorn's close() of such a connection waited for the unsent bytes, so the socket
    was never released. request_timeout_s without progress in writing now aborts it."""
    limit = 4
    svc, server = _serve(None, limit_concurrency=limit, request_timeout_s=1.0, keep_alive_s=60.0)
    base, cap = f"http://127.0.0.1:{server.port}", server._server.config.http.cap
    socks = []
    try:
        socks += [_never_reading(server.port, "/") for _ in range(limit)]
        wait_for(lambda: httpx.get(f"{base}/streams", timeout=5).status_code == 200, 20,
                 what="the stalled requests to be cut (was: 503 for as long as they stayed)")
        wait_for(lambda: not cap._open, 20, what="every stalled connection to be released")
    finally:
        for s in socks:
            s.close()
        server.stop()
        svc.stop()


def test_clients_that_never_read_the_public_page_hold_no_request_slot():
    """Off loopback (a token set), limit_concurrency clients pipelining GET / (the public status
    page) and never reading each held a slot of api.limit_concurrency while their answers waited
    to be written (until request_timeout_s): every authenticated request was a 503 meanwhile,
    and again as soon as they reconnected. A request whose answer has started no longer counts."""
    limit = 4
    svc, server = _serve(TOKEN, limit_concurrency=limit, request_timeout_s=60.0, keep_alive_s=60.0)
    base, socks = f"http://127.0.0.1:{server.port}", []
    try:
        socks += [_never_reading(server.port, "/") for _ in range(limit)]
        cap = server._server.config.http.cap
        wait_for(lambda: sum(c.flow.write_paused for c in list(cap._open)) >= limit, 30,
                 what="every answer to wait on its client")  # the pipelined ones before: in progress
        for _ in range(3):
            r = httpx.get(f"{base}/streams", headers=AUTH, timeout=5)
            assert r.status_code == 200, r.text  # was: 503 'the API is busy'
    finally:
        for s in socks:
            s.close()
        server.stop()
        svc.stop()


def test_a_cross_site_origin_behind_a_same_site_one_is_a_403(api):
    """Only the first Origin header was checked: 'Origin: http://127.0.0.1' followed by
    'Origin: http://evil.example' passed as same-site."""
    svc, server, base = api
    for pair in (("http://127.0.0.1", "http://evil.example"), ("http://evil.example", "http://127.0.0.1")):
        r = httpx.get(f"{base}/streams", headers=[("Origin", o) for o in pair] + list(AUTH.items()), timeout=5)
        assert r.status_code == 403 and "cross-origin" in r.json()["error"], (pair, r.text)
    r = httpx.get(f"{base}/streams", headers=[("Origin", "http://127.0.0.1")] * 2 + list(AUTH.items()), timeout=5)
    assert r.status_code == 200, r.text


def test_any_host_bind_still_refuses_a_cross_site_origin(api, monkeypatch):
    """Bound to 0.0.0.0 (or ::) without api.allowed_hosts, any Host is taken (the token guards
    that bind), and the Origin check was skipped with it: a page on any site could send requests
    to the API. Now every Origin must name the request's Host (host[:port]); 'null' is cross-site."""
    from scanner.live import server as server_mod
    from scanner.live.config import ApiConfig

    same = [([], "scanner.lan:8787"), (["http://scanner.lan:8787"], "scanner.lan:8787"),
            (["http://SCANNER.lan:8787"], "Scanner.LAN:8787"), (["http://scanner.lan"], "scanner.lan:80"),
            (["https://scanner.lan"], "scanner.lan"), (["https://scanner.lan:443"], "scanner.lan"),
            (["http://[::1]:8787"], "[::1]:8787"), (["http://10.0.0.5:8787"] * 2, "10.0.0.5:8787"),
            ([], "anything.example")]  # the Host itself is still not checked
    cross = [(["http://evil.example"], "scanner.lan:8787"), (["null"], "scanner.lan:8787"),
             (["http://scanner.lan:8787", "http://evil.example"], "scanner.lan:8787"),
             (["http://evil.example", "http://scanner.lan:8787"], "scanner.lan:8787"),
             (["http://scanner.lan:9999"], "scanner.lan:8787"), (["http://scanner.lan"], "scanner.lan:8787"),
             (["https://scanner.lan"], "scanner.lan:80"), (["http://[::2]:8787"], "[::1]:8787"),
             (["http://scanner.lan.evil.example:8787"], "scanner.lan:8787"),
             (["http://evil@scanner.lan:8787"], "scanner.lan:8787"), (["scanner.lan:8787"], "scanner.lan:8787")]
    bind = server_mod._bind
    monkeypatch.setattr(server_mod, "_bind", lambda host, port: bind("127.0.0.1", port))  # 0.0.0.0's config only
    assert ApiConfig(host="0.0.0.0").hosts() == ["*"]
    svc, _, _ = api
    server = ApiServer(svc, "0.0.0.0", 0, TOKEN, api=ApiConfig(host="0.0.0.0", port=0, token_env=None)).start()
    try:
        for origins, host in same + cross:
            headers = [("Host", host), *AUTH.items(), *(("Origin", o) for o in origins)]
            r = httpx.get(f"http://127.0.0.1:{server.port}/streams", headers=headers, timeout=5)
            want = 200 if (origins, host) in same else 403
            assert r.status_code == want, (origins, host, r.text)
            assert want == 200 or "cross-origin" in r.json()["error"], r.text
    finally:
        server.stop()


def test_metrics_answer_while_the_worker_threads_are_all_taken(monkeypatch):
    """/metrics is exempt from api.limit_concurrency as 'answered on the event loop', but ran in
    the worker-thread pool (40 threads): DELETEs each waiting for a stream's decode thread to end
    (or any 40 slow sync requests) held every thread, and the scrape waited behind them."""
    import threading

    svc, server = _serve(TOKEN, limit_concurrency=64, request_timeout_s=30.0)
    base, release, waiting = f"http://127.0.0.1:{server.port}", threading.Event(), []

    def remove_stream(name):
        waiting.append(name)
        release.wait(20)

    monkeypatch.setattr(svc, "remove_stream", remove_stream)
    try:
        for i in range(45):
            threading.Thread(target=httpx.delete, args=(f"{base}/streams/s{i}",),
                             kwargs={"headers": AUTH, "timeout": 30}, daemon=True).start()
        wait_for(lambda: len(waiting) >= 40, 20, what="the DELETEs to take every worker thread")
        r = httpx.get(f"{base}/metrics", headers=AUTH, timeout=5)  # was: a timeout
        assert r.status_code == 200 and r.text, r.text
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        release.set()
        server.stop()
        svc.stop()
