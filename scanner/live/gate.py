"""The gate every request of the ``dfscan serve`` API passes before any route runs.

In this order:

1. a ``Host`` not in the allowlist (which keeps a DNS-rebinding page off a loopback API;
   matched as Starlette's ``TrustedHostMiddleware`` does, ``*.example.org`` included) is
   a 400 -- JSON, where Starlette's was plain text;
2. a request head too large, or framed by both ``Content-Length`` and
   ``Transfer-Encoding``, is refused (431, 400) and the connection closed;
3. a cross-site ``Origin`` is refused (403): its host must be in the allowlist or, where any
   ``Host`` is taken (a 0.0.0.0 or :: bind without ``api.allowed_hosts``), its host[:port]
   must be the request's ``Host`` (same-origin; ``Origin: null`` is cross-site);
4. two ``Authorization`` headers are a 400 (which credential counts would be a guess: the
   first was), on every route;
5. ``Authorization: Bearer <token>`` on every route but the two probes and the
   static status page, when a token is set (required off loopback; constant-time);
6. a method the path's routes do not take is a 405 naming those that they do
   (``Allow``), before any body is looked at; ``HEAD`` is taken wherever ``GET`` is
   (the route runs as ``GET``; uvicorn sends no body for a ``HEAD``);
7. writes must be ``application/json`` (415), so an HTML form or a ``text/plain``
   ``fetch`` from another site -- both sent without a CORS preflight -- are
   refused; bodies are capped (413), and a JSON object naming a key twice or
   nested too deeply for Python's parser is a 400.
"""
from __future__ import annotations

import json
import re

from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import parse_host_header
from starlette.routing import Match

from .auth import TokenFile, check_bearer

PROBES = frozenset({"/healthz", "/readyz"})
PUBLIC = PROBES | {"/"}  # no token needed: probes, and the status page (static, no stream data)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_PORTS = {"http": 80, "https": 443}


# On every answer: no page of another site may frame the status page (clickjacking), and no
# browser may sniff a JSON answer into HTML. A <meta> CSP cannot say frame-ancestors.
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", b"frame-ancestors 'none'"), (b"referrer-policy", b"no-referrer"))


def _hardened(send):
    """``send`` adding :data:`SECURITY_HEADERS` to the response's start (unless already set)."""
    async def wrapped(message):
        if message["type"] == "http.response.start":
            have = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in have]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)
    return wrapped


def error_json(code: int, message: str, **headers: str) -> JSONResponse:
    """The API's one error shape: ``{"error": message}``, never cached."""
    return JSONResponse({"error": message}, status_code=code, headers={"Cache-Control": "no-store", **headers})


