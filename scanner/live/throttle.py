"""Throttled logging of repeated failures in the live service's threads."""
from __future__ import annotations

import logging
import sys
import time


class LogThrottle:
    """Whether to log a failure of ``key`` now: the first, then at most one per ``every_s``.

    A failure that repeats on every frame or watchdog round (twice a second, per stream)
    otherwise logs a traceback each time, burying everything else (a detector failing on
    every frame: bad weights, a wrong output shape). The inference worker and the
    watchdog use it; :meth:`log` is the usual way in."""

    def __init__(self, every_s: float = 60.0, max_keys: int = 256):
        self.every_s, self.max_keys = every_s, max_keys
        self._seen: dict = {}  # key -> (time logged, failures not logged since)

    def __call__(self, key) -> int | None:
        """None: stay quiet; else the number of failures not logged since the last one."""
        now = time.monotonic()
        last, quiet = self._seen.get(key, (None, 0))
        if last is not None and now - last < self.every_s:
            self._seen[key] = (last, quiet + 1)
            return None
        if len(self._seen) >= self.max_keys:  # keys come from streams: bounded memory
            self._seen.clear()
        self._seen[key] = (now, 0)
        return quiet

    def log(self, logger: logging.Logger, key, msg: str, *args, level: int = logging.ERROR) -> bool:
        """Log ``msg % args`` unless ``key`` failed less than ``every_s`` ago; True if logged.

        Called inside an ``except`` block, the traceback goes along (exc_info). The failures
        not logged since the last time are counted at the end: " (N more not logged)", when N > 0."""
        quiet = self(key)
        if quiet is None:
            return False
        if quiet:
            msg, args = msg + " (%d more not logged)", (*args, quiet)
        logger.log(level, msg, *args, exc_info=sys.exc_info()[0] is not None)
        return True
