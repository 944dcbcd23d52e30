"""HTTP API of ``dfscan serve``: a FastAPI app served by uvicorn in a thread.

Routes: ``GET /healthz`` (process and workers alive), ``GET /readyz`` (models
loaded, accepting streams), ``GET /metrics`` (Prometheus text), ``GET /streams``,
``GET /streams/{name}``, ``POST /streams`` (JSON body: a stream config),
``DELETE /streams/{name}``, ``GET /`` (status page) and the OpenAPI schema at
``/openapi.json``.

Every request passes one gate before any route runs, in this order:

1. ``Host`` allowlist (Starlette's ``TrustedHostMiddleware``): loopback names
   plus configured ones, so a DNS-rebinding page cannot reach a loopback API;
2. a cross-site ``Origin`` is refused (403);
3. ``Authorization: Bearer <token>`` on every route but the two probes and the
   static status page, when a token is set (required off loopback; constant-time);
4. writes must be ``application/json`` (415), so an HTML form or a ``text/plain``
   ``fetch`` from another site -- both sent without a CORS preflight -- are
   refused; bodies are capped (413).

uvicorn frames requests with h11 (a body is never parsed as a second request),
limits connections (``limit_concurrency``: 503 beyond), closes idle keep-alive
connections, and -- through :class:`_TimedH11` -- closes connections whose
request has not fully arrived within ``request_timeout_s`` (slowloris, half-open).
Stream URLs are only ever returned with credentials masked.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time

import h11
import uvicorn
from fastapi import FastAPI, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware, parse_host_header
from uvicorn.protocols.http.h11_impl import H11Protocol

from engines.errors import DfscanError

from .api_models import ErrorBody, Health, Ready, Removed, StreamInfo, StreamList
from .auth import TokenFile, check_bearer
from .config import LOOPBACK_HOSTS, ApiConfig, StreamConfig
from .service import LiveService, StreamExists, StreamLimit, StreamNotFound
from .urls import SourceError, mask_text

log = logging.getLogger(__name__)
PROBES = frozenset({"/healthz", "/readyz"})
PUBLIC = PROBES | {"/"}  # no token needed: probes, and the status page (static, no stream data)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _err(code: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code, headers={"Cache-Control": "no-store", **headers})


def _doc(*codes: int) -> dict:
    return {c: {"model": ErrorBody} for c in codes}


# ---- the gate ---------------------------------------------------------------
class _Gate:
    """Pure ASGI middleware: Origin check, bearer auth, JSON-only bounded writes."""

    def __init__(self, app, token: str | TokenFile | None, max_body: int, hosts: list[str],
                 max_header: int = 16384):
        self.app, self.max_body, self.max_header = app, max_body, max_header
        # A TokenFile is asked on every request; None from it (no valid token) refuses them all.
        self.required, self.token = token is not None, token if callable(token) else (lambda: token)
        self.hosts = None if "*" in hosts else {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        h = Headers(scope=scope)
        refusal = self._refusal(scope, h)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if scope["method"] not in WRITE_METHODS:
            return await self.app(scope, receive, send)
        body = await self._read_body(h, receive)
        if not isinstance(body, Response) and (problem := _body_problem(body)) is not None:
            body = _err(400, problem)
        if isinstance(body, Response):
            return await body(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _refusal(self, scope, h: Headers) -> Response | None:
        # h11 bounds only a head still arriving; one that arrived whole is measured here.
        if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > self.max_header:
            return _err(431, "request headers too large", Connection="close")
        if "transfer-encoding" in h and "content-length" in h:
            # RFC 9112 6.1: a proxy may frame this request differently; refuse and close.
            return _err(400, "both Content-Length and Transfer-Encoding", Connection="close")
        origin = h.get("origin")
        if origin is not None and self.hosts is not None:
            parsed = parse_host_header(origin.split("://", 1)[-1])
            if parsed is None or parsed.host.lower() not in self.hosts:
                return _err(403, "cross-origin requests are not allowed")
        if self.required and scope["path"] not in PUBLIC and \
                ((tok := self.token()) is None or not check_bearer(h.get("authorization"), tok)):
            return _err(401, "missing or invalid bearer token", **{"WWW-Authenticate": 'Bearer realm="dfscan"'})
        if scope["method"] in WRITE_METHODS:
            ctype = h.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return _err(415, "request body must be application/json")
            length = h.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return _err(413, f"body must be at most {self.max_body} bytes of JSON")
        return None

    async def _read_body(self, h: Headers, receive) -> bytes | Response:
        """The whole body, at most ``max_body`` bytes (chunked uploads counted too)."""
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return _err(400, "client disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return _err(413, f"body must be at most {self.max_body} bytes of JSON")
            chunks.append(chunk)
            more = msg.get("more_body", False)
        return b"".join(chunks)


def _body_problem(body: bytes) -> str | None:
    """Why ``body`` is refused before FastAPI reads it (a key twice in one JSON object,
    nesting too deep for Python's parser), else None.

    json (and so FastAPI) keeps the last value silently: ``{"url": A, "url": B}`` would
    add a stream other than the one a reviewer of the request reads first.
    """
    class _Dup(Exception):
        pass

    def pairs(items):
        obj = dict(items)
        if len(obj) < len(items):
            seen: set = set()
            k = next(k for k, _ in items if k in seen or seen.add(k))
            raise _Dup(repr(k) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,40}", k) else "a key")
        return obj

    try:
        json.loads(body, object_pairs_hook=pairs)
    except _Dup as e:
        return f"the JSON body names {e} twice"
    except RecursionError:  # "[[[[..." (64 KiB of it): was a 500 and a traceback in the log
        return "the JSON body is nested too deeply"
    except ValueError:  # not JSON: FastAPI says so
        return None
    return None


# ---- the app ----------------------------------------------------------------
def _status_page() -> str:
    """The static status page: it holds no data (its script reads ``/streams`` with the token)."""
    try:
        from ..report.status_page import status_html
    except ImportError:  # the report package is optional here
        return ("<!doctype html><title>dfscan serve</title><h1>dfscan serve</h1>"
                "<p>JSON API: /streams, /healthz, /readyz, /metrics; schema: /openapi.json</p>")
    return status_html()


def create_app(svc: LiveService, token: str | TokenFile | None = None, max_body: int = 65536,
               hosts: list[str] | None = None, max_header: int = 16384) -> FastAPI:
    """The API as an ASGI app (uvicorn serves it; tests may call it in-process)."""
    hosts = list(hosts or LOOPBACK_HOSTS)
    secured = [Security(HTTPBearer(auto_error=False, description="API token"))] if token else []
    auth = _doc(401) if token else {}
    app = FastAPI(title="dfscan serve", version="1", docs_url="/docs", redoc_url=None)
    _handlers(app)

    # The probes are async (run on the event loop, not in the worker-thread pool): DELETEs each
    # waiting out a stream's open can fill that pool, and a liveness probe must still answer.
    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["probes"])
    async def healthz():
        ok = svc.healthy
        return JSONResponse({"status": "ok" if ok else "unhealthy"}, status_code=200 if ok else 503)

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready}}, tags=["probes"])
    async def readyz():
        ok = svc.ready and svc.healthy
        return JSONResponse({"ready": ok, "streams": len(svc.names())}, status_code=200 if ok else 503)

    @app.get("/metrics", dependencies=secured, response_class=Response, responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
        **auth})
    def metrics():
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/streams", response_model=StreamList, dependencies=secured, responses=auth)
    def list_streams():
        return {"streams": svc.describe()}

    @app.get("/streams/{name}", response_model=StreamInfo, dependencies=secured, responses={**auth, **_doc(404)})
    def get_stream(name: str):
        return svc.describe(name)

    @app.post("/streams", response_model=StreamInfo, status_code=201, dependencies=secured,
              responses={**auth, **_doc(400, 409, 413, 415)})
    async def add_stream(stream: StreamConfig):
        return await run_in_threadpool(svc.add_stream, stream)

    @app.delete("/streams/{name}", response_model=Removed, dependencies=secured, responses={**auth, **_doc(404)})
    async def remove_stream(name: str):
        # Blocks until the stream's decode thread has ended: nothing is left behind.
        await run_in_threadpool(svc.remove_stream, name)
        return {"removed": name}

    @app.get("/", response_class=HTMLResponse, tags=["status"])
    def status_page():
        return HTMLResponse(_status_page(), headers={"Cache-Control": "no-store"})

    _strip_422(app)
    app.add_middleware(_Gate, token=token, max_body=max_body, hosts=hosts, max_header=max_header)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)  # added last = runs first
    return app


def _handlers(app: FastAPI) -> None:
    """Every error is ``{"error": ...}`` JSON with a specific status, never a 5xx for bad input."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        # loc/msg/type only: the input (a URL with a password) is never echoed back.
        details = [{"loc": [str(x) for x in err.get("loc", ())], "msg": mask_text(str(err.get("msg", ""))),
                    "type": str(err.get("type", ""))} for err in e.errors()]
        return JSONResponse({"error": "invalid request", "details": details}, status_code=400)

    @app.exception_handler(StreamNotFound)
    async def _not_found(request, e):
        return _err(404, str(e))

    @app.exception_handler(StreamExists)
    @app.exception_handler(StreamLimit)
    async def _conflict(request, e):
        return _err(409, str(e))

    @app.exception_handler(SourceError)
    @app.exception_handler(DfscanError)
    async def _bad(request, e):
        return _err(400, mask_text(str(e)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        return _err(e.status_code, str(e.detail), **(e.headers or {}))


def _strip_422(app: FastAPI) -> None:
    """Validation errors are answered with 400 (as before this API moved to FastAPI)."""
    base = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = base()
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    if op.get("responses", {}).pop("422", None) is not None:
                        op["responses"].setdefault("400", {
                            "description": "Invalid request",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


# ---- uvicorn in a thread ------------------------------------------------------
class _TimedH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request to arrive in full.

    uvicorn only times out *idle* keep-alive connections; one that sends half a
    request (or nothing) would otherwise stay open forever and count against
    ``limit_concurrency``.
    """

    request_timeout_s = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expire)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state is not h11.DONE and not self.transport.is_closing():
            self.transport.close()  # a request still in flight sees http.disconnect

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is h11.DONE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._arm()  # the next (or a pipelined, half-sent) request gets the same deadline

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class ApiServer:
    """The API bound to ``host:port`` (port 0 picks a free one: see :attr:`port`).

    ``api`` supplies the connection limits, timeouts and Host allowlist
    (defaults of :class:`ApiConfig` when omitted).
    """

    def __init__(self, service: LiveService, host: str, port: int, token: str | None, max_body: int = 65536,
                 api: ApiConfig | None = None):
        api = api or ApiConfig(host=host, port=port, max_body_bytes=max(max_body, 1024))
        self.service, self.token = service, token
        if token is not None and api.token_file:
            token = TokenFile(api.token_file, token)
        self.app = create_app(service, token, max_body, api.model_copy(update={"host": host}).hosts(),
                              api.max_header_bytes)
        self._sock = _bind(host, port)
        protocol = type("DfscanH11", (_TimedH11,), {"request_timeout_s": api.request_timeout_s})
        config = uvicorn.Config(
            self.app, http=protocol, lifespan="off", log_config=None, access_log=False, server_header=False,
            proxy_headers=False, limit_concurrency=api.limit_concurrency, timeout_keep_alive=api.keep_alive_s,
            h11_max_incomplete_event_size=api.max_header_bytes, timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def start(self, timeout: float = 10.0) -> "ApiServer":
        """Serve in a thread; return once the server accepts connections."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="dfscan-api", daemon=True)
        self._thread.start()
        ev, deadline = threading.Event(), time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            ev.wait(0.02)
        if not self._server.started:
            raise OSError("the API server did not start (see the log)")
        return self

    def stop(self) -> None:
        """Graceful: stop accepting, let running requests finish (5 s at most), close."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._sock.close()
