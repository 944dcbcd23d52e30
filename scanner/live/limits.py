"""Load bounds of the ``dfscan serve`` API that keep its probes answering under a flood.

uvicorn's own ``limit_concurrency`` counted the open connections when each request arrived
and answered every request beyond it -- ``/healthz`` and ``/readyz`` included -- with a
plain-text 503 and a warning each: a burst of idle connections failed the liveness probe
(Kubernetes restarted a healthy pod) and flooded the log. Instead:

* :class:`InFlightLimit` (ASGI) counts the requests in progress in the app (until their
  answer starts: sending it waits on the client, not on the app); beyond
  ``api.limit_concurrency`` the others get ``503 {"error": ...}`` with ``Retry-After`` and
  the connection is closed, with one log line per interval. The probes and ``/metrics``
  are neither counted nor refused: they are answered on the event loop, whatever the load.
* :class:`ConnectionCap` bounds the open connections (so memory, under a flood) at
  ``CONNECTIONS_PER_REQUEST`` times that limit: past it, the connection idle the longest
  (no request in the app: nothing sent yet, half a head, keep-alive between requests) is
  closed to make room, with none idle one whose client is not reading its answers or has
  pipelined more requests, so that a new connection -- a probe's -- always gets in.
"""
from __future__ import annotations

import logging

from .gate import PROBES, error_json
from .throttle import LogThrottle

log = logging.getLogger(__name__)

UNLIMITED = PROBES | {"/metrics"}  # cheap, answered on the event loop: a flood must not fail them
RETRY_AFTER_S = 1  # requests in progress are short; a slow upload is cut at request_timeout_s
CONNECTIONS_PER_REQUEST = 2  # room for idle keep-alive clients besides the requests in progress
LOG_EVERY_S = 60.0


class InFlightLimit:
    """Pure ASGI middleware: at most ``limit`` requests in progress, the probes aside."""

    def __init__(self, app, limit: int, throttle: LogThrottle | None = None):
        self.app, self.limit, self.in_flight = app, limit, 0
        self.throttle = throttle or LogThrottle(LOG_EVERY_S)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNLIMITED:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            self.throttle.log(log, "busy", "API: %d requests in progress (api.limit_concurrency), "
                              "others refused with 503", self.limit, level=logging.WARNING)
            # Closing the connection sheds its socket too: the client reconnects after Retry-After.
            refusal = error_json(503, f"the API is busy ({self.limit} requests in progress); "
                                 f"retry in {RETRY_AFTER_S} s", **{"Retry-After": str(RETRY_AFTER_S),
                                                                   "Connection": "close"})
            return await refusal(scope, receive, send)
        self.in_flight += 1  # the event loop is the only thread here: no lock needed
        held = True

        async def answer(message):
            # Its answer ready, a request no longer counts: writing it waits on the client, and
            # one that never reads held its slot until request_timeout_s (a few such clients,
            # on the public status page: every other request a 503, for as long as they came).
            nonlocal held
            if held and message["type"] == "http.response.start":
                held = False
                self.in_flight -= 1
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            if held:
                self.in_flight -= 1


class ConnectionCap:
    """At most ``max_open`` connections; past it, the one idle longest is closed.

    The HTTP protocol reports each connection: :meth:`opened`, :meth:`busy` (a request
    reached the app), :meth:`idle` (its response was sent), :meth:`closed`. All on the
    event loop.

    With none idle, a busy connection whose client does not play by the rules goes next --
    one not reading its answers, or with more requests sent behind the one in progress
    (``conn.shed_first()``): many of those, each always busy, once filled the cap for good and
    every new connection (a probe's) was closed at once. Only when every open one is a
    request answered to a client that reads it is the new connection the one refused.
    """

    def __init__(self, max_open: int, throttle: LogThrottle | None = None):
        self.max_open = max_open
        self.throttle = throttle or LogThrottle(LOG_EVERY_S)
        self._open: dict = {}  # insertion order: the oldest first
        self._closing: set = set()  # closed by us, connection_lost not yet called
        self._idle: dict = {}  # insertion order: the longest idle first

    def opened(self, conn) -> None:
        self._open[conn] = None
        self._idle[conn] = None
        shed = 0
        while len(self._open) - len(self._closing) > self.max_open:
            # conn is the newest idle one: another goes first (only requests in progress else)
            victim = next((c for c in self._idle if c is not conn), None) or self._misbehaving(conn) or conn
            self._close(victim)
            shed += 1
            if victim is conn:
                break
        if shed:
            self.throttle.log(log, "connections", "API: more than %d connections open, "
                              "closing the longest idle ones", self.max_open, level=logging.WARNING)

    def _misbehaving(self, conn):
        shed_first = (c for c in self._open if c is not conn and c not in self._closing and c not in self._idle)
        return next((c for c in shed_first if getattr(c, "shed_first", bool)()), None)

    def busy(self, conn) -> None:
        self._idle.pop(conn, None)

    def idle(self, conn) -> None:
        if conn in self._open and conn not in self._closing:
            self._idle.pop(conn, None)
            self._idle[conn] = None  # to the end: idle since now

    def closed(self, conn) -> None:
        self._open.pop(conn, None)
        self._closing.discard(conn)
        self._idle.pop(conn, None)

    def _close(self, conn) -> None:
        busy = conn not in self._idle
        self._idle.pop(conn, None)
        self._closing.add(conn)
        # close() waits for the unsent answer to go out -- forever, to a client that never reads
        # (and connection_lost never comes): such a one, or one in a request, is aborted.
        if busy or conn.transport.get_write_buffer_size():
            conn.transport.abort()
        else:
            conn.transport.close()


class QuietLog(logging.LoggerAdapter):
    """uvicorn's logger with its warnings throttled per message (:class:`LogThrottle`).

    uvicorn warns once per offending request ("Invalid HTTP request received.", "Unsupported
    upgrade request."): a flood of them would flood the log. Errors pass unchanged."""

    def __init__(self, logger: logging.Logger, throttle: LogThrottle):
        super().__init__(logger, {})
        self.throttle = throttle

    @property
    def level(self) -> int:  # uvicorn reads it (TRACE checks); LoggerAdapter has none
        return self.logger.level

    def log(self, level, msg, *args, **kwargs):
        if level == logging.WARNING:
            quiet = self.throttle(msg)
            if quiet is None:
                return
            if quiet:
                msg = f"{msg} ({quiet} more not logged)"
        super().log(level, msg, *args, **kwargs)
