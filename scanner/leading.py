"""What a decoder drops or reorders at the start of a stream, learnt while indexing.

A stream cut or recorded mid-GOP, or cut on an open-GOP keyframe (``ffmpeg -ss T -c copy``
of x264 ``open-gop``, MPEG-2 broadcast, x265 defaults), starts with pictures whose
references lie before the cut: decoders output nothing before the first keyframe and drop
that keyframe's *leading* pictures (shown before it, decoded after it). Counted as frames
they made frames_total too high and, sampled by pts, frame i became another picture.

HEVC says which leading pictures are undecodable (RASL NAL types), so
:class:`LeadingRasl` reads them from the bitstream. H.264 and MPEG-2 do not; what their
decoders drop is measured instead by :class:`FirstGop`, which decodes the first packets
from the first keyframe on, only when the index shows pictures that might be leading.
"""
from __future__ import annotations

import av
import numpy as np

# Leading pictures are decoded right after their keyframe (within its reorder depth,
# 16 at most in H.264/HEVC); decoding this many from it finds them all (32 1080p
# H.264 frames: ~0.2 s on 2 busy cores, paid only by files whose start looks like
# that). The byte cap bounds what is held during the index pass (32 frames of 4K
# ProRes would be ~120 MB; intra-only codecs have no leading pictures anyway).
PROBE_PACKETS = 32
PROBE_BYTES = 16 << 20


class LeadingRasl:
    """Spots the HEVC RASL pictures of a stream's first keyframe (a CRA: open GOP).

    Why: they refer to pictures before the cut, so decoders drop them. A cut remuxed to
    Matroska (no edit list) keeps them with no pts at all (theirs was negative), and
    counted as untimed frames they made frames_total too high and the last targets
    missing in output order; that file remuxed to MP4 gives them invented pts (one a
    duplicate, so output order again). RADL pictures (decodable leading) are kept.
    """

    def __init__(self, stream):
        extra = stream.codec_context.extradata or b""
        self.hevc = stream.codec_context.name == "hevc"
        # hvcC: NAL units behind a length field; no extradata or Annex B: start codes.
        self.length_size = (extra[21] & 3) + 1 if len(extra) > 22 and extra[0] == 1 else 0
        self.keyframes = 0

    def skip(self, pkt) -> bool:
        """Count ``pkt``'s keyframe flag; True for a RASL picture of the first keyframe."""
        self.keyframes += bool(pkt.is_keyframe)
        return (self.hevc and self.keyframes == 1
                and first_vcl_type(bytes(pkt), self.length_size) in (8, 9))


def first_vcl_type(data: bytes, length_size: int) -> int | None:
    """HEVC NAL unit type of the first slice (types 0-31) in an access unit."""
    pos = 0
    while pos < len(data) - 1:
        if length_size:
            start = pos + length_size
            pos = start + int.from_bytes(data[pos:start], "big")
        else:
            start = data.find(b"\x00\x00\x01", pos) + 3
            if start < 3:
                return None
            pos = start
        if start < len(data) and (data[start] >> 1) & 0x3F < 32:
            return (data[start] >> 1) & 0x3F
    return None


class FirstGop:
    """The first :data:`PROBE_PACKETS` packets from the first keyframe on (references to
    PyAV's packets, no copy) and the frames counted in the index before that keyframe.

    Why measured: an H.264 or MPEG-2 keyframe with leading pictures may or may not be a
    clean entry point (closed vs open GOP), which no flag tells; and a muxer that loses
    the composition offsets (MP4 ``-video_track_timescale 1``) leaves decode-order stamps
    that look like a stream without B-frames. Decoding the first packets shows both.
    """

    def __init__(self):
        self.packets: list[tuple[av.Packet, bool]] = []  # (packet, counted as a frame)
        self.lead_in = 0  # frames counted before the first keyframe (decode order)
        self.key_pts: int | None = None
        self.leading = False  # a counted picture that may be shown before the keyframe
        self.bytes, self.full = 0, False

    @property
    def started(self) -> bool:
        return bool(self.packets)

    def add(self, pkt, counted: bool) -> None:
        if not self.packets and not pkt.is_keyframe:
            self.lead_in += counted
            return
        # A contiguous run from the keyframe (kept whatever its size) to the first packet
        # over a cap.
        self.full |= bool(self.packets) and (len(self.packets) >= PROBE_PACKETS
                                             or self.bytes + pkt.size > PROBE_BYTES)
        if self.full:
            return
        self.bytes += pkt.size if self.packets else 0
        if not self.packets:
            self.key_pts = pkt.pts
        elif counted and (pkt.pts is None or self.key_pts is None or pkt.pts < self.key_pts):
            self.leading = True
        self.packets.append((pkt, counted))

    def decode(self, cc, reorder: bool) -> tuple[set[int], int, bool]:
        """Decode the kept packets when they may hold leading pictures (or, ``reorder``,
        to see whether output order differs from pts order): (pts of counted pictures
        the decoder never output, count of untimed ones, pts came out of order)."""
        if not (self.leading or reorder) or not self.packets:
            return set(), 0, False
        out: list[int | None] = []
        cc.thread_type = "AUTO"  # as the scan decodes (frame threads: flushed below)
        for pkt in [p for p, _ in self.packets] + [None]:  # None: flush the reorder delay
            try:
                out += [f.pts for f in cc.decode(pkt)]
            except av.error.FFmpegError:
                continue  # a corrupt packet drops its picture here as in the scan's decode
        timed = [p for p in out if p is not None]
        counted = [p.pts for p, c in self.packets if c]
        gone = {p for p in counted if p is not None} - set(timed)
        untimed_gone = max(0, sum(p is None for p in counted) - (len(out) - len(timed)))
        backwards = bool(np.any(np.diff(np.asarray(timed, np.int64)) < 0)) if len(timed) > 1 else False
        return gone, untimed_gone, backwards


def decodable(shown: np.ndarray, pts: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``shown`` without the lead-in of a stream cut or recorded mid-GOP (an MPEG-TS):
    the frames before its first keyframe, and that keyframe's leading pictures, refer to
    pictures the file lacks; H.264, HEVC and MPEG-2 decoders drop them, so sampling them
    lost frames. A stream that starts on a keyframe (or has none flagged) is unchanged
    here (its leading pictures are measured by :class:`FirstGop`)."""
    if not len(key) or key[0] or not key.any():
        return shown
    first = int(np.argmax(key))
    return shown[(shown >= pts[first]) & ~np.isin(shown, pts[:first])]
