"""Frame times of a live source: one monotonic media clock per connection, and the sampler.

Decoded frames do not always carry a timestamp: raw H.264 has none, H.264 in MPEG-PS has
one on every other picture. The source used the wall clock for those, mixing two clocks
in one connection: a file played as live slept for the monotonic clock's value (hours)
after its first PTS-less picture, and a stream alternating the two was sampled on every
frame. Timestamps also jump back (a publisher restarting, a 33-bit MPEG wrap, segments
joined with ``cat``): a file then played its remainder at full speed, with no pacing.
Or forward, by hours (MPEG-TS recordings joined with ``cat``): a file then waited those
hours, shown ``live``, before its later part was scanned.
And they stand still (a camera stamping every frame alike): the clock stood still with them,
so a stream live for hours was sampled once, and never had a verdict.
"""
from __future__ import annotations

import logging

import av

log = logging.getLogger("scanner.live.source")  # said of the stream the clock times

BACK_TOLERANCE_S = 0.5  # a smaller step back is jitter: held, not taken as a new timeline
# A file's step forward beyond this, in a format whose clock may restart (MPEG-TS/PS: FFmpeg's
# ``ts_discont``), is a new timeline, as FFmpeg's own dts_delta_threshold takes it.
DISCONT_S = 10.0
EPS = 1e-6


class MediaClock:
    """Seconds of media, never decreasing, for the frames of one connection.

    ``step_s``: the nominal frame duration, used for a frame without a timestamp (a file,
    whose frames decode faster than real time); None: the wall time since the previous
    frame is used instead (a live stream, whose frames arrive at the rate they are shot).
    A jump back of more than :data:`BACK_TOLERANCE_S` continues the clock one step after
    the previous frame; a smaller one holds it there until the stream catches up. Held for
    frames worth more than that (steps summed), the timestamps are not used again: each
    frame is then one step after the previous one, as without a timestamp (logged once, of
    stream ``name``). ``jump_s``: a jump forward of more than that continues the clock too.
    """

    def __init__(self, step_s: float | None, name: str = "?", jump_s: float | None = None):
        self._step_s, self._jump_s = step_s, jump_s
        self._offset = 0.0  # added to the stream's own timestamps
        self._last: float | None = None  # the previous frame's time
        self._last_now = 0.0
        self._stamped = False  # a frame with a timestamp was seen
        self._held = 0.0  # steps the clock stood still for, held by stamps not moving on
        self.stuck = False  # the stamps stood still too long: not used from then on
        self._name = name

    def __call__(self, raw: float | None, now: float) -> float:
        """The time of a frame with timestamp ``raw`` (None: none) decoded at ``now`` (monotonic)."""
        last, step = self._last, self._step(now)
        if last is None:
            t = 0.0 if raw is None else raw
        elif raw is None or self.stuck:
            t = last + step
        elif not self._stamped or self._new_timeline(raw + self._offset - last):
            # The first stamp after unstamped frames, or a new timeline: continue from here.
            self._offset = last + step - raw
            t = last + step
        else:
            t = self._held_or_moved(raw + self._offset, last, step)
        self._stamped = self._stamped or raw is not None
        self._last, self._last_now = t, now
        return t

    def _new_timeline(self, ahead: float) -> bool:
        """Whether a stamp ``ahead`` seconds after the previous frame's time starts a new timeline."""
        return ahead < -BACK_TOLERANCE_S or (self._jump_s is not None and ahead > self._jump_s)

    def _held_or_moved(self, stamped: float, last: float, step: float) -> float:
        """``stamped`` if it moves the clock on; else ``last`` (held), until the holds add up
        to more than :data:`BACK_TOLERANCE_S`: then the stamps are given up (``stuck``)."""
        if stamped > last:
            self._held = 0.0
            return stamped
        self._held += step
        if self._held <= BACK_TOLERANCE_S:
            return last
        self.stuck = True
        log.warning("stream %s: frame timestamps stopped moving on; timing its frames by %s until it "
                    "reconnects", self._name, "their arrival" if self._step_s is None else "the frame rate")
        return last + step

    def _step(self, now: float) -> float:
        return self._step_s if self._step_s is not None else max(now - self._last_now, 0.0)


class Sampler:
    """Takes frames ``period_s`` apart in media time (0: every frame).

    The grid of sample times is kept (a 3 fps source sampled at 2 fps gives 2 a second, not
    1.5), but after a gap the next sample is one period after the frame taken, not at once:
    a jump forward made the grid restart at the frame itself, so the very next frame, 40 ms
    later, was sampled too.
    """

    def __init__(self, period_s: float):
        self.period_s = period_s
        self._next: float | None = None

    def take(self, t: float) -> bool:
        # EPS: times summed from a nominal step (0.1 * 10 = 0.9999999999999999) are on the grid.
        if self._next is not None and t < self._next - EPS:
            return False
        nxt = t if self._next is None else self._next
        nxt += self.period_s
        self._next = nxt if nxt > t else t + self.period_s
        return True


def file_clock(container, stream, name: str) -> MediaClock:
    """The clock of a file played as a stream: nominal steps, and jumps forward of more than
    :data:`DISCONT_S` taken as new timelines where the format's clock may restart."""
    flags = getattr(getattr(container, "format", None), "flags", 0)
    discont = flags & av.format.Flags.ts_discont.value
    return MediaClock(frame_step(stream), name, DISCONT_S if discont else None)


def frame_step(stream) -> float:
    """Nominal frame duration of a PyAV video ``stream`` (FFmpeg's guessed rate first: a raw
    H.264 stream's ``average_rate`` is FFmpeg's 25 fps default, its guessed one the SPS's)."""
    for rate in (getattr(stream, "guessed_rate", None), getattr(stream, "average_rate", None)):
        if rate and 0 < float(rate) <= 1000:
            return 1.0 / float(rate)
    return 1.0 / 25
