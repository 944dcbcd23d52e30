"""Demux-only index of a video stream and the plan of what to decode from it.

:func:`build_index` reads every video packet's pts and keyframe flag without
decoding (exact frame count and times even when the header lies, variable frame
rate, truncation as the demuxer reports it; only the first packets are decoded when
they may hold pictures the decoder drops: :mod:`scanner.leading`);
:func:`choose_targets` picks the presentation times to sample; :func:`gop_plan`
groups the GOPs that must be decoded for them into runs read with one seek each.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Sequence

import av
import numpy as np

from .cut_files import cut_short
from .leading import FirstGop, LeadingRasl, decodable

@dataclass
class VideoIndex:
    """Demux-only index of a video stream, as compact arrays (8 + 1 bytes per packet).

    Attributes:
        pts: ``int64 (P,)`` pts of each non-empty packet, decode order.
        keyframe: ``bool (P,)`` keyframe flag of each packet.
        presentation: ``int64 (F,)`` sorted pts of the frames shown (not an edit list's
            discarded lead-in), or output ordinals when ``ordinal``.
        empty_packets: zero-size packets (AVI "dropped frame" chunks), not frames.
    """

    pts: np.ndarray
    keyframe: np.ndarray
    truncated: bool
    time_base: float
    start: int
    width: int
    height: int
    codec: str
    presentation: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ordinal: bool = False  # True: pts unusable, ``presentation`` holds output ordinals
    empty_packets: int = 0

    @property
    def frames(self) -> int:
        return len(self.presentation)

    @property
    def duration_s(self) -> float:
        if len(self.presentation) < 2:
            return 0.0
        return float(self.presentation[-1] - self.presentation[0]) * self.time_base

    def time_of(self, pts: int) -> float:
        return float(pts - self.start) * self.time_base

    def rank(self, pts: int) -> int:
        """Presentation index of a frame's pts."""
        return int(np.searchsorted(self.presentation, pts))


def _samples_missing(container, stream, packets: int) -> bool:
    """An MP4/MOV whose sample table lists more samples than could be read.

    Why the demuxer's index and not only the header's count (``stream.frames``): an edit
    list starting past whole GOPs (a cut of a cut, a phone's trim) leaves samples no shown
    frame needs; FFmpeg drops them from its index, so they are never read, and counting
    them called a complete video truncated. A fragmented MP4 (no count) makes no claim.
    """
    name = container.format.name
    if "mp4" not in name and "mov" not in name:
        return False
    return packets < min(stream.frames or 0, len(stream.index_entries))


def _jumps_back(dts: array) -> bool:
    """Decode timestamps that go back in a format whose clock may restart (MPEG-TS/PS,
    Ogg: ``ts_discont``), e.g. recordings joined with ``cat``: sorting by pts would put
    the later part's frames first, so presentation order is not pts order there."""
    d = np.frombuffer(dts, np.int64)  # collected for ts_discont formats only
    return bool(np.any(d[1:] < d[:-1]))


def _decode_order_stamps(container, stream, pts: np.ndarray) -> bool:
    """AVI and ASF keep no presentation times: packets carry decode-order stamps, and a
    codec that reorders (H.264 B-frames) outputs pictures in another order than those
    stamps, each with its packet's stamp; ranked by them, frame 4 was another picture."""
    name = container.format.name
    return (name in ("avi", "asf") and bool(stream.codec_context.has_b_frames)
            and bool(np.all(np.diff(pts) > 0)))


def _broken_stamps(container, stream, pts: np.ndarray, dts: array) -> bool:
    """Timestamps that do not give presentation order: duplicates, a clock that
    restarts, decode-order stamps."""
    return (len(np.unique(pts)) < len(pts) or _jumps_back(dts)
            or _decode_order_stamps(container, stream, pts))


@dataclass
class _Packets:
    """What the demux pass collected (decode order)."""

    pts: array = field(default_factory=lambda: array("q"))  # timed packets
    key: array = field(default_factory=lambda: array("b"))
    shown: array = field(default_factory=lambda: array("q"))  # pts of timed frames counted
    untimed_key: array = field(default_factory=lambda: array("b"))  # untimed frames counted
    dts: array = field(default_factory=lambda: array("q"))  # ts_discont formats only
    first_gop: FirstGop = field(default_factory=FirstGop)
    empty: int = 0
    truncated: bool = False


