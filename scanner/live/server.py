"""HTTP API of ``dfscan serve``: a FastAPI app served by uvicorn in a thread.

Routes: ``GET /healthz`` (process and workers alive), ``GET /readyz`` (models
loaded, accepting streams), ``GET /metrics`` (Prometheus text), ``GET /streams``,
``GET /streams/{name}``, ``POST /streams`` (JSON body: a stream config),
``DELETE /streams/{name}``, ``GET /`` (status page) and the OpenAPI schema at
``/openapi.json``.

Every request passes the load bound of :mod:`scanner.live.limits` (beyond
``limit_concurrency`` requests in progress: a JSON 503 with ``Retry-After``; the probes
and ``/metrics`` exempt), then the gate of :mod:`scanner.live.gate` before any route runs: the
``Host`` allowlist (a DNS-rebinding page cannot reach a loopback API), cross-site
``Origin``, the bearer token, the methods each path takes (405 with ``Allow``; ``HEAD``
wherever ``GET``), JSON-only bounded writes.

uvicorn frames requests with h11 (a body is never parsed as a second request) and
closes idle keep-alive connections; through :class:`_TimedH11` it also closes
connections whose request has not fully arrived within ``request_timeout_s``
(slowloris, half-open), with a 408 first when its head had arrived, aborts those whose
answers have not been read for ``request_timeout_s`` (slow reader), holds at most
``2 x limit_concurrency`` connections (the longest idle closed first, then a client not
reading or pipelining; never a request a client reads), and answers a
request h11 cannot parse with a JSON 400. uvicorn's own ``limit_concurrency`` is off:
it answered the probes 503 too, once enough connections were merely open.
Stream URLs are only ever returned with credentials masked.
"""
from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from http import HTTPStatus

try:
    import fcntl
    import termios
except ImportError:  # not POSIX: pipelined bytes still unread are not looked for
    fcntl = termios = None

import h11
import uvicorn
from fastapi import FastAPI, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from engines.errors import DfscanError

from .api_models import ErrorBody, Health, Ready, Removed, StreamInfo, StreamList
from .auth import TokenFile, check_bearer  # noqa: F401 (check_bearer: re-exported)
from .config import LOOPBACK_HOSTS, ApiConfig, StreamConfig
from .gate import SECURITY_HEADERS, Gate, error_json
from .limits import CONNECTIONS_PER_REQUEST, LOG_EVERY_S, ConnectionCap, InFlightLimit, QuietLog
from .throttle import LogThrottle
from .service import LiveService, StreamExists, StreamLimit, StreamNotFound, StreamNotStarted
from .urls import SourceError, mask_text

log = logging.getLogger(__name__)


