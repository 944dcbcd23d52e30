"""A producer thread feeding a bounded queue (files wait, never grow memory).

The producer always sends an end marker from ``finally``, so the consumer never
hangs, and any exception it raised is re-raised in the consumer. Closing the
consumer early (break, error) stops the producer at its next put. With a
``deadline`` the consumer waits no longer than that for the next item
(:class:`DeadlinePassed`): a producer blocked inside a read or a decoder, which no
flag can interrupt, is left behind in its daemon thread instead of holding the
consumer (and the process's exit) forever.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class DeadlinePassed(TimeoutError):
    """The consumer's deadline passed before the producer's next item (or call) came."""


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class BoundedPrefetch(Iterator[T]):
    """Iterate ``make()`` in a daemon thread through a queue of ``maxsize`` items.

    ``busy_s`` accumulates the time the producer spent producing (not waiting),
    which is the honest "decode" time of a pipeline stage running in parallel.
    """

    def __init__(self, make: Callable[[], Iterable[T]], maxsize: int = 8, name: str = "prefetch"):
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self.busy_s = 0.0
        self.deadline: float | None = None  # time.monotonic() after which __next__ gives up
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, args=(make,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make) -> None:
        try:
            it = iter(make())
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                finally:
                    self.busy_s += time.perf_counter() - t0
                if not self._put(item):
                    break
        except BaseException as e:  # forwarded to the consumer
            self._put(_Raised(e))
        finally:
            self._put(_END)

    def __next__(self) -> T:
        try:
            item = self._q.get(timeout=None if self.deadline is None
                               else max(0.0, self.deadline - time.monotonic()))
        except queue.Empty:
            self._abandoned = True  # close() must not wait 5 s for a thread that may never return
            self._stop.set()
            raise DeadlinePassed("no item before the deadline") from None
        if item is _END:
            self._stop.set()
            raise StopIteration
        if isinstance(item, _Raised):
            self._stop.set()
            raise item.exc
        return item

    def stop(self) -> None:
        """Ask the producer to stop, without waiting (see :meth:`close`)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the producer and wait for it (bounded; not at all once abandoned)."""
        self._stop.set()
        if not self._abandoned:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Inline(Iterator[T]):
    """Same interface as :class:`BoundedPrefetch`, producing in the caller's thread."""

    def __init__(self, make: Callable[[], Iterable[T]], **_):
        self._make, self._it = make, None
        self.busy_s = 0.0
        self.deadline: float | None = None  # checked by the caller between items only

    def __next__(self) -> T:
        t0 = time.perf_counter()
        try:
            if self._it is None:
                self._it = iter(self._make())
            return next(self._it)
        finally:
            self.busy_s += time.perf_counter() - t0

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def call_before(fn: Callable[[], T], deadline: float | None, name: str = "call") -> T:
    """``fn()``, run in a daemon thread when ``deadline`` (``time.monotonic()``) is set.

    Raises :class:`DeadlinePassed` if it has not returned by then (it is left to finish
    on its own: a read blocked on a stalled file system cannot be interrupted), else
    its result or its exception."""
    if deadline is None:
        return fn()
    out: list = []

    def run():
        try:
            out.append((True, fn()))
        except BaseException as e:  # forwarded to the caller
            out.append((False, e))

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if not out:
        raise DeadlinePassed(f"{name} did not return before the deadline")
    ok, value = out[0]
    if not ok:
        raise value
    return value
