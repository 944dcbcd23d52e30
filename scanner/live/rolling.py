"""Rolling verdicts: sliding-window scores per stream and per face track.

Stream score = mean over the window of each sampled frame's *highest* face
P(fake) (one manipulated face is enough to flag a stream); track score = mean of
that track's P(fake). A verdict changes only when the score crosses
``fake_above`` (to fake) or ``real_below`` (to real): the gap between the two is
the hysteresis that stops a score hovering near one threshold from flapping.
Events are emitted on every verdict change and, per stream, every
``emit_interval_s``.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

# Scores in events and /streams are written as rows are (aggregate.written): written to 4, 0.59996
# read 0.6 next to an ``uncertain`` at fake_above 0.6, another verdict than the stream's.
from ..aggregate import written
from .tracker import IoUTracker


@dataclass
class VerdictSettings:
    window_s: float = 10.0
    fake_above: float = 0.6
    real_below: float = 0.4
    min_samples: int = 3
    emit_interval_s: float = 30.0
    track_iou: float = 0.3
    track_max_age_s: float = 3.0


class RollingScore:
    """Mean of ``(t, value)`` samples newer than ``window_s`` seconds."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._q: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> None:
        self._q.append((t, float(value)))
        self.expire(t)

    def expire(self, now: float) -> None:
        while self._q and self._q[0][0] < now - self.window_s:
            self._q.popleft()

    @property
    def count(self) -> int:
        return len(self._q)

    @property
    def value(self) -> float | None:
        return self.total / len(self._q) if self._q else None

    @property
    def total(self) -> float:
        return sum(v for _, v in self._q)


class Hysteresis:
    """Verdict state machine: ``unknown`` until ``min_samples``, then real/fake with a dead band."""

    def __init__(self, s: VerdictSettings):
        self.s = s
        self.verdict = "unknown"

    def update(self, score: float | None, n: int) -> tuple[str, str]:
        """Return (previous, current) verdict after seeing ``score`` over ``n`` samples."""
        prev = self.verdict
        score = written(score)  # compared as a batch scan compares its rows' (aggregate.verdict_of)
        if score is None or n < self.s.min_samples:
            # Too little evidence left in the window: do not keep a stale verdict.
            self.verdict = "unknown" if n == 0 else prev
        elif score >= self.s.fake_above:
            self.verdict = "fake"
        elif score <= self.s.real_below:
            self.verdict = "real"
        elif prev == "unknown":
            self.verdict = "uncertain"
        return prev, self.verdict


@dataclass
class _Judge:
    roll: RollingScore
    hyst: Hysteresis


