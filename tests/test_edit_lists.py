"""MP4/MOV edit lists and trimmed starts: dfscan samples what a player shows.

A stream-copy cut (``ffmpeg -ss T -c copy``, a phone's "trim") keeps whole GOPs and
an edit list hides what lies before T. Frame i must be the i-th frame shown, and a
file the edit list trims is complete, not truncated.
"""
from __future__ import annotations

import shutil
import subprocess

import av
import numpy as np
import pytest

from conftest import DATA, frame_id, make_video
from scanner.decode import FrameSampler


def _shifted_copy(src, path, frames_before: int, fps: int = 25):
    """``src`` remuxed with its first ``frames_before`` frames before time 0: the MP4
    muxer writes an edit list starting there (as ``ffmpeg -ss -c copy`` does)."""
    with av.open(str(src)) as i, av.open(str(path), "w") as o:
        vin = i.streams.video[0]
        vo = o.add_stream_from_template(vin)
        shift = frames_before * round(1 / (vin.time_base * fps))
        for p in i.demux(vin):
            if p.dts is not None:
                p.pts, p.dts, p.stream = p.pts - shift, p.dts - shift, vo
                o.mux(p)
    return path


def test_an_edit_list_starting_past_whole_gops_is_complete_not_truncated(tmp_path):
    # The edit list starts 27 frames in, past the whole first GOP (20 frames): FFmpeg's
    # demuxer drops that GOP (no shown frame needs it) although the sample table lists
    # it, so "fewer packets than samples" refused a complete video as truncated.
    src = make_video(tmp_path / "src.mp4", frames=60, gop=20)
    path = _shifted_copy(src, tmp_path / "trimmed.mp4", 27)
    for frames, seek in ((33, False), (5, True)):
        s = FrameSampler(path, frames=frames, seek=seek)
        got = list(s)
        assert s.index.frames == 33 and s.missed == 0 and not s.index.truncated
        assert [frame_id(f.image) for f in got] == [(27 + f.index) % 32 for f in got]
        assert got[0].time_s == 0.0 and got[-1].time_s == pytest.approx(32 / 25)


def _ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _player_frames(path) -> np.ndarray:
    """What a player shows: the ffmpeg CLI's decode (edit lists applied), grey."""
    with av.open(str(path)) as c:
        w, h = c.streams.video[0].width, c.streams.video[0].height
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode",
                          "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3).astype(np.float32)


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")
def test_cut_of_a_cut_of_a_real_face_clip_samples_the_frames_a_player_shows(tmp_path):
    # A real face clip in 0.6 s GOPs, cut at 1.3 s, that cut cut again at 0.5 s: the
    # second edit list starts on the third GOP of a file holding all of them.
    gops = tmp_path / "gops.mp4"
    _ffmpeg("-i", str(DATA / "d18.mp4"), "-an", "-r", "25", "-c:v", "libx264", "-g", "15", "-bf", "2",
            "-preset", "veryfast", "-t", "4", str(gops))
    _ffmpeg("-ss", "1.3", "-i", str(gops), "-c", "copy", str(tmp_path / "cut.mp4"))
    path = tmp_path / "cut2.mp4"
    _ffmpeg("-ss", "0.5", "-i", str(tmp_path / "cut.mp4"), "-c", "copy", str(path))
    shown = _player_frames(path)
    s = FrameSampler(path, frames=9)
    got = list(s)
    assert s.index.frames == len(shown) and s.missed == 0 and len(got) == 9
    for f in got:
        err = ((shown - f.image.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
        assert err[f.index] < 2.0 and int(np.argmin(err)) == f.index, f.index


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")
@pytest.mark.parametrize("remux_to_mp4", [False, True])
def test_open_gop_hevc_cut_remuxed_to_matroska_counts_only_frames_shown(tmp_path, remux_to_mp4):
    # x265's default open GOPs: a cut's first keyframe is a CRA whose leading (RASL)
    # pictures the decoder drops. Matroska has no edit list and their pts would be
    # negative, so they come with none: counted as untimed frames, frames_total was 72
    # for 70 shown, and sampling by output order asked for frames that never came.
    # Remuxed on to MP4 they get invented pts, one equal to the CRA's: 71 in output order.
    src = tmp_path / "hevc.mp4"
    _ffmpeg("-i", str(DATA / "d18.mp4"), "-an", "-r", "25", "-c:v", "libx265", "-preset", "fast",
            "-x265-params", "keyint=15:open-gop=1:bframes=3:log-level=error", "-t", "4", str(src))
    path = tmp_path / "cut.mkv"
    _ffmpeg("-ss", "1.3", "-i", str(src), "-c", "copy", str(path))
    with av.open(str(path)) as c:
        assert any(p.pts is None and p.size for p in c.demux(video=0))  # the case at hand
    if remux_to_mp4:
        _ffmpeg("-i", str(path), "-c", "copy", str(tmp_path / "cut.mp4"))
        path = tmp_path / "cut.mp4"
    shown = _player_frames(path)
    s = FrameSampler(path, frames=7)
    got = list(s)
    assert s.index.frames == len(shown) and s.missed == 0 and len(got) == 7
    assert got[-1].index == len(shown) - 1
    for f in got:
        err = ((shown - f.image.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
        assert err[f.index] < 2.0 and int(np.argmin(err)) == f.index, f.index
