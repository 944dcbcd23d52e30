"""Event sinks of the live service: JSONL file, stdout, HTTP webhook.

Every sink has its own thread and bounded queue: :meth:`Sink.emit` never blocks
the pipeline (a full queue drops the event and counts it), and a sink that
raises or hangs only delays itself, never the other sinks or the streams.

The writing itself is the batch scanner's (:mod:`scanner.output`): the same
JSONL writer (flush + fsync per line, NaN/Inf as null, a deleted file noticed)
and the same error type, so a fix reaches both modes.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TextIO
from urllib.parse import urlsplit

import httpx

from ..output import JsonlSink as _JsonlWriter
from ..output import OutputError, json_line
from ..resume import cut_after_last_row
from .deadline import Deadline
from .urls import mask_text

log = logging.getLogger(__name__)


SinkError = OutputError  # a sink cannot be set up (e.g. its file is not writable)


class Sink:
    """Base: a worker thread draining a bounded queue into :meth:`deliver`."""

    def __init__(self, name: str, queue_size: int = 1000, only_alerts: bool = False, metrics=None):
        self.name = name
        self.only_alerts = only_alerts
        self._q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._m = metrics
        self.delivered = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"dfscan-sink-{name}", daemon=True)
        self._stopping = threading.Event()
        self._delivering = False  # an event is inside deliver() (lost too if the process exits now)
        self._failing = 0  # events failed in a row (the first one is logged)
        self._dropping = 0  # events dropped since the queue last ran empty (the first one is logged)
        self._drop_lock = threading.Lock()  # emit (publishers) and the sink's thread both touch it

    def start(self) -> "Sink":
        self._thread.start()
        return self

    def emit(self, event: dict) -> None:
        """Queue ``event`` without blocking; when the queue is full, drop its oldest event (counted).

        The oldest goes, not the newest: events are verdict changes, and a reader left with an
        old verdict while the newest was dropped kept a stale verdict as current. The events'
        ``id`` numbers show the gap."""
        if self.only_alerts and not event.get("alert"):
            return
        if self._stopping.is_set():  # after the end marker: never delivered, so counted here
            self.dropped += 1
            self._count("sink_dropped")
            return
        while True:
            try:
                self._q.put_nowait(event)
                return
            except queue.Full:
                pass
            try:
                self._q.get_nowait()
            except queue.Empty:  # the sink's thread took one meanwhile: room again
                continue
            self.dropped += 1
            self._count("sink_dropped")
            self._note_drop()

    def _note_drop(self) -> None:
        """Say once per overflow that events are being dropped, as :meth:`_failed` says a failure.

        Only the metric counted them: a sink slower than the events (a webhook taking seconds
        to answer, a stdout piped to a slow reader) lost verdicts with no word in the log."""
        with self._drop_lock:
            self._dropping += 1
            first = self._dropping == 1
        if first:
            log.warning("sink %s: queue full (%d events): dropping the oldest, the sink is slower than "
                        "the events (every drop is counted in dfscan_sink_dropped_total)",
                        self.label, self._q.maxsize)

    def _caught_up(self) -> None:
        """After an overflow, once the queue ran empty: how many events it dropped meanwhile."""
        with self._drop_lock:
            dropped, self._dropping = self._dropping, 0
        if dropped:
            log.warning("sink %s: caught up; %d event(s) dropped meanwhile (queue full)", self.label, dropped)

    def _count(self, what: str) -> None:
        if self._m is not None:
            getattr(self._m, what).labels(self.name).inc()

    def deliver(self, event: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            event = self._q.get()
            if event is None:
                break
            self._delivering = True
            try:
                self.deliver(event)
                self.delivered += 1
                self._count("sink_events")
                self._recovered()
            except Exception as e:  # noqa: BLE001 - a failing sink must not die
                self._failed(e)
            finally:
                self._delivering = False
            if self._dropping and self._q.empty():
                self._caught_up()
        self.close()

    @property
    def label(self) -> str:
        """The sink in log lines (two jsonl sinks are told apart by their files)."""
        return self.name

    def _failed(self, e: Exception) -> None:
        """Count a failed event; say so once per run of failures, not once per event.

        A full disk fails every event (several a second): a warning each buried the log,
        and `dfscan watch`'s table hid them all. The metrics still count every one."""
        self.failed += 1
        self._count("sink_failures")
        self._failing += 1
        if self._failing == 1:
            log.warning("sink %s: delivery failed: %s (events are lost until it works again; "
                        "further failures are counted, not logged)", self.label, mask_text(str(e)))

    def _recovered(self) -> None:
        if self._failing:
            log.warning("sink %s: delivering again; %d event(s) failed meanwhile", self.label, self._failing)
            self._failing = 0

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout``), then end the thread.

        Events still queued or in delivery after that are lost with the process: they are
        logged and counted as dropped instead of vanishing silently.
        """
        self._stopping.set()  # no event is queued after the end marker (or drops it as the oldest)
        if not self._thread.is_alive():
            return
        try:
            self._q.put(None, timeout=timeout)
            sentinel = 1
        except queue.Full:
            sentinel = 0
        self._thread.join(timeout)
        if self._thread.is_alive():
            left = max(0, self._q.qsize() - sentinel) + self._delivering
            if left:
                self.dropped += left
                if self._m is not None:
                    self._m.sink_dropped.labels(self.name).inc(left)
                log.warning("sink %s: still delivering at shutdown; %d event(s) not delivered", self.label, left)

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"name": self.name, "delivered": self.delivered, "failed": self.failed,
                "dropped": self.dropped, "queued": self._q.qsize()}


class JsonlSink(Sink):
    """Appends one JSON object per line, fsync'ed per event so a crash loses nothing.

    A service runs for months: when ``path`` stops naming the open file (logrotate's
    move-and-create, or a deleted file) the next event reopens ``path``, instead of
    going on into the rotated file or failing for every event until a restart
    (``reopen_on_rotate`` of the batch writer, :class:`scanner.durable.DurableFile`).
    """

    def __init__(self, path: str | Path, **kw):
        super().__init__(kw.pop("name", "jsonl"), **kw)
        text = os.fspath(path)
        # Path() drops a trailing "/": `dfscan watch --out events/` appended to a file named events.
        if text.endswith(("/", os.sep)) or os.path.basename(text) in (".", ".."):
            raise SinkError(f"jsonl sink cannot write {text}: names a directory, and a file name is needed here")
        self.path = Path(path)
        try:
            self._cut_torn_tail()
            self._w = _JsonlWriter(self.path, append=True, reopen_on_rotate=True)
        except OSError as e:
            raise SinkError(f"jsonl sink cannot write {self.path}: {e.strerror or e}") from e

    @property
    def label(self) -> str:
        return f"{self.name} ({self.path})"

    def _cut_torn_tail(self) -> None:
        """Cut a last line torn by a kill mid-write (as ``--resume`` does a scan's), so this
        run's first event does not glue onto it and turn both into one unreadable line."""
        if self.path.is_file() and (cut := cut_after_last_row(self.path)):
            log.warning("sink %s: cut %d byte(s) of a torn last line (an event cut short by a kill "
                        "or a full disk)", self.label, cut)

    def deliver(self, event: dict) -> None:
        self._w.write(event)

    def close(self) -> None:
        self._w.close()


class StdoutSink(Sink):
    def __init__(self, stream: TextIO | None = None, **kw):
        super().__init__(kw.pop("name", "stdout"), **kw)
        self._w = _JsonlWriter(stream=stream or sys.stdout)

    def deliver(self, event: dict) -> None:
        self._w.write(event)


MAX_BACKOFF_S = 60.0  # longest wait between two attempts of one webhook delivery
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # not in an HTTP header value (a tab is)


class WebhookSink(Sink):
    """POSTs each event as JSON (httpx); retries with exponential backoff; counts failures.

    Redirects are never followed: a 3xx would carry the configured auth headers
    to wherever the receiver points, so it is reported as a failed delivery.
    """

    def __init__(self, url: str, timeout_s: float = 5.0, retries: int = 3, backoff_s: float = 0.5,
                 headers: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep, **kw):
        super().__init__(kw.pop("name", "webhook"), **kw)
        self.url = url
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        # Surrounding whitespace is no part of a header value (h11 refuses it): stripped, as the API
        # token is. A control character is refused here: httpx's error quoted the value (a token).
        headers = {h: v.strip(" \t\r\n") for h, v in (headers or {}).items()}
        for h, v in headers.items():
            if _CONTROL.search(v):
                raise SinkError(f"webhook sink {self.name}: the value of header {h} holds a control "
                                "character (a line break?), which no HTTP header can carry")
        self.headers = {"Content-Type": "application/json", "User-Agent": "dfscan-live", **headers}
        self._sleep = sleep
        # No kept-alive connection: a reused one reports no connect to the Deadline, which could not end it.
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False, headers=self.headers,
                                    limits=httpx.Limits(max_keepalive_connections=0))

    @property
    def label(self) -> str:
        """The sink and its receiver in log lines: "webhook" alone did not say which receiver was
        down (two webhooks, or the README's "with its target"). Scheme, host and port only: a
        webhook's path or query is often its credential (a Slack URL's path), its user info is."""
        try:
            parts = urlsplit(self.url)
            return f"{self.name} ({parts.scheme}://{parts.netloc.rpartition('@')[2]})"
        except ValueError:  # unparsable: its POSTs fail and say why; no part of it is shown
            return self.name

    def deliver(self, event: dict) -> None:
        body = json_line(event).encode()  # NaN/Inf as null, like every other sink
        # A retried POST that the receiver had already taken (its answer lost) arrives twice:
        # the same key on every attempt lets it drop the second one.
        headers = {"Idempotency-Key": str(event["id"])} if "id" in event else None
        err = ""
        for attempt in range(self.retries + 1):
            if attempt:  # capped: retries 20 x backoff_s 60 was a 1-year wait, every alert behind it dropped
                self._sleep(min(self.backoff_s * 2 ** (attempt - 1), max(self.backoff_s, MAX_BACKOFF_S)))
            try:
                r = self._post(body, headers)
            except httpx.HTTPError as e:  # refused connections, timeouts, protocol errors
                err = f"{type(e).__name__}: {e}"
                continue
            if r.is_success:
                return
            err = f"HTTP {r.status_code}"  # never the URL: webhook paths often embed a secret
            if r.is_redirect:
                err += " redirect (not followed: it would carry the auth headers elsewhere)"
                break
            if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                break  # the receiver rejected the event; retrying will not help
        raise ConnectionError(f"webhook POST failed after {attempt + 1} attempt(s): {mask_text(err, self.url)}")

    def _post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        """One POST, over within about ``timeout_s`` in all (its status read, never its body)."""
        with Deadline(self.timeout_s) as deadline:
            try:
                # The status is all we need: a response body is never read. httpx's timeout is per
                # read, so a body dripped (or endless, or gigabytes long) held the sink for good.
                with self._client.stream("POST", self.url, content=body, headers=headers,
                                         extensions={"trace": deadline.trace}) as r:
                    return r
            except httpx.HTTPError as e:
                if deadline.fired:  # what the shut-down socket raised is not the reason
                    raise httpx.ReadTimeout(f"no whole response within {self.timeout_s:g}s "
                                            "(a slow or dripping receiver)") from e
                raise

    def close(self) -> None:
        self._client.close()


class SinkSet:
    """Fan-out to several sinks; each failure stays inside its own sink."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def start(self) -> "SinkSet":
        for s in self.sinks:
            s.start()
        return self

    def emit(self, event: dict) -> None:
        for s in self.sinks:
            try:
                s.emit(event)
            except Exception:  # noqa: BLE001 - never let one sink stop the others
                log.exception("sink %s: emit failed", s.name)

    def stop(self) -> None:
        for s in self.sinks:
            s.stop()
