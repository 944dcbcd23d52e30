"""Files holding several video streams: the row says which one was judged.

dfscan judges one video stream, the one FFmpeg itself picks (``av_find_best_stream``,
what ffplay shows: the default/enabled track first). A face in another stream (a second
angle, a QuickTime track kept disabled) got a "no_face" or "real" row with nothing
saying the file held more video. Rows now carry ``video.streams`` (video streams, cover
art not counted) and ``video.stream_index`` (the container index judged), and each file
with more than one video stream gets one warning line.
"""
from __future__ import annotations

import json
import logging
import shutil
import struct
import subprocess

import av
import pytest

from conftest import DATA
from scanner.cli import EXIT_OK, main

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")
FACE = str(DATA / "d1.mp4")  # 512x512, 16 frames, one face


def _ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _two(out, first, second, *extra):
    _ffmpeg("-i", first, "-i", second, "-map", "0:v", "-map", "1:v", "-c", "copy", *extra, str(out))


def _cover_art_first(src, out):
    """``src`` (an MP4 whose cover art sits in moov/udta) with udta moved before the
    tracks: FFmpeg then lists the picture as stream 0 (its muxer always writes it last).
    Boxes only move inside moov, so no sample offset changes."""
    data = src.read_bytes()
    moov = data.index(b"moov") - 4
    end = moov + struct.unpack(">I", data[moov:moov + 4])[0]
    kids, off = [], moov + 8
    while off < end:
        size = struct.unpack(">I", data[off:off + 4])[0]
        kids.append(data[off:off + size])
        off += size
    order = sorted(kids, key=lambda b: {b"mvhd": 0, b"udta": 1}.get(b[4:8], 2))
    out.write_bytes(data[:moov + 8] + b"".join(order) + data[end:])


# name -> (streams counted, index judged or None where FFmpeg's pick is a tie-break)
EXPECTED = {
    "face_ts.mp4": (2, None), "ts_face.mp4": (2, None), "face_ts.mkv": (2, None), "ts_face.mkv": (2, None),
    "ts_face_default1.mp4": (2, 1), "ts_face_default1.mkv": (2, 1),  # only the second is default
    "face_tsbig.mp4": (2, None),  # the second is longer and larger
    "face_disabled.mov": (2, 1),  # tkhd enabled=0 on the face: players show the testsrc
    "face_tmcd.mov": (1, 0),  # a timecode track is data, not video
    "cover_first.mp4": (1, 1),  # attached picture listed first: never judged, not counted
    "nodefault_then_default.mkv": (2, 1),
}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi")
    ts, big = str(d / "ts.mp4"), str(d / "tsbig.mp4")
    for out, size, secs in ((ts, "160x120", 1), (big, "640x480", 2)):
        _ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={secs}", "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", out)
    vids = d / "in"
    vids.mkdir()
    default1 = ("-disposition:v:0", "0", "-disposition:v:1", "default")
    for ext in ("mp4", "mkv"):
        _two(vids / f"face_ts.{ext}", FACE, ts)
        _two(vids / f"ts_face.{ext}", ts, FACE)
        _two(vids / f"ts_face_default1.{ext}", ts, FACE, *default1)
    _two(vids / "face_tsbig.mp4", FACE, big)
    _two(vids / "face_disabled.mov", FACE, ts, *default1)
    _two(vids / "nodefault_then_default.mkv", ts, FACE, *default1)
    _ffmpeg("-i", FACE, "-map", "0:v", "-c", "copy", "-timecode", "01:00:00:00", str(vids / "face_tmcd.mov"))
    _ffmpeg("-i", FACE, "-frames:v", "1", "-update", "1", str(d / "cover.jpg"))
    _ffmpeg("-i", str(d / "cover.jpg"), "-i", FACE, "-map", "0", "-map", "1:v", "-c", "copy",
            "-disposition:v:0", "attached_pic", str(d / "cover_last.mp4"))
    _cover_art_first(d / "cover_last.mp4", vids / "cover_first.mp4")
    out = d / "r.jsonl"
    handler = _Collect()
    logging.getLogger("dfscan").addHandler(handler)
    try:
        code = main(["scan", str(vids), "--out", str(out), "--frames", "4", "--detector", "test_tiny",
                     "--workers", "1", "--no-progress"])
    finally:
        logging.getLogger("dfscan").removeHandler(handler)
    assert code == EXIT_OK
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    return vids, rows, handler.lines


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _streams(path):
    """Per container index: (width, height, disposition) of each video stream."""
    with av.open(str(path)) as c:
        return {s.index: (s.width, s.height, s.disposition) for s in c.streams.video}


def test_rows_name_the_stream_judged_and_count_the_video_streams(scanned):
    vids, rows, _ = scanned
    assert set(rows) == set(EXPECTED)
    for name, (count, index) in EXPECTED.items():
        v = rows[name]["video"]
        assert rows[name]["error"] is None, name
        assert v["streams"] == count, name
        if index is not None:
            assert v["stream_index"] == index, name
        # The index names the stream whose frames were judged: its size, its content.
        w, h, disp = _streams(vids / name)[v["stream_index"]]
        assert (v["width"], v["height"]) == (w, h) and not disp & av.stream.Disposition.attached_pic, name
        face = (w, h) == (512, 512)
        assert (rows[name]["verdict"] != "no_face") == face, (name, rows[name]["verdict"])


def test_a_face_only_in_the_stream_not_judged_is_no_longer_silent(scanned):
    # The face in a QuickTime track kept disabled (players show the testsrc beside it): a
    # no_face row as before, but the row and one warning line say a stream went unscanned.
    _, rows, lines = scanned
    assert rows["face_disabled.mov"]["verdict"] == "no_face"
    assert rows["face_disabled.mov"]["video"]["streams"] == 2
    warned = sorted(n for n in EXPECTED if any(f"{n}: 2 video streams; only stream #" in m for m in lines))
    assert warned == sorted(n for n, (count, _) in EXPECTED.items() if count > 1)
    per_file = [m for m in lines if " video streams; only stream #" in m]
    assert len(per_file) == len(warned)  # one line per file
