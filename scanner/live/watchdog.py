"""The live service's watchdog: one thread that checks every source's heartbeat,
flags stalled streams for a reconnect and restarts a decode thread that died."""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from .throttle import LogThrottle

if TYPE_CHECKING:
    from .source import LiveSource

log = logging.getLogger("scanner.live.source")  # same logger as the sources it watches


class Watchdog:
    """One thread checking every source's heartbeat; flags stalls, exports ages."""

    def __init__(self, sources: Callable[[], list[LiveSource]], interval_s: float = 0.5,
                 on_tick: Callable[[float], None] | None = None):
        self._sources = sources
        self._interval = interval_s
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._throttle = LogThrottle()  # a source failing every round logs once a minute
        self._thread = threading.Thread(target=self._run, name="dfscan-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def check(self, now: float | None = None) -> None:
        """One round: every source, then ``on_tick`` (verdict expiry). A source whose check
        raises is logged and skipped: it used to end the round, so the sources after it were
        never flagged stalled and no verdict expired for as long as it kept failing."""
        now = now or time.monotonic()
        try:
            for src in self._sources():
                try:
                    self._check_source(src, now)
                except Exception as e:  # noqa: BLE001 - one source must not blind the others
                    self._failed(src, e)
        finally:
            if self._on_tick is not None:
                self._on_tick(now)

    @staticmethod
    def _check_source(src: LiveSource, now: float) -> None:
        src.update_fps(now)
        age = src.heartbeat_age(now)
        src._m.heartbeat_age.set(age)
        if src.state == "live" and age > src.settings.stall_s:
            log.warning("stream %s: no frame for %.1fs, reconnecting", src.name, age)
            src.flag_stall()
        if not src.alive and src.state != "stopped" and not src._stop.is_set():
            src._thread = None  # the decode thread died unexpectedly: restart it
            src.start()

    def _failed(self, src: LiveSource, e: Exception) -> None:
        # No stream error counter tick: dfscan_stream_errors_total counts the stream's own
        # open/read/decode failures, and this one repeats every round (a service bug).
        name = getattr(src, "name", "?")
        self._throttle.log(log, (name, type(e).__name__), "watchdog: check of stream %s failed", name)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog itself must never die
                log.exception("watchdog check failed")