class Gate:
    """Pure ASGI middleware: size/framing, Origin, bearer auth, methods, JSON-only bounded writes.

    ``routes`` are the app's (``app.router.routes``): what each path takes is read from them.
    """

    def __init__(self, app, token: str | TokenFile | None, max_body: int, hosts: list[str],
                 routes: list, max_header: int = 16384):
        self.app, self.max_body, self.max_header, self.routes = app, max_body, max_header, routes
        # A TokenFile is asked on every request; None from it (no valid token) refuses them all.
        self.required, self.token = token is not None, token if callable(token) else (lambda: token)
        self.hosts = None if "*" in hosts else {h.lower() for h in hosts}
        self.domains = tuple(h[1:].lower() for h in hosts if h.startswith("*."))  # "*.x.org" -> ".x.org"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _hardened(send)
        methods = self._methods(scope)
        refusal = self._refusal(scope, Headers(scope=scope), methods)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if scope["method"] == "HEAD":  # uvicorn's own scope still says HEAD: it sends no body
            scope = {**scope, "method": "GET"}
        if scope["method"] not in WRITE_METHODS or not methods:
            return await self.app(scope, receive, send)  # no route at all: the app's 404
        body = await self._read_body(receive)
        if not isinstance(body, Response) and (problem := _body_problem(body)) is not None:
            body = error_json(400, problem)
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

    def _methods(self, scope) -> frozenset[str]:
        """The methods the routes of ``scope``'s path take (HEAD wherever GET); none: no such path.

        Starlette's own 405 names only the first route matching the path (GET of /streams),
        and it comes after this gate has judged a PUT's missing JSON body (415)."""
        probe, found = {**scope, "method": "GET"}, set()
        for route in self.routes:
            if route.matches(probe)[0] is not Match.NONE:
                found |= set(getattr(route, "methods", None) or ())
        return frozenset(found | {"HEAD"} if "GET" in found else found)

    def _host_ok(self, value: str | None) -> bool:
        if self.hosts is None:
            return True
        parsed = parse_host_header(value)
        host = parsed.host.lower() if parsed is not None else None
        return host is not None and (host in self.hosts or host.endswith(self.domains))

    def _origin_ok(self, origin: str, host: str | None) -> bool:
        if self.hosts is None:  # any Host taken: without same-origin, any site's page could call the API
            return _same_origin(origin, host)
        parsed = parse_host_header(origin.split("://", 1)[-1])
        return parsed is not None and parsed.host.lower() in self.hosts

    def _refusal(self, scope, h: Headers, methods: frozenset[str]) -> Response | None:
        if not self._host_ok(h.get("host")):
            return error_json(400, "the Host header names no host this API serves (api.allowed_hosts)")
        # h11 bounds only a head still arriving; one that arrived whole is measured here.
        if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > self.max_header:
            return error_json(431, "request headers too large", Connection="close")
        if "transfer-encoding" in h and "content-length" in h:
            # RFC 9112 6.1: a proxy may frame this request differently; refuse and close.
            return error_json(400, "both Content-Length and Transfer-Encoding", Connection="close")
        # Every Origin, not the first only: a second one (a proxy's) must not hide a cross-site one.
        if not all(self._origin_ok(origin, h.get("host")) for origin in h.getlist("origin")):
            return error_json(403, "cross-origin requests are not allowed")
        if sum(k == b"authorization" for k, _ in scope["headers"]) > 1:
            return error_json(400, "more than one Authorization header")
        if self.required and scope["path"] not in PUBLIC and \
                ((tok := self.token()) is None or not check_bearer(h.get("authorization"), tok)):
            return error_json(401, "missing or invalid bearer token", **{"WWW-Authenticate": 'Bearer realm="dfscan"'})
        method = scope["method"]
        if methods and method not in methods:
            allow = ", ".join(sorted(methods))
            return error_json(405, f"method {method[:16]} is not allowed here (allowed: {allow})", Allow=allow)
        if method in WRITE_METHODS and methods:
            ctype = h.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return error_json(415, "request body must be application/json")
            length = h.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return error_json(413, f"body must be at most {self.max_body} bytes of JSON")
        return None

    async def _read_body(self, receive) -> bytes | Response:
        """The whole body, at most ``max_body`` bytes (chunked uploads counted too)."""
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return error_json(400, "client disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return error_json(413, f"body must be at most {self.max_body} bytes of JSON")
            chunks.append(chunk)
            more = msg.get("more_body", False)
        return b"".join(chunks)


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether the ``Origin`` value names the ``Host`` header's host[:port].

    Case-insensitive; a port left out, on either side, is the Origin scheme's default
    (``http://x`` is ``x:80``); ``null``, and anything not ``scheme://host[:port]``, is cross-site."""
    scheme, sep, rest = origin.partition("://")
    o, h = parse_host_header(rest) if sep else None, parse_host_header(host)
    if o is None or h is None:
        return False
    default = DEFAULT_PORTS.get(scheme.lower())
    return (o.host.lower(), int(o.port) if o.port else default) == \
        (h.host.lower(), int(h.port) if h.port else default)


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
