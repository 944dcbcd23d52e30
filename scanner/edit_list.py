"""MP4/MOV edit lists FFmpeg cannot present, read from the file's ``elst`` box.

FFmpeg applies edit lists that keep ranges of the media at normal speed, in any number
and order (a phone's trim keeping two ranges; empty edits first: a start delay). Two
kinds it does not: an empty edit (media_time -1) after a media edit, a gap mid-movie or
at the end, which it fills with media from the start (frames no player shows, counted and
judged); and a media_rate other than 1 (a QuickTime "dwell", rate 0, holding one frame),
which it ignores, showing the frames a dwell hides. PyAV shows neither, so the box is
read here and such a file refused rather than judged on frames it never shows.
"""
from __future__ import annotations

import struct

MAX_MOOV = 64 << 20  # a moov larger than this is read by no check here: no claim
_PATH = (b"trak", b"edts", b"elst")


def _boxes(data: bytes, pos: int = 0, end: int | None = None):
    """(type, payload start, payload end) of the boxes in ``data[pos:end]``."""
    end = len(data) if end is None else end
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if size == 1 and pos + 16 <= end:
            size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < head:
            return
        yield kind, pos + head, min(pos + size, end)
        pos += size


def _read_moov(path) -> bytes | None:
    """The top-level moov box's payload (walking box headers; mdat is skipped by seeking)."""
    with open(path, "rb") as f:
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            size, kind = struct.unpack(">I4s", head)
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0] - 8
            if kind == b"moov":
                return f.read(size - 8) if 8 < size <= MAX_MOOV else None
            if size < 8:
                return None  # size 0 (to the end of file) or broken: no moov after it
            f.seek(size - 8, 1)


def _track_id(data: bytes, start: int, end: int) -> int | None:
    for kind, p, _ in _boxes(data, start, end):
        if kind == b"tkhd":
            return struct.unpack(">I", data[p + 12:p + 16] if data[p] == 0 else data[p + 20:p + 24])[0]
    return None


def _entries(data: bytes, p: int, end: int) -> list[tuple[int, float]]:
    """(media_time, media_rate) of each elst entry (version 0 or 1)."""
    wide = data[p] == 1
    n = struct.unpack(">I", data[p + 4:p + 8])[0]
    size, fmt = (20, ">Qqhh") if wide else (12, ">Iihh")
    p += 8
    n = min(n, (end - p) // size)  # a count past the box's end: the entries present
    out = []
    for i in range(n):
        _, t, whole, frac = struct.unpack(fmt, data[p + i * size:p + (i + 1) * size])
        out.append((t, whole + frac / 65536))
    return out


def _track_edits(moov: bytes, track_id: int) -> list[tuple[int, float]]:
    for kind, start, end in _boxes(moov):
        if kind != b"trak" or _track_id(moov, start, end) != track_id:
            continue
        edts = next((b for b in _boxes(moov, start, end) if b[0] == b"edts"), None)
        elst = edts and next((b for b in _boxes(moov, edts[1], edts[2]) if b[0] == b"elst"), None)
        return _entries(moov, elst[1], elst[2]) if elst else []
    return []


def unsupported_edits(path, track_id: int) -> str | None:
    """Why track ``track_id``'s edit list is one FFmpeg mis-presents, or None."""
    try:
        entries = _track_edits(_read_moov(path) or b"", track_id)
    except (OSError, struct.error, IndexError):
        return None  # the demuxer read this file; a box this reader cannot parse: no claim
    media = [i for i, (t, _) in enumerate(entries) if t != -1]
    # Empty edits before the first media edit are a start delay, which FFmpeg applies.
    if media and any(t == -1 for t, _ in entries[media[0]:]):
        return "an empty edit (a gap) after the start"
    if any(t != -1 and rate != 1 for t, rate in entries):
        return "an edit at a media rate other than 1 (a dwell or speed change)"
    return None
