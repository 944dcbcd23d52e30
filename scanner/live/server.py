"""HTTP API of ``dfscan serve`` (stdlib :class:`~http.server.ThreadingHTTPServer`).

Routes: ``GET /healthz`` (process and workers alive), ``GET /readyz`` (models
loaded, accepting streams), ``GET /metrics`` (Prometheus text), ``GET /streams``,
``GET /streams/{name}``, ``POST /streams`` (JSON body: a stream config),
``DELETE /streams/{name}``. When a token is set every route except the two
probes needs ``Authorization: Bearer <token>`` (compared in constant time).
Stream URLs are only ever returned with credentials masked.
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import ValidationError

from engines.errors import DfscanError

from .config import StreamConfig
from .service import LiveService, StreamExists, StreamLimit, StreamNotFound
from .urls import SourceError, mask_credentials

log = logging.getLogger(__name__)
PROBES = frozenset({"/healthz", "/readyz"})


def check_bearer(header: str | None, token: str | None) -> bool:
    """True when no token is required or ``header`` is ``Bearer <token>``."""
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


class _Handler(BaseHTTPRequestHandler):
    server: "ApiServer"
    protocol_version = "HTTP/1.1"
    server_version = "dfscan-live"
    sys_version = ""

    def log_message(self, fmt, *args):  # route access logs through logging, masked
        log.debug("api %s %s", self.address_string(), mask_credentials(fmt % args))

    def _send(self, code: int, body, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if code == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="dfscan"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _route(self) -> tuple[str, str | None]:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path.startswith("/streams/"):
            return "/streams/{name}", path[len("/streams/"):]
        return path, None

    def _authorized(self, path: str) -> bool:
        if path in PROBES or check_bearer(self.headers.get("Authorization"), self.server.token):
            return True
        self._send(401, {"error": "missing or invalid bearer token"})
        return False

    def _body(self) -> dict | None:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        if n <= 0 or n > self.server.max_body:
            self._send(413 if n > 0 else 400, {"error": f"body must be 1..{self.server.max_body} bytes of JSON"})
            return None
        try:
            data = json.loads(self.rfile.read(n))
        except ValueError:
            self._send(400, {"error": "body is not valid JSON"})
            return None
        if not isinstance(data, dict):
            self._send(400, {"error": "body must be a JSON object"})
            return None
        return data

    def do_GET(self):  # noqa: N802
        path, name = self._route()
        if not self._authorized(path):
            return
        svc = self.server.service
        if path == "/healthz":
            ok = svc.healthy
            self._send(200 if ok else 503, {"status": "ok" if ok else "unhealthy"})
        elif path == "/readyz":
            ok = svc.ready and svc.healthy
            self._send(200 if ok else 503, {"ready": ok, "streams": len(svc.names())})
        elif path == "/metrics":
            self._send(200, svc.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/streams":
            self._send(200, {"streams": svc.describe()})
        elif path == "/streams/{name}":
            try:
                self._send(200, svc.describe(name))
            except StreamNotFound as e:
                self._send(404, {"error": str(e)})
        else:
            self._send(404, {"error": "not found"})

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        path, _ = self._route()
        if not self._authorized(path):
            return
        if path != "/streams":
            self._send(404, {"error": "not found"})
            return
        data = self._body()
        if data is None:
            return
        try:
            sc = StreamConfig.model_validate(data)
            self._send(201, self.server.service.add_stream(sc))
        except ValidationError as e:
            self._send(400, {"error": "invalid stream", "details": json.loads(e.json(include_url=False, include_input=False))})
        except (StreamExists, StreamLimit) as e:
            self._send(409, {"error": str(e)})
        except (SourceError, DfscanError) as e:
            self._send(400, {"error": str(e)})

    def do_DELETE(self):  # noqa: N802
        path, name = self._route()
        if not self._authorized(path):
            return
        if path != "/streams/{name}":
            self._send(404, {"error": "not found"})
            return
        try:
            self.server.service.remove_stream(name)
            self._send(200, {"removed": name})
        except StreamNotFound as e:
            self._send(404, {"error": str(e)})


class ApiServer(ThreadingHTTPServer):
    """The API bound to ``host:port`` (port 0 picks a free one: see :attr:`port`)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, service: LiveService, host: str, port: int, token: str | None, max_body: int = 65536):
        self.service, self.token, self.max_body = service, token, max_body
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> "ApiServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dfscan-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)
