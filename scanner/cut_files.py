"""Files that end before their own container says they do (cut, or still being written).

FFmpeg's demuxers stop without an error at many such cuts (a Matroska file between
clusters, a fragmented MP4 inside a box, an AVI on a chunk boundary, an MPEG-TS or raw DV
on a whole packet): the file then reads as a shorter, complete video and its verdict is on
part of it. Each check here compares the file's length with what its headers declare and
makes no claim where they declare none (written to a pipe, sizes left unset).
:func:`scanner.video_index.build_index` calls :func:`cut_short` after its demux pass.
"""
from __future__ import annotations

import os
import struct


def cut_short(container, stream) -> bool:
    """Whether ``container`` (a PyAV input opened on a file) ends before its headers say."""
    return (_matroska_cut(container) or _mpegts_cut(container) or _dv_cut(container, stream)
            or _fragments_cut(container) or _riff_cut(container))


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int, bool]:
    """EBML variable-size integer at ``pos``: (value, next position, all value bits set)."""
    first = data[pos]
    length = 9 - first.bit_length()  # 1 leading zero per extra byte
    if first == 0 or pos + length > len(data):
        raise ValueError("not an EBML integer")
    raw = int.from_bytes(data[pos:pos + length], "big")
    value = raw if keep_marker else raw & ((1 << (7 * length)) - 1)
    return value, pos + length, value == (1 << (7 * length)) - 1


def _matroska_cut(container) -> bool:
    """A Matroska/WebM file shorter than its Segment says: cut at a cluster boundary, where
    FFmpeg's demuxer stops without an error. Unknown-size Segments (live recordings) pass."""
    if "matroska" not in container.format.name:
        return False
    try:
        with open(container.name, "rb") as f:
            head, size = f.read(4096), os.fstat(f.fileno()).st_size
        ebml, pos, _ = _vint(head, 0, True)
        length, pos, _ = _vint(head, pos, False)
        seg, pos, _ = _vint(head, pos + length, True)
        length, pos, unknown = _vint(head, pos, False)
    except (OSError, ValueError, IndexError):
        return False  # not a plain file, or a header this check does not know: no claim
    return ebml == 0x1A45DFA3 and seg == 0x18538067 and not unknown and pos + length > size


def _fragments_cut(container) -> bool:
    """A fragmented MP4/MOV (moof boxes: a crash-safe recording, a DASH/CMAF download) that
    ends inside a box. Fragments carry no sample table for :func:`_samples_missing` to
    count, and a cut inside a moof, or inside an mdat on a sample boundary, left FFmpeg's
    demuxer stopping without an error: a verdict on the part before; so did a cut after a
    moof, whose samples' mdat follows it. A cut exactly between two fragments is not
    visible (no header gives the length): no claim."""
    name = container.format.name
    if "mp4" not in name and "mov" not in name:
        return False
    pos, fragmented, kind = 0, False, b""
    try:
        with open(container.name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while pos + 8 <= size:  # top-level boxes only, each a seek and a 16-byte read
                f.seek(pos)
                head = f.read(16)
                box, kind = struct.unpack(">I4s", head[:8])
                if box == 1 and len(head) == 16:
                    box = struct.unpack(">Q", head[8:])[0]  # 64-bit size
                if box < 8:
                    return False  # 0: to the end of the file; or not a box: no claim
                fragmented |= kind == b"moof"
                pos += box
    except OSError:
        return False  # not a plain file: no claim
    # past the end, a box header cut short, or a fragment's moof without its mdat
    return fragmented and (pos != size or kind == b"moof")


def _riff_cut(container) -> bool:
    """An AVI shorter than its RIFF chunks say (one chunk, or an OpenDML series: RIFF AVI,
    then RIFF AVIX for each further GB): cut inside its data, where FFmpeg's demuxer stops
    quietly at a chunk boundary (a cut in the header is :func:`scanner.decode._avi_cut`).
    A size left at 0 or 0xFFFFFFFF (written to a pipe, a capture stopped before it could
    seek back) gives no length: no claim."""
    if container.format.name != "avi":
        return False
    pos = end = 0
    try:
        with open(container.name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while pos + 8 <= size:
                f.seek(pos)
                head = f.read(8)
                n = int.from_bytes(head[4:8], "little")
                if head[:4] != b"RIFF":
                    break  # bytes after the last chunk: not this check's to judge
                if n in (0, 0xFFFFFFFF):
                    return False
                end, pos = pos + 8 + n, pos + 8 + n + (n & 1)  # chunks are padded to even
    except OSError:
        return False
    return end > size


def _mpegts_cut(container) -> bool:
    """An MPEG-TS that does not end on a whole packet (188 bytes, 192 in M2TS, 204 with
    FEC): cut mid-packet, e.g. still being written, where FFmpeg's demuxer stops without
    an error and passes on the last frame's partial data. A cut at a packet boundary is
    not visible (no header gives the length): no claim."""
    if "mpegts" not in container.format.name:
        return False
    try:
        with open(container.name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 2 * 204))
            tail = f.read()
    except OSError:
        return False  # not a plain file: no claim
    if size < 2 * 204:
        return False
    n = len(tail)
    return not any(tail[n - p + sync] == tail[n - 2 * p + sync] == 0x47
                   for p, sync in ((188, 0), (192, 4), (204, 0)))


def _dv_cut(container, stream) -> bool:
    """A raw DV file that is not a whole number of frames (DV frames have one fixed size:
    the bit rate over the frame rate, e.g. 144000 bytes in PAL DV25): cut mid-frame, whose
    last packet the demuxer pads to full size without a word."""
    if container.format.name != "dv":
        return False
    rate, bits = stream.guessed_rate, stream.codec_context.bit_rate
    try:
        size = os.stat(container.name).st_size
    except OSError:
        return False
    frame = round(bits / 8 / float(rate)) if rate and bits else 0
    return frame > 0 and size % frame != 0
