"""Push batch-scan metrics to a Prometheus Pushgateway (``dfscan scan --metrics-push URL``).

A short scan ends before any scrape could see it, so batch jobs push instead:
periodically while scanning (a long archive scan shows progress) and once at
the end (the final counts). Each push *replaces* the metrics of this job's group
(``PUT``, :func:`prometheus_client.push_to_gateway`), so the gateway always holds
one complete, consistent snapshot. Group: job ``dfscan_scan``, ``instance`` = the
host name -- never a path or id (label values stay bounded).

Credentials in the URL (``https://user:pass@gw``) are sent as HTTP basic auth
and never logged. A failed push is counted, never fatal: metrics must not cost
a scan its rows. It is logged once with its reason, again only when the reason
changes, and a push that works again after failures says so: a gateway down for
a whole archive scan wrote the same warning every 15 s.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

log = logging.getLogger(__name__)

JOB = "dfscan_scan"


def split_url(url: str) -> tuple[str, str | None, str | None, str]:
    """``(gateway URL without credentials, user, password, masked URL)``; raises ValueError."""
    if "://" not in url:
        url = "http://" + url
    p = urlsplit(url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise ValueError("--metrics-push needs an http(s)://host:port URL of a Pushgateway")
    try:
        p.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:  # its text quotes what follows the host's ':' -- with a '/', '?' or
        # '#' in a password, that is part of the password (user:pa/ss@gw: "as 'pa'")
        raise ValueError("--metrics-push: the port is not a number 0-65535 (a '/', '?', '#' or '@' "
                         "in the user or password must be percent-encoded)") from None
    host = p.netloc.rsplit("@", 1)[-1]
    bare = urlunsplit((p.scheme, host, p.path.rstrip("/"), "", ""))
    masked = urlunsplit((p.scheme, ("***@" if "@" in p.netloc else "") + host, p.path.rstrip("/"), "", ""))
    user = unquote(p.username) if p.username else None
    pw = unquote(p.password) if p.password else None
    return bare, user, pw, masked


class MetricsPusher:
    """Pushes ``registry`` to ``url`` every ``interval_s`` seconds and on :meth:`stop`."""

    def __init__(self, url: str, registry: CollectorRegistry, interval_s: float = 15.0,
                 job: str = JOB, instance: str | None = None, timeout_s: float = 10.0):
        self.gateway, user, pw, self.masked = split_url(url)
        self.registry, self.interval_s, self.job, self.timeout_s = registry, interval_s, job, timeout_s
        self.grouping_key = {"instance": instance or socket.gethostname()}
        self.pushes = self.failures = 0
        self._said: str | None = None  # the failure last logged; None: the last push worked
        self._said_lock = threading.Lock()
        if user is not None:
            def handler(url, method, timeout, headers, data):
                return basic_auth_handler(url, method, timeout, headers, data, user, pw or "")
            self._handler = handler
        else:
            self._handler = default_handler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def push(self, timeout_s: float | None = None) -> bool:
        """One push; False (logged, counted) when the gateway cannot take it."""
        try:
            push_to_gateway(self.gateway, job=self.job, registry=self.registry, grouping_key=self.grouping_key,
                            timeout=timeout_s or self.timeout_s, handler=self._handler)
        except Exception as e:  # noqa: BLE001 - URLError, HTTP errors, timeouts: never fatal
            # the gateway URL holds no credentials (they went to the handler)
            self._failed(f"{type(e).__name__}: {e}")
            return False
        self.pushes += 1
        with self._said_lock:
            if self._said is not None:  # at the level of the failure it amends (shown by default)
                log.warning("metrics push to %s works again (%d push(es) failed)", self.masked, self.failures)
            self._said = None
        return True

    def _failed(self, why: str) -> None:
        """Count a failed push; log its reason unless it is the one logged last."""
        with self._said_lock:
            self.failures += 1
            repeat, self._said = why == self._said, why
        if repeat:
            log.debug("metrics push to %s failed again: %s", self.masked, why)
        else:
            log.warning("metrics push to %s failed: %s (the scan goes on; not logged again while the "
                        "reason stays the same)", self.masked, why)

    def start(self) -> "MetricsPusher":
        if self.interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="dfscan-metrics-push", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.push()

    def stop(self) -> bool:
        """End the periodic pushes and push the final values; returns the final push's success.

        Takes about ``timeout_s`` at most: with a gateway that does not answer, the end of a
        scan (an interrupted one too) waited for the periodic push in flight, then as long
        again for the final one (20 s by default)."""
        self._stop.set()
        end = time.monotonic() + self.timeout_s
        if self._thread is not None:
            self._thread.join(self.timeout_s + 1)  # a push in flight lands before the final one
        return self._bounded_push(max(1.0, end - time.monotonic()))

    def _bounded_push(self, timeout_s: float) -> bool:
        """:meth:`push` given ``timeout_s`` of wall time. Its timeout is a socket timeout
        (each connect and read; the name lookup has none): a gateway sending its answer a byte
        at a time held the end of the scan forever."""
        done: list[bool] = []
        t = threading.Thread(target=lambda: done.append(self.push(timeout_s)), daemon=True,
                             name="dfscan-metrics-push-final")
        t.start()
        t.join(timeout_s + 0.5)
        if done:
            return done[0]
        self._failed(f"no answer within {timeout_s:.0f} s")
        return False


def start_for(cfg, console=None) -> MetricsPusher | None:
    """The pusher of a scan config (``metrics_push``), started; None when not asked for."""
    if not cfg.metrics_push:
        return None
    from . import metrics

    metrics.PUSH_INTERVAL.set(cfg.metrics_push_interval_s)  # before the first push
    pusher = MetricsPusher(cfg.metrics_push, metrics.REGISTRY, cfg.metrics_push_interval_s,
                           instance=cfg.metrics_push_instance).start()
    if console is not None:
        every = f"every {cfg.metrics_push_interval_s:g}s and " if cfg.metrics_push_interval_s > 0 else ""
        console.print(f"[dim]metrics pushed to {pusher.masked} {every}at the end[/dim]")
    return pusher
