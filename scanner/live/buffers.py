"""Small pieces of a live source: the drop-oldest frame buffer, the reconnect backoff, its stats."""
from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field


class DropOldestBuffer:
    """Thread-safe bounded FIFO: a put into a full buffer evicts the oldest item."""

    def __init__(self, maxlen: int):
        self._q: deque = deque(maxlen=max(1, int(maxlen)))
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, item) -> bool:
        """Append ``item``; return True when an old item had to be dropped."""
        with self._lock:
            full = len(self._q) == self._q.maxlen
            self._q.append(item)
            self.dropped += full
            return full

    def get(self):
        """Oldest item or None."""
        with self._lock:
            return self._q.popleft() if self._q else None

    def clear(self) -> None:
        with self._lock:
            self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class Backoff:
    """Exponential backoff ``initial * 2**n`` capped at ``maximum``, +/- ``jitter`` fraction."""

    def __init__(self, initial: float, maximum: float, jitter: float, rng: random.Random | None = None):
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        base = min(self.maximum, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        # Jitter spreads reconnects of many streams that dropped together (one server restart).
        return max(0.0, base * (1.0 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self.attempt = 0


class _NullMetrics:
    def __getattr__(self, name):
        return self

    def __call__(self, *a, **k):
        return None


@dataclass
class SourceStats:
    state: str = "connecting"
    connects: int = 0
    reconnects: int = 0
    errors: int = 0
    decoded: int = 0
    sampled: int = 0
    corrupt: int = 0  # decoded frames flagged corrupt (concealed): never sampled
    tone_mapped: int = 0  # sampled HDR frames mapped to SDR (scanner.colour)
    last_error: str = ""
    last_frame_t: float = 0.0  # monotonic, heartbeat
    state_since: float = field(default_factory=time.monotonic)
    fps: float = 0.0