def _demux(container, stream) -> _Packets:
    got, short_read = _Packets(), False
    discont = container.format.flags & av.format.Flags.ts_discont.value  # see _jumps_back
    rasl = LeadingRasl(stream)
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:
                got.empty += pkt.pts is not None or pkt.dts is not None  # not the flush packet
                continue
            short_read = bool(pkt.is_corrupt)
            leading = rasl.skip(pkt)  # never output: not a frame shown
            # Why not discard ones: an MP4 edit list starting mid-GOP marks the frames
            # before its start "discard": decoded as references, never output.
            counted = not leading and (pkt.pts is None or not pkt.is_discard)
            got.first_gop.add(pkt, counted)
            if pkt.pts is None:
                if counted:
                    got.untimed_key.append(bool(pkt.is_keyframe))
                continue
            got.pts.append(int(pkt.pts))
            got.key.append(bool(pkt.is_keyframe))
            if discont and pkt.dts is not None:
                got.dts.append(int(pkt.dts))
            if counted:
                got.shown.append(int(pkt.pts))
    except av.error.FFmpegError:
        got.truncated = True  # data ends before the container says it should
    got.truncated |= short_read
    return got


def build_index(container, stream) -> VideoIndex:
    """Demux the whole video stream (decoding only the first packets, and only when they
    may hold pictures the decoder drops: :mod:`scanner.leading`) and record pts + keyframe
    flags.

    Truncation is what the demuxer reports: an error, or a last packet cut short by
    the end of the file (FFmpeg flags that short read as corrupt; MP4 and AVI demuxers
    then stop quietly). The header's frame count is only a hint in AVI (capture tools
    write empty "dropped frame" chunks that it counts as frames), but an MP4/MOV
    sample table lists every sample: fewer packets than it lists means the file was
    cut on a sample boundary, which no read error reveals; a fragmented MP4 cut inside a
    box and an AVI cut inside its RIFF chunks are shorter than those say, as a Matroska file
    cut between clusters is than its Segment's declared size; an MPEG-TS cut mid-packet does
    not end on a whole one, nor raw DV on a whole frame.
    """
    got = _demux(container, stream)
    truncated = got.truncated or (_samples_missing(container, stream, len(got.pts) + got.empty)
                                  or cut_short(container, stream))
    pts_a, key_a = np.frombuffer(got.pts, np.int64).copy(), np.frombuffer(got.key, np.int8).astype(bool)
    cc = stream.codec_context
    broken = _broken_stamps(container, stream, pts_a, got.dts)
    # A reordering codec whose pts rise in decode order: real stamps of a clip without
    # B-frames, or decode-order stamps (the composition offsets lost) only decoding tells.
    reorder = not broken and bool(cc.has_b_frames) and len(pts_a) > 1 and bool(np.all(np.diff(pts_a) > 0))
    gone, untimed_gone, backwards = got.first_gop.decode(cc, reorder)
    lead_in = got.first_gop.lead_in if got.first_gop.started else 0  # none flagged: no claim
    # Frames without a pts among timed ones (H.264 in MPEG-PS: one pts per PES packet of
    # several pictures) are frames all the same, in an order only the decoder knows.
    untimed = len(got.untimed_key) - untimed_gone
    if untimed and not len(pts_a):
        # A raw elementary stream (.h264, .hevc) has no timestamps at all: its packets
        # are frames in order, identified by output order as below.
        pts_a, key_a = np.zeros(len(got.untimed_key), np.int64), np.frombuffer(got.untimed_key, np.int8).astype(bool)
    shown = np.frombuffer(got.shown, np.int64)
    tb = float(stream.time_base) if stream.time_base else 1.0 / 25
    presentation = decodable(np.unique(shown[~np.isin(shown, list(gone))]), pts_a, key_a)
    ordinal = untimed > 0 or broken or backwards
    if ordinal:
        # Frames are identified by output order and timed by the nominal rate instead;
        # the decoder outputs nothing before the first keyframe nor the pictures it drops.
        rate = stream.guessed_rate or stream.average_rate or 25
        n = len(shown) - len(gone) + untimed - lead_in
        presentation, tb = np.arange(max(n, 0), dtype=np.int64), 1.0 / float(rate)
    start = int(presentation[0]) if len(presentation) else 0
    return VideoIndex(pts_a, key_a, truncated, tb, start, cc.width, cc.height, cc.name, presentation,
                      ordinal, got.empty)