def _doc(*codes: int) -> dict:
    return {c: {"model": ErrorBody} for c in codes}


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
               hosts: list[str] | None = None, max_header: int = 16384,
               limit_concurrency: int | None = None) -> FastAPI:
    """The API as an ASGI app (uvicorn serves it; tests may call it in-process)."""
    hosts = list(hosts or LOOPBACK_HOSTS)
    secured = [Security(HTTPBearer(auto_error=False, description="API token"))] if token else []
    auth = _doc(401) if token else {}
    # No /docs: Swagger UI loads its scripts from a CDN (blank on the offline hosts a service
    # runs on) and cannot send the bearer token to fetch /openapi.json, so with a token set it
    # never showed the API; the schema itself stays at /openapi.json (token required).
    app = FastAPI(title="dfscan serve", version="1", docs_url=None, redoc_url=None)
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
    async def metrics():  # on the event loop like the probes (exempt from the limit as they are):
        # a render is well under a millisecond, and DELETEs filling the worker-thread pool held it up
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/streams", response_model=StreamList, dependencies=secured, responses=auth)
    def list_streams():
        return {"streams": svc.describe()}

    @app.get("/streams/{name}", response_model=StreamInfo, dependencies=secured, responses={**auth, **_doc(404)})
    def get_stream(name: str):
        return svc.describe(name)

    @app.post("/streams", response_model=StreamInfo, status_code=201, dependencies=secured,
              responses={**auth, **_doc(400, 409, 413, 415, 503)})
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
    app.add_middleware(Gate, token=token, max_body=max_body, hosts=hosts, routes=app.router.routes,
                       max_header=max_header)
    if limit_concurrency is not None:  # added last = runs first: a refusal costs no more than this
        app.add_middleware(InFlightLimit, limit=limit_concurrency)
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
        return error_json(404, str(e))

    @app.exception_handler(StreamExists)
    @app.exception_handler(StreamLimit)
    async def _conflict(request, e):
        return error_json(409, str(e))

    @app.exception_handler(StreamNotStarted)
    async def _unavailable(request, e):  # the server's limit, not the request's fault
        return error_json(503, str(e), **{"Retry-After": "5"})

    @app.exception_handler(SourceError)
    @app.exception_handler(DfscanError)
    async def _bad(request, e):
        return error_json(400, mask_text(str(e)))

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        # Starlette's own answer was a text/plain "Internal Server Error". Its type only: the
        # message may quote a stream URL. It runs outside the gate: the gate's headers added here.
        headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
        return error_json(500, f"internal error ({type(e).__name__}); the service log has its traceback", **headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        return error_json(e.status_code, str(e.detail), **(e.headers or {}))


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
    """uvicorn's h11 protocol plus a deadline for each request to arrive in full, a bound
    on open connections (:attr:`cap`) and JSON for the 400 of a request h11 cannot parse.

    uvicorn only times out *idle* keep-alive connections; one that sends half a
    request (or nothing) would otherwise stay open forever.
    """

    request_timeout_s = 10.0
    cap: ConnectionCap | None = None  # one per server (see ApiServer)
    log_throttle: LogThrottle | None = None  # likewise: uvicorn's warnings, one per interval

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.log_throttle is not None:
            self.logger = QuietLog(self.logger, self.log_throttle)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = self._stall = None
        self._arm()
        if self.cap is not None:
            self.cap.opened(self)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expire)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.DONE or self.transport.is_closing():
            return
        cycle = self.cycle
        if self.conn.our_state is h11.SEND_RESPONSE and cycle is not None and not cycle.response_started:
            self._send_408(cycle)  # a head arrived, its body did not: say why before closing
        self.transport.close()  # a request still in flight sees http.disconnect
        self._bound_close()

    def _send_408(self, cycle) -> None:
        # The app (waiting for the rest of the body) then sees a disconnect: its own answer is
        # dropped, not sent after this one (uvicorn would log that as an ASGI error).
        cycle.response_started = cycle.response_complete = cycle.disconnected = True
        self._write_error(408, f"the request did not arrive in full within {self.request_timeout_s:g} s")

    def send_400_response(self, msg: str) -> None:
        # uvicorn's is plain text ("Invalid HTTP request received."); every other error is JSON.
        self._write_error(400, "invalid HTTP request (h11 could not parse it)")
        self.transport.close()
        self._bound_close()

    # A client that does not read its answers: once the socket's buffers are full a response
    # waits to be written (the request holds its place in the app, and in the cap, as busy),
    # and transport.close() waits for the unsent bytes -- neither ever ended, so connection_lost
    # never came and the socket stayed open. request_timeout_s without progress aborts it.
    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None and not self.transport.is_closing():
            self._stall.cancel()
            self._stall = None

    def _watch_writes(self) -> None:
        if getattr(self, "_stall", None) is None and self.transport is not None:
            self._stall = self.loop.call_later(self.request_timeout_s, self._write_stalled)

    def _bound_close(self) -> None:
        """A connection closing with bytes still unsent is aborted if they are not gone in time."""
        if self.transport.is_closing() and self.transport.get_write_buffer_size():
            self._watch_writes()

    def _write_stalled(self) -> None:
        self._stall = None
        if self.transport.get_write_buffer_size() or self.flow.write_paused:
            self.transport.abort()  # connection_lost: a request waiting to write sees a disconnect

    def shed_first(self) -> bool:
        """Busy, but the first to close when :attr:`cap` is full: the client is not reading its
        answers, or has sent more requests behind the one in progress (pipelined)."""
        if self.flow.write_paused or self.transport.get_write_buffer_size():
            return True
        if self.conn.their_state not in (h11.DONE, h11.MUST_CLOSE):
            return False  # its request (a body) is still arriving
        return bool(self.conn.trailing_data[0]) or _unread(self.transport) > 0

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._bound_close()

    def shutdown(self) -> None:
        super().shutdown()
        self._bound_close()

    def _write_error(self, status: int, message: str) -> None:
        """``{"error": message}`` written outside any ASGI cycle; the connection closes after."""
        body = json.dumps({"error": message}, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store"), (b"connection", b"close")]
        for event in (h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode()),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is h11.DONE:
            self._disarm()
        if self.cap is not None and self.cycle is not None and not self.cycle.response_complete:
            self.cap.busy(self)  # a request is in the app: not to be closed to make room

    def on_response_complete(self) -> None:
        if self.cap is not None and not self.transport.is_closing():
            self.cap.idle(self)  # first: a pipelined request that super() starts is busy again
        super().on_response_complete()
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._arm()  # the next (or a pipelined, half-sent) request gets the same deadline
        self._bound_close()  # a "Connection: close" answer not yet sent

    def connection_lost(self, exc) -> None:
        self._disarm()
        if getattr(self, "_stall", None) is not None:
            self._stall.cancel()
            self._stall = None
        if self.cap is not None:
            self.cap.closed(self)
        super().connection_lost(exc)


def _unread(transport) -> int:
    """Bytes received on ``transport``'s socket and not yet read (0 where it cannot tell)."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(termios, "FIONREAD"):
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


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
                              api.max_header_bytes, limit_concurrency=api.limit_concurrency)
        self._sock = _bind(host, port)
        cap = ConnectionCap(CONNECTIONS_PER_REQUEST * api.limit_concurrency)
        protocol = type("DfscanH11", (_TimedH11,), {"request_timeout_s": api.request_timeout_s, "cap": cap,
                                                   "log_throttle": LogThrottle(LOG_EVERY_S)})
        # limit_concurrency=None: uvicorn's limit refused the probes too (the app's InFlightLimit
        # exempts them; ConnectionCap bounds sockets). ws="none": the API has no WebSocket route.
        config = uvicorn.Config(
            self.app, http=protocol, lifespan="off", log_config=None, access_log=False, server_header=False,
            proxy_headers=False, limit_concurrency=None, ws="none", timeout_keep_alive=api.keep_alive_s,
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
