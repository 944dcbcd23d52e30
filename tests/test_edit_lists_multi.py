"""MP4/MOV edit lists of several entries: an ``elst`` rewritten here on a 40-frame clip.

FFmpeg presents ranges of the media kept in any number and order, and empty edits first (a
start delay): frame i is the i-th frame shown. A gap after a media edit and a media rate
other than 1 (a QuickTime dwell) it presents wrongly (hidden frames shown), so dfscan refuses
those files with ``unsupported_format`` rather than judging frames no player shows.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess

import numpy as np
import pytest

from conftest import frame_id, make_video
from scanner.cli import main
from scanner.decode import FrameSampler, VideoError

# The player-side checks compare with the ffmpeg CLI (installed by .ci/run).
needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")
F = 512  # one frame in the media timescale (12800 at 25 fps); 40 in the movie's (1000)


def _boxes(data: bytes, pos: int, end: int):
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, pos, size
        pos += size


def _with_edits(src, path, edits):
    """``src`` with its one video trak's elst replaced by ``edits``: (first frame or -1 for
    an empty edit, frames long, media rate). Parents' sizes (and stco, moov before mdat)
    follow the new size."""
    data, chain, pos, end = src.read_bytes(), [], 0, None
    for name in (b"moov", b"trak", b"edts", b"elst"):
        pos, size = next((p, s) for k, p, s in _boxes(data, pos, end or len(data)) if k == name)
        chain.append((pos, size))
        pos, end = pos + 8, pos + size
    lead = struct.unpack(">i", data[pos + 12:pos + 16])[0]  # media time of frame 0 (B-frame delay)
    body = b"".join(struct.pack(">Iihh", n * 40, -1 if a < 0 else lead + a * F, r, 0) for a, n, r in edits)
    body = struct.pack(">I4sII", 16 + len(body), b"elst", 0, len(edits)) + body
    out = bytearray(data[:chain[-1][0]] + body + data[chain[-1][0] + chain[-1][1]:])
    for p, s in chain[:-1]:
        struct.pack_into(">I", out, p, s + len(body) - chain[-1][1])
    assert chain[0][0] > data.index(b"mdat")  # moov last: no chunk offset moves
    path.write_bytes(bytes(out))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """40 frames (ids 0..31, 0..7: the id wraps at 32), GOPs of 12, B-frames."""
    return make_video(tmp_path_factory.mktemp("elst") / "src.mp4", frames=40, gop=12)


def _player_ids(path) -> list[int]:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode",
                          "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return [frame_id(f) for f in np.frombuffer(raw, np.uint8).reshape(-1, 120, 160, 3)]


@pytest.mark.parametrize("edits, shown", [
    ([(0, 10, 1), (20, 10, 1)], [*range(10), *range(20, 30)]),  # a trim keeping two ranges
    ([(20, 10, 1), (0, 10, 1)], [*range(20, 30), *range(10)]),  # ranges out of order
    ([(0, 10, 1), (5, 10, 1)], [*range(10), *range(5, 15)]),  # overlapping: 5..9 shown twice
])
@needs_ffmpeg
def test_ranges_kept_are_the_frames_sampled_in_order_shown(clip, tmp_path, edits, shown):
    path = _with_edits(clip, tmp_path / "cut.mp4", edits)
    assert _player_ids(path) == shown
    s = FrameSampler(path, frames=100)
    got = list(s)
    assert s.index.frames == 20 and s.missed == 0 and not s.index.truncated
    assert [frame_id(f.image) for f in got] == shown
    assert [f.time_s for f in got] == pytest.approx([i * 0.04 for i in range(20)])
    for seek in (True, False):  # 5 evenly spaced over the 20 shown, each judged once
        s = FrameSampler(path, frames=5, seek=seek)
        got = list(s)
        assert [f.index for f in got] == [0, 5, 10, 14, 19] and s.missed == 0
        assert [frame_id(f.image) for f in got] == [shown[i] for i in (0, 5, 10, 14, 19)]


@pytest.mark.parametrize("delay", [[(-1, 25, 1)], [(-1, 5, 1), (-1, 5, 1)]])
@needs_ffmpeg
def test_start_delay_is_not_a_frame_and_time_counts_from_the_first_shown(clip, tmp_path, delay):
    path = _with_edits(clip, tmp_path / "delayed.mp4", [*delay, (0, 40, 1)])
    assert _player_ids(path) == [i % 32 for i in range(40)]
    s = FrameSampler(path, frames=5)
    got = list(s)
    assert s.index.frames == 40 and s.index.duration_s == pytest.approx(1.56) and s.missed == 0
    assert [(f.index, frame_id(f.image)) for f in got] == [(0, 0), (10, 10), (20, 20), (29, 29), (39, 7)]
    assert [f.time_s for f in got] == pytest.approx([0.0, 0.4, 0.8, 1.16, 1.56])


@pytest.mark.parametrize("edits, why", [
    ([(0, 10, 1), (-1, 25, 1), (20, 10, 1)], "empty edit"),  # FFmpeg fills the gap with 0..22
    ([(0, 10, 1), (-1, 25, 1)], "empty edit"),  # a gap at the end: the same
    ([(0, 10, 1), (10, 5, 0), (20, 10, 1)], "media rate"),  # dwell on 10: FFmpeg shows 10..14
    ([(0, 10, 2)], "media rate"),  # double speed: FFmpeg shows 0..9 at normal speed
])
def test_edit_lists_ffmpeg_presents_wrongly_are_refused(clip, tmp_path, edits, why):
    path = _with_edits(clip, tmp_path / "odd.mp4", edits)
    with pytest.raises(VideoError, match=why) as e:
        list(FrameSampler(path, frames=5))
    assert e.value.kind == "unsupported_format"


def test_scan_rows_of_a_two_range_trim_and_a_gap(clip, tmp_path):
    trim = _with_edits(clip, tmp_path / "trim.mp4", [(0, 10, 1), (20, 10, 1)])
    gap = _with_edits(clip, tmp_path / "gap.mp4", [(0, 10, 1), (-1, 25, 1), (20, 10, 1)])
    out = tmp_path / "r.jsonl"
    main(["scan", str(trim), str(gap), "--frames", "5", "--out", str(out), "--no-progress"])
    rows = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    row = rows[str(trim)]
    assert row["error"] is None and row["frames_requested"] == 5 and row["frames_missed"] == 0
    assert row["video"]["frames_total"] == 20 and row["video"]["duration_s"] == 0.76
    assert [(f["index"], f["time_s"]) for f in row["frames_detail"]] == [
        (0, 0.0), (5, 0.2), (10, 0.4), (14, 0.56), (19, 0.76)]
    assert rows[str(gap)]["error"]["kind"] == "unsupported_format"