def _utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class StreamVerdicts:
    """Rolling state of one stream; :meth:`update` returns the events to emit."""

    name: str
    s: VerdictSettings = field(default_factory=VerdictSettings)

    def __post_init__(self):
        self.tracker = IoUTracker(self.s.track_iou, self.s.track_max_age_s)
        self.stream = _Judge(RollingScore(self.s.window_s), Hysteresis(self.s))
        self.tracks: dict[int, _Judge] = {}
        self.last_emit = time.monotonic()
        self.faces_last = 0
        # Face scores left out as NaN/inf, per frame, over the window: shown in the summary, so a
        # stream ``unknown`` because its detector scores NaN says so (`dfscan watch` hides the log).
        self.nonfinite = RollingScore(self.s.window_s)

    def _event(self, reason: str, judge: _Judge, prev: str, track: int | None, t: float | None) -> dict:
        """A verdict event; ``latency_s`` since the triggering frame's capture ``t``, none without one."""
        v = judge.roll.value
        ev = {
            "event": "verdict", "reason": reason, "time": _utc(), "stream": self.name, "track": track,
            "verdict": judge.hyst.verdict, "previous": prev,
            "score": written(v), "samples": judge.roll.count,
            "window_s": self.s.window_s,
        }
        if t is not None:
            ev["latency_s"] = round(time.monotonic() - t, 4)
        ev["alert"] = judge.hyst.verdict == "fake" and prev != "fake"
        return ev

    def update(self, t: float, boxes: np.ndarray, p_fake: np.ndarray, looks: list | None = None) -> list[dict]:
        """Add one sampled frame (capture time ``t``, monotonic s; ``boxes (K,4)``, ``p_fake (K,)``,
        ``looks``: the faces' :func:`scanner.appearance.look`, so a cut to another person framed
        alike starts a new track instead of inheriting the previous person's window)."""
        events = []
        ids, ended = self.tracker.update(boxes, t, looks)
        for i in ended:
            events += self._end_track(i)
        self.faces_last = len(ids)
        p_fake = np.asarray(p_fake, np.float64)
        finite = np.isfinite(p_fake)  # a NaN would freeze the window's mean until it expires
        # Averaged as written (6 decimals), as a scan row's faces are (scanner.summary): on exact
        # scores 0.4999994, 0.4999994, 0.4999999 read fake here and real in a scan.
        p_fake = np.array([written(p) for p in p_fake], np.float64)
        for tid, p, ok in zip(ids, p_fake, finite):
            j = self.tracks.setdefault(tid, _Judge(RollingScore(self.s.window_s), Hysteresis(self.s)))
            if ok:
                j.roll.add(t, float(p))
            else:
                j.roll.expire(t)
            prev, cur = j.hyst.update(j.roll.value, j.roll.count)
            if cur != prev:
                events.append(self._event("change", j, prev, tid, t))
        if finite.any():
            self.stream.roll.add(t, float(np.max(p_fake[finite])))
        if not finite.all():
            self.nonfinite.add(t, float((~finite).sum()))
        self.nonfinite.expire(t)
        self.stream.roll.expire(t)
        prev, cur = self.stream.hyst.update(self.stream.roll.value, self.stream.roll.count)
        if cur != prev:
            events.append(self._event("change", self.stream, prev, None, t))
        return events + self.tick(time.monotonic())

    def _end_track(self, tid: int) -> list[dict]:
        """Forget a track the tracker ended (its face gone for ``track_max_age_s``), with a
        change event to ``unknown`` when it had a verdict, as :meth:`close` gives each track.

        Why: it was dropped without one (a track ends well inside ``window_s``), and a
        reader of the events kept that face's ``fake`` as current for good."""
        j = self.tracks.pop(tid, None)
        if j is None or j.hyst.verdict == "unknown":
            return []
        prev, j.roll = j.hyst.verdict, RollingScore(self.s.window_s)
        j.hyst.update(None, 0)
        return [self._event("change", j, prev, tid, None)]  # no latency_s: no frame of this face

    def expire(self, now: float) -> list[dict]:
        """Age the stream's and tracks' windows to ``now`` without a frame; change events.

        Windows otherwise age only when a frame arrives: a stream whose frames stop
        (publisher gone, reconnecting) kept its last verdict, score and tracks in the
        API and the ``dfscan_stream_fake`` gauge for as long as it stayed down.
        """
        return self._without_frame("change", now, empty=False)

    def close(self, reason: str, now: float) -> list[dict]:
        """Change events to ``unknown`` for the stream and each track that had a verdict.

        A removed or shut-down stream gets no more events: a consumer of the events kept
        its last verdict (``fake``, ``real``) as the current one for good.
        """
        return self._without_frame(reason, now, empty=True)

    def _without_frame(self, reason: str, now: float, empty: bool) -> list[dict]:
        """Re-judge the stream and every track with no new frame: their windows aged to
        ``now``, or ``empty`` (every sample dropped: the verdict becomes ``unknown``).
        One event (``reason``, no ``latency_s``: no frame triggered it) per changed verdict."""
        events = []
        if empty:
            self.nonfinite = RollingScore(self.s.window_s)
        self.nonfinite.expire(now)
        for tid, j in [(None, self.stream), *self.tracks.items()]:
            if empty:
                j.roll = RollingScore(self.s.window_s)
            else:
                j.roll.expire(now)
            prev, cur = j.hyst.update(j.roll.value, j.roll.count)
            if cur != prev:
                events.append(self._event(reason, j, prev, tid, None))
        return events

    def tick(self, now: float) -> list[dict]:
        """Periodic summary event when ``emit_interval_s`` has passed since the last one.

        A verdict that ageing the window to ``now`` changes gets its own ``change`` event first:
        :meth:`update` ages to the frame's capture time, and a change seen only here went out
        as an ``interval`` summary, with no ``change`` event ever after (the verdict had moved)."""
        if now - self.last_emit < self.s.emit_interval_s:
            return []
        self.last_emit = now
        self.stream.roll.expire(now)
        prev, cur = self.stream.hyst.update(self.stream.roll.value, self.stream.roll.count)
        events = [self._event("change", self.stream, prev, None, None)] if cur != prev else []
        ev = self._event("interval", self.stream, cur, None, None)  # a summary: no triggering frame
        ev["tracks"] = {str(k): written(j.roll.value) for k, j in self.tracks.items() if j.roll.value is not None}
        return events + [ev]

    @property
    def summary(self) -> dict:
        # A track without a score in its window (all NaN, or expired) has none: not 0.0 (real).
        return {"verdict": self.stream.hyst.verdict, "score": written(self.stream.roll.value),
                "samples": self.stream.roll.count, "faces": self.faces_last,
                "nonfinite_scores": int(self.nonfinite.total),
                "tracks": {str(k): {"verdict": j.hyst.verdict, "score": written(j.roll.value)}
                           for k, j in self.tracks.items()}}
