"""A total deadline for httpx requests, whose own timeout is per read.

A server sending its status line and then a header byte now and then keeps
``client.stream(...)`` blocked for as long as it drips: each read is well within the
timeout. :class:`Deadline` shuts the request's sockets down once the time is up (or,
polled, once ``cancelled()`` turns true), which ends a blocked read at once. The sockets
come from httpx's ``trace`` request extension: pass ``extensions={"trace": d.trace}``
to every request made under the deadline. A kept-alive connection reused from before
the deadline reports no connect, so it cannot be ended: use a fresh client (or none kept
alive). Used by the webhook sink and the HLS playlist pre-check.

A TCP connect whose SYN goes unanswered (and a DNS lookup) blocks before there is any socket
to shut down: :meth:`Deadline.run` runs such work in a helper thread and returns when the
deadline fires, leaving the helper to end on its own (bound its connect timeout by the
time left; a connection it makes late is shut down at once).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")


class Abandoned(Exception):
    """The deadline fired while :meth:`Deadline.run`'s work was still blocked (a stalled connect)."""


class Deadline:
    """Shuts down every connection made under it once ``seconds`` have passed, or (checked
    every ``poll_s``) once ``cancelled()`` is true. ``fired``: it did; ``expired``: the time
    was up (else it was cancelled)."""

    def __init__(self, seconds: float, cancelled: Callable[[], bool] | None = None, poll_s: float = 0.1):
        self.fired = self.expired = False
        self._end = time.monotonic() + seconds
        self._cancelled, self._poll_s = cancelled, poll_s
        self._socks: list = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="deadline", daemon=True)

    def __enter__(self) -> "Deadline":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()

    @property
    def left(self) -> float:
        """Seconds until the time is up (0 once it is)."""
        return max(self._end - time.monotonic(), 0.0)

    def run(self, work: Callable[[], T], grace_s: float = 0.3) -> T:
        """``work()``'s result (or exception), run in a helper thread; :class:`Abandoned` when the
        deadline fires and ``work`` has not ended ``grace_s`` later (time for a read ended by the
        shutdown to raise its own error, which says more)."""
        out: list = []
        done = threading.Event()

        def helper() -> None:
            try:
                out.append((True, work()))
            except BaseException as e:  # handed to the caller (or dropped once it has gone)
                out.append((False, e))
            finally:
                done.set()

        threading.Thread(target=helper, name="deadline-work", daemon=True).start()
        while not done.wait(self._poll_s) and not self.fired:
            pass
        if not done.wait(grace_s):
            raise Abandoned()
        ok, value = out[0]
        if not ok:
            raise value
        return value

    def trace(self, event: str, info: dict) -> None:
        # TLS wraps (and takes over) the TCP socket: both are kept, the live one is shut down.
        if not event.endswith(("connect_tcp.complete", "start_tls.complete")) or info.get("return_value") is None:
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._socks.append(sock)
            late = self.fired  # connected just after the deadline
        if late:
            self._shutdown(sock)

    def _watch(self) -> None:
        while True:
            left = self._end - time.monotonic()
            wait = left if self._cancelled is None else min(left, self._poll_s)
            if self._done.wait(max(wait, 0.0)):
                return
            if time.monotonic() >= self._end:
                self.expired = True
                break
            if self._cancelled is not None and self._cancelled():
                break
        with self._lock:
            self.fired = True
            socks = list(self._socks)
        for sock in socks:
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass  # closed already (the request ended meanwhile), or a socket taken over by TLS