# --fps on a long video must not grow per-video state without bound: at most this many
# frames (the same limit as --frames), spread evenly over the video beyond it.
MAX_SAMPLED_FRAMES = 10_000


def choose_targets(index: VideoIndex, frames: int | None, fps: float | None,
                   indices: Sequence[int] | None = None, max_frames: int = MAX_SAMPLED_FRAMES) -> list[int]:
    """Presentation pts to sample: the given presentation ``indices``, ``frames``
    evenly spaced, or one every ``1/fps`` s (at most ``max_frames``)."""
    pres = index.presentation
    if not len(pres):
        return []
    if indices is not None:
        idx = np.unique(np.asarray(indices, np.int64))
        if len(idx) and (idx[0] < 0 or idx[-1] >= len(pres)):
            raise ValueError(f"frame indices must lie in [0, {len(pres)})")
        return [int(pres[i]) for i in idx]
    if fps:
        # Count the times before making them (numpy's own arange length): a crafted 3-packet
        # file whose last pts lies 10^9 s on made arange allocate gigabytes (up to an OOM
        # kill of the whole scan) before the cap below was even checked.
        n = int(np.ceil((index.duration_s + 1e-9) / (1.0 / fps)))
        if n > max_frames:
            times = np.linspace(0.0, index.duration_s, max_frames)
        else:
            times = np.arange(0.0, index.duration_s + 1e-9, 1.0 / fps)
        return sorted({int(v) for v in _shown_at(pres, index.start, index.time_base, times)})
    n = min(frames or 32, len(pres))
    idx = np.unique(np.linspace(0, len(pres) - 1, n).round().astype(int))
    return [int(pres[i]) for i in idx]


def _shown_at(pres: np.ndarray, start: int, time_base: float, times: np.ndarray) -> np.ndarray:
    """Pts of the frame on screen at each time (s from ``start``): the last one starting at
    or before it.

    Why not the nearest frame: half a frame interval past a frame's start, the nearest is
    one not shown yet, and a grid time exactly between two frames (--fps 10 on 25 fps, or
    on a phone's 15 fps stretch) went to either one by float rounding (PAL at --fps 10
    gave frames 2, 5, 8 at 0.1, 0.2, 0.3 s). Compared in seconds with 1 us of slack, so a
    frame starting exactly on a grid time (or ending the video) is the one sampled there.
    """
    shown = (pres - start) * time_base
    i = np.searchsorted(shown, times + 1e-6, side="right") - 1
    return pres[np.maximum(i, 0)]


@dataclass
class Run:
    """Consecutive GOPs (decode order) read with one seek: packets ``[first, end)``."""

    key_pts: int  # pts of the keyframe to seek to
    first: int
    end: int
    wanted: set[int]


def gop_plan(index: VideoIndex, targets: Sequence[int]) -> list[Run]:
    """Runs of GOPs to decode so that every target comes out of the decoder.

    A target shown before its GOP's keyframe (an open-GOP "leading" picture, e.g.
    HEVC RASL or x264 open-gop B-frames) references the previous GOP, so its run
    starts one GOP earlier. Runs that touch or overlap are merged (no seek).
    """
    starts = np.flatnonzero(index.keyframe)
    if not len(starts) or starts[0] != 0:
        starts = np.concatenate([[0], starts])  # packets before the first keyframe: own group
    bounds = np.append(starts, len(index.pts))
    order = np.argsort(index.pts, kind="stable")
    t = np.asarray(sorted(targets), np.int64)
    packet = order[np.searchsorted(index.pts[order], t)]
    gop = np.searchsorted(starts, packet, side="right") - 1
    leading = t < index.pts[starts[gop]]
    first = np.maximum(gop - leading, 0)
    runs: list[list] = []
    for f, g, p in sorted(zip(first.tolist(), gop.tolist(), t.tolist())):
        if runs and f <= runs[-1][1] + 1:
            runs[-1][1] = max(runs[-1][1], g)
            runs[-1][2].add(p)
        else:
            runs.append([f, g, {p}])
    return [Run(int(index.pts[bounds[f]]), int(bounds[f]), int(bounds[g + 1]), w) for f, g, w in runs]
