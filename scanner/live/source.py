"""Live video source: a decode thread per stream with reconnects and a bounded buffer.

Each :class:`LiveSource` owns one thread that opens the stream with PyAV (options
and ``protocol_whitelist`` from :mod:`.urls`), decodes every frame (needed for
inter-coded video), converts only *sampled* frames (``sample_fps``) to RGB and
pushes them into a :class:`DropOldestBuffer`. On EOF, error or a stall flagged by
the :class:`~scanner.live.watchdog.Watchdog`, the thread backs off (exponential, with jitter) and
reconnects -- forever unless ``max_retries`` is set. The same thread survives
every reconnect, so thread count stays flat however often a stream drops.

RTSP with ``rtsp_transport="auto"`` asks for TCP first (no packet loss, passes
NAT) and, when the server refuses that transport (``461``) or nothing arrives in
time, retries at once over the other one. The transport that went live is
remembered and tried first on every reconnect.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import av
import numpy as np

from ..decode import FILE_OPEN_OPTIONS, Frame, pick_video_stream
from ..picture import picture_sar, to_frame
from . import tls
from .buffers import Backoff, DropOldestBuffer, SourceStats, _NullMetrics  # noqa: F401 - Backoff: re-exported
from .hls import is_playlist, needs_precheck, precheck_playlist
from .timing import MediaClock, Sampler, file_clock
from .urls import (SourceError, SourceURL, Unsupported, Untrusted, error_reason, open_options, parse_source,
                   unsupported_reason)

log = logging.getLogger(__name__)

STATES = ("connecting", "live", "stalled", "backoff", "stopped")
STABLE_S = 1.0  # a connection live this long resets the backoff


def has_format(name: str) -> bool:
    """Whether PyAV's FFmpeg has the format ``name``. Formats with several names are listed
    as one entry (``'video4linux2,v4l2'``): a plain ``in`` missed them, and every webcam was
    refused as unsupported."""
    return any(name in entry.split(",") for entry in av.formats_available)


@dataclass
class LiveFrame:
    """One sampled frame of a stream.

    ``frame`` is a :class:`scanner.decode.Frame`: upright RGB ``uint8 (H, W, 3)``
    image plus the downscaled copy the face detector uses. ``time_s`` is the
    stream timestamp (seconds, may restart on reconnect); ``t_capture`` is
    ``time.monotonic()`` when the frame left the decoder, the start of the
    frame-to-verdict latency.
    """

    stream: str
    seq: int
    time_s: float
    t_capture: float
    frame: Frame

    @property
    def image(self) -> np.ndarray:
        return self.frame.image


@dataclass
class SourceSettings:
    """Per-stream behaviour; seconds everywhere."""

    sample_fps: float = 2.0
    buffer_frames: int = 4
    open_timeout_s: float = 10.0
    stall_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.25
    max_retries: int | None = None  # None: reconnect forever
    rtsp_transport: str = "auto"  # auto (TCP, then UDP) | tcp | udp | udp_multicast | http | https
    decode_threads: int = 1
    allow_files: bool = False
    det_max_side: int = 960  # the face detector's input size (a downscaled copy is made at decode)
    tls_verify: bool = True  # false: any certificate is taken (a camera's self-signed one)
    ca_file: str | None = None  # trusted instead of certifi's bundle (a CA, or the camera's cert)


def is_transport_refusal(e: BaseException) -> bool:
    """True when an RTSP open failed because of the lower transport, not the server.

    FFmpeg maps an RTSP ``461 Unsupported transport`` reply to ``EPROTONOSUPPORT``;
    PyAV's interrupt callback (``ExitError``) and ``ETIMEDOUT`` mean no data came
    in time, e.g. UDP packets blocked by a firewall. A refused connection or a
    ``404`` is not: the other transport would fail the same way.
    """
    if isinstance(e, av.error.ExitError):
        return True
    return getattr(e, "errno", None) in (errno.EPROTONOSUPPORT, errno.ETIMEDOUT) or " 461 " in str(e)


class LiveSource:
    """Decode thread for one stream. ``notify()`` is called after each buffered frame."""

    def __init__(self, name: str, url: str, settings: SourceSettings | None = None,
                 notify: Callable[[], None] | None = None, metrics=None):
        self.name = name
        self.settings = s = settings or SourceSettings()
        self.src: SourceURL = tls.with_trust(parse_source(url, allow_files=s.allow_files), s.tls_verify, s.ca_file)
        tls.warn_unverified(name, self.src, is_playlist(self.src))
        self.buffer = DropOldestBuffer(s.buffer_frames)
        self.stats = SourceStats()
        self._notify = notify or (lambda: None)
        self._m = metrics or _NullMetrics()
        self._stop = threading.Event()
        self._abort = threading.Event()  # set by the watchdog: drop this connection
        self._backoff = Backoff(s.backoff_initial_s, s.backoff_max_s, s.backoff_jitter)
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._fps_mark = (time.monotonic(), 0)
        # RTSP lower transport of the last connection that decoded a frame (None before, and for
        # other schemes); ``_first`` is the one the next connection tries first.
        self.transport: str | None = None
        self._first: str | None = None
        self._went_live = False  # the current connection decoded a frame (at _live_since)
        self._live_since = 0.0
        # Digest of the last sampled picture, and since when it repeats (kept across reconnects).
        self._picture: bytes | None = None
        self._same_since: float | None = None
        if self.src.scheme in ("rtsp", "rtsps"):
            self._first = "tcp" if s.rtsp_transport == "auto" else s.rtsp_transport

    # ---- lifecycle -------------------------------------------------------
    def start(self) -> "LiveSource":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"dfscan-src-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._abort.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._set_state("stopped")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def state(self) -> str:
        return self.stats.state

    def heartbeat_age(self, now: float | None = None) -> float:
        ref = self.stats.last_frame_t or self.stats.state_since
        return (now or time.monotonic()) - ref

    def update_fps(self, now: float) -> None:
        """Decoded frames per second over the last >= 1 s (called by the watchdog)."""
        t, n = self._fps_mark
        if now - t >= 1.0:
            self.stats.fps = (self.stats.decoded - n) / (now - t)
            self._fps_mark = (now, self.stats.decoded)

    def flag_stall(self) -> None:
        """Called by the watchdog: mark stalled and make the decode loop reconnect."""
        if self.stats.state == "live":
            self._set_state("stalled")
            self._abort.set()

    def _set_state(self, state: str) -> None:
        if state != self.stats.state:
            log.info("stream %s: %s -> %s", self.name, self.stats.state, state)
            self.stats.state = state
            self.stats.state_since = time.monotonic()
            self._m.set_state(state)

    def describe(self) -> dict:
        st = self.stats
        return {
            "name": self.name, "url": self.src.masked, "state": st.state,
            "state_for_s": round(time.monotonic() - st.state_since, 3),
            "connects": st.connects, "reconnects": st.reconnects, "errors": st.errors,
            "frames_decoded": st.decoded, "frames_sampled": st.sampled, "frames_corrupt": st.corrupt,
            "frames_tone_mapped": st.tone_mapped,
            "frames_dropped": self.buffer.dropped, "fps": round(st.fps, 2),
            "last_error": st.last_error, "sample_fps": self.settings.sample_fps,
            "transport": self.transport,
            "tls_verify": self.src.tls_verify if self.src.scheme in tls.DEFAULT_PORTS else None,
        }

    # ---- decode thread ---------------------------------------------------
    def _run(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            self._set_state("connecting")
            self._abort.clear()
            try:
                self._session()
                reason = "end of stream"
            except (Unsupported, Untrusted, av.error.ProtocolNotFoundError) as e:
                # Retrying cannot help (a certificate needs the operator): say why and stop this stream.
                self.stats.errors += 1
                self._m.errors.inc()
                self.stats.last_error = self.src.redact(unsupported_reason(e, self.src.scheme))[:300]
                log.error("stream %s (%s): %s", self.name, self.src.masked, self.stats.last_error)
                break
            except SourceError as e:  # refused or invalid: still retried, the message says why
                reason = str(e)
            except av.error.ExitError:  # PyAV's interrupt callback: open/read timeout
                reason = f"timeout: no data within {s.open_timeout_s:g}s (open) / {2 * s.stall_s:g}s (read)"
            except Exception as e:  # noqa: BLE001 - any FFmpeg/IO failure means "reconnect"
                reason = error_reason(e)
                if self._first is not None and getattr(e, "errno", None) == errno.EPROTONOSUPPORT:
                    reason = f"RTSP over {self._first.upper()}: {reason}; try rtsp_transport: auto"
                elif self.src.auth and not self._went_live and getattr(e, "errno", None) == errno.EIO:
                    # FFmpeg's max_redirects error; not a live connection's drop (it was past any redirect)
                    reason += "; if the server redirected: a stream with credentials follows no redirect"
            if self._stop.is_set():
                break
            if self._went_live and time.monotonic() - self._live_since >= STABLE_S:
                # Only a connection that stayed up resets the backoff; one that drops right
                # after its first frame keeps backing off instead of hammering the server.
                # Timed from its first frame: a stall resets the state's clock, so a stream
                # live for hours that stalled kept the long backoff of its earlier failures.
                self._backoff.reset()
            self.stats.errors += reason != "end of stream"
            if reason != "end of stream":
                self._m.errors.inc()
            msg = self.src.redact(reason)[:300]
            # A stream down for hours must not flood the log: warn on a new error, then every 10th.
            level = logging.WARNING if msg != self.stats.last_error or self._backoff.attempt % 10 == 0 else logging.DEBUG
            self.stats.last_error = msg
            log.log(level, "stream %s (%s): %s (attempt %d)", self.name, self.src.masked, msg, self._backoff.attempt + 1)
            if s.max_retries is not None and self._backoff.attempt >= s.max_retries:
                log.log(logging.INFO if reason == "end of stream" else logging.ERROR,
                        "stream %s (%s): stopped after %d attempt(s) (max_retries %d): %s",
                        self.name, self.src.masked, self._backoff.attempt + 1, s.max_retries, msg)
                break
            self._set_state("backoff")
            self._stop.wait(self._backoff.next())
            self.stats.reconnects += 1
            self._m.reconnects.inc()
        self._set_state("stopped")

    def _open(self, transport: str | None):
        s = self.settings
        if needs_precheck(self.src):
            precheck_playlist(self.src, s.open_timeout_s, cancelled=self._stop.is_set)
        kw = {"format": "v4l2"} if self.src.kind == "device" else {}
        if self.src.kind == "device" and not has_format("v4l2"):
            raise Unsupported("this FFmpeg build has no v4l2 input device; webcams are unavailable")
        opts = open_options(self.src, s.open_timeout_s, transport or "tcp")
        if self.src.kind == "file":  # same demuxer restrictions as batch scanning of files
            opts.update(FILE_OPEN_OPTIONS)
        with tls.diagnosed(self.src, s.open_timeout_s):  # FFmpeg's untrusted certificate is a bare EIO
            return av.open(self.src.url, options=opts, timeout=(s.open_timeout_s, 2 * s.stall_s), **kw)

    def _session(self) -> None:
        """One connection (RTSP ``auto``: up to one per transport). Raises on failure."""
        if self._first is None or self.settings.rtsp_transport != "auto":
            return self._connect(self._first)
        first = self._first  # the one that last went live (TCP before any success)
        other = "udp" if first == "tcp" else "tcp"
        try:
            return self._connect(first)
        except Exception as e:  # noqa: BLE001 - only refusals/timeouts before the first frame fall back
            if self._went_live or self._stop.is_set() or not is_transport_refusal(e):
                raise
            log.info("stream %s: RTSP over %s failed (%s), trying %s", self.name, first.upper(),
                     self.src.redact(error_reason(e))[:200], other.upper())
            e1 = e
        try:
            return self._connect(other)
        except Exception as e2:  # noqa: BLE001 - the message names both attempts
            if self._went_live or self._stop.is_set():
                raise
            raise SourceError(self.src.redact(f"RTSP over {first.upper()}: {error_reason(e1)}; over "
                                              f"{other.upper()}: {error_reason(e2)}")) from e2

    def _connect(self, transport: str | None) -> None:
        """Open, decode until EOF/error/abort; ``transport`` is remembered once a frame arrives."""
        self._went_live = False
        container = self._open(transport)
        try:
            stream = pick_video_stream(container)
            if stream is None:
                raise SourceError(f"{self.src.masked}: no video stream")
            stream.codec_context.thread_count = self.settings.decode_threads
            self.stats.connects += 1
            self._decode(container, stream, transport)
        finally:
            container.close()

    def _went_live_over(self, transport: str | None) -> None:
        self._went_live, self._live_since = True, time.monotonic()
        if transport is not None and transport != self.transport:
            log.info("stream %s: RTSP over %s", self.name, transport.upper())
        self.transport = self._first = transport  # tried first on every reconnect
        self._m.set_transport(transport)

    def _decode(self, container, stream, transport: str | None = None) -> None:
        s = self.settings
        realtime = self.src.kind == "file"  # files play at their own rate, like a live feed
        # One clock per connection: frames without a timestamp get one (nominal rate for a
        # file, arrival time live), and a jump back does not restart it (.timing says why).
        clock = file_clock(container, stream, self.name) if realtime else MediaClock(None, self.name)
        sampler = Sampler(1.0 / s.sample_fps if s.sample_fps > 0 else 0.0)
        t0 = intact = None  # (wall, media) of the first frame; the last picture not concealed
        # The pixel aspect ratio may change mid-stream (4:3 <-> 16:9 broadcast): per picture.
        stream_sar, codec_sar = stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio
        for frame in self._frames(container, stream):
            t = clock(frame.time, time.monotonic())
            if realtime:
                t0 = t0 or (time.monotonic(), t)
                if self._pace(t0[0] + (t - t0[1])):
                    return
            now = time.monotonic()
            self.stats.decoded += 1
            self.stats.last_frame_t = now
            self._m.decoded.inc()
            if not self._went_live:
                self._went_live_over(transport)
            if self.stats.state != "live":
                self._set_state("live")
            if frame.is_corrupt:  # concealed (lost packets): the next intact frame is sampled instead
                self.stats.corrupt += 1
                self._m.corrupt.inc()
                intact = now if intact is None else intact
                if now - intact > s.stall_s and not realtime:  # as a frozen picture (see there)
                    raise SourceError(f"corrupt: only damaged pictures for {now - intact:.0f}s")
                continue
            intact = now
            if sampler.take(t):
                self._push(frame, t, now, picture_sar(stream_sar, codec_sar, stream.codec_context))
            if self._stop.is_set():
                return

    def _pace(self, until: float) -> bool:
        """Wait until ``until`` (monotonic), when a file's frame is due; True once stopped.

        The heartbeat is kept meanwhile: the wait is ours, not the source's. A file of under
        ``1/stall_s`` fps (a slide show) was taken as stalled and reconnected, i.e. played again
        from its start, for good: its later pictures were never scanned."""
        while (left := until - time.monotonic()) > 0:
            self.stats.last_frame_t = time.monotonic()
            if self._stop.wait(min(left, self.settings.stall_s / 2)):
                return True
        return False

    def _frames(self, container, stream):
        """``stream``'s frames; a stall is checked on every packet of *any* stream.

        ``container.decode(stream)`` reads the other streams' packets inside PyAV: with the
        video gone and the audio still flowing, the read timeout never fired and the
        watchdog's abort (seen per frame) never came, so the stream stayed ``stalled`` for good.
        """
        s = self.settings
        # Before the first frame (the watchdog leaves 'connecting' alone) a long GOP may delay it.
        limit, last = s.open_timeout_s + 2 * s.stall_s, time.monotonic()
        for packet in container.demux():
            if self._abort.is_set():
                raise SourceError("stalled: no frames within the watchdog limit")
            if time.monotonic() - last > limit:
                raise SourceError(f"stalled: packets arrive but no video frame for {limit:g}s")
            if packet.stream_index != stream.index:
                continue
            for frame in packet.decode():
                yield frame
                # as the read timeout; the time spent with the frame is not the stream's
                limit, last = 2 * s.stall_s, time.monotonic()

    def _same_picture(self, image: np.ndarray, now: float) -> bool:
        """True when ``image`` is the last sampled picture again: no new evidence, not pushed.

        A camera stuck on one picture keeps sending it: the stream stayed ``live`` and its
        verdict was renewed from that one picture for as long as it lasted. Left out, the
        verdict lapses with its window; after ``stall_s`` of it the connection is dropped
        like a stalled one (a stuck encoder often recovers in a new session). Not a file's:
        a new session replays it from its start, and a still stretch longer than ``stall_s``
        (a title card) caught it again there, for good.
        """
        digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
        if digest != self._picture:
            self._picture, self._same_since = digest, None
            return False
        if self._same_since is None:
            self._same_since = now
        if now - self._same_since > self.settings.stall_s and self.src.kind != "file":
            raise SourceError(f"frozen: the same picture for {now - self._same_since:.0f}s")
        return True

    def _push(self, frame, t: float, now: float, sar) -> None:
        # Conversion (RGB, HDR tone mapping, square pixels, detector-size copy, rotation) happens
        # here, in the stream's own thread, so it scales with streams instead of loading the worker.
        fr = to_frame(frame, self._seq, float(t), self.settings.det_max_side, sar)
        if self._same_picture(fr.image, now):
            return
        self._seq += 1
        self.stats.sampled += 1
        self.stats.tone_mapped += fr.hdr is not None
        self._m.sampled.inc()
        if self.buffer.put(LiveFrame(self.name, self._seq, float(t), now, fr)):
            self._m.dropped.inc()
        self._notify()
