"""Archive timing drill: an MPEG-TS/PS whose 33-bit PTS wraps mid-clip, and phone-style
variable frame rate MP4.

Clips are made here with the ffmpeg CLI; every frame carries its own number in its pixels
(8 black/white bars = 8 bits), so each sampled frame's identity is read back from the image.
``--frames N`` must pick by presentation index, ``--fps F`` the frame on screen at each
``k/F`` s (the last one starting at or before it), and ``time_s`` be the frame's own time
from the first frame shown.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import av
import numpy as np
import pytest

from scanner.decode import FrameSampler

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")

WRAP = 2 ** 33  # MPEG PTS ticks (90 kHz): wraps after ~95443.72 s (26.5 h)
# frame N: bar b (16 px wide) white when bit b of N is set
NUMBERED = "format=gray,geq=lum='if(bitand(N\\,pow(2\\,floor(X/16)))\\,235\\,16)',format=yuv420p"


def _ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _numbered(path, rate, seconds, vf="", codec=("-c:v", "libx264", "-g", "25", "-bf", "2"), *out):
    _ffmpeg("-f", "lavfi", "-i", f"color=black:s=128x64:r={rate}:d={seconds}", "-vf", NUMBERED + vf,
            *codec, *out, str(path))
    return path


def _number(image) -> int:
    grey = image.mean(axis=2)
    return sum(1 << b for b in range(8) if grey[:, b * 16 + 4: b * 16 + 12].mean() > 128)


def _player(path) -> list[tuple[int, float]]:
    """(number, time) of each frame the decoder outputs, in order."""
    with av.open(str(path)) as c:
        return [(_number(f.to_ndarray(format="rgb24")), f.time) for f in c.decode(video=0)]


def _sampled(path, **kw):
    s = FrameSampler(path, **kw)
    got = list(s)
    assert s.missed == 0 and not s.index.truncated and not s.index.ordinal
    assert [_number(f.image) for f in got] == [f.index for f in got]  # frame i is picture i
    return s, [f.index for f in got], [f.time_s for f in got]


def _shown_at(times, fps) -> list[int]:
    """Reference: the frame on screen at each k/fps s from the first frame."""
    t = np.asarray(times) - times[0]
    grid = np.arange(int(t[-1] * fps + 1e-9) + 1) / fps
    return sorted(set((np.searchsorted(t, grid + 1e-9, side="right") - 1).tolist()))


@pytest.mark.parametrize("name,codec", [
    ("wrap.ts", ("-c:v", "libx264", "-g", "25", "-bf", "2")),
    ("wrap.m2ts", ("-c:v", "libx264", "-g", "25", "-bf", "2")),  # AVCHD camcorders
    ("wrap.mpg", ("-c:v", "mpeg2video", "-g", "12", "-bf", "2", "-q:v", "4", "-f", "vob")),
])
def test_pts_wrapping_mid_clip_keeps_every_frame_in_order(tmp_path, name, codec):
    # A recorder whose 90 kHz clock wraps 2 s into a 4 s clip (25 fps): FFmpeg unwraps it
    # (the part before the wrap gets negative pts), so nothing is lost, reordered, judged
    # twice or called truncated, and the times run on across the wrap.
    path = _numbered(tmp_path / name, 25, 4, "", codec, "-output_ts_offset", "95441.7")
    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size and p.pts is not None]
    assert min(pts) < 0 < max(pts)  # the case at hand: the wrap lies inside the clip
    assert [n for n, _ in _player(path)] == list(range(100))
    for seek in (True, False):
        s, idx, times = _sampled(path, frames=9, seek=seek)
        assert s.index.frames == 100 and s.index.duration_s == pytest.approx(3.96)
        assert idx == [0, 12, 25, 37, 50, 62, 74, 87, 99]
        assert times == pytest.approx([i * 0.04 for i in idx], abs=1e-6)
        # --fps 10 on 25 fps: every grid time 0.1, 0.3, ... lies exactly between two frames;
        # the one on screen is the earlier (before: 0.3 s sampled frame 8, shown from 0.32)
        _, idx, times = _sampled(path, frames=None, fps=10.0, seek=seek)
        assert idx == [int(k * 2.5) for k in range(40)]
        assert times == pytest.approx([i * 0.04 for i in idx], abs=1e-6)


def test_pts_wrap_a_minute_after_the_start_is_unwrapped_upwards(tmp_path):
    # Starting over 60 s before the wrap, FFmpeg adds 2^33 after it instead (pts past 2^33).
    src = _numbered(tmp_path / "slow.mp4", 2, 70, "", ("-c:v", "libx264", "-g", "10", "-bf", "2"))
    path = tmp_path / "wrap_late.ts"
    _ffmpeg("-i", str(src), "-c", "copy", "-output_ts_offset", "95380", str(path))
    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert min(pts) < WRAP < max(pts)
    s, idx, times = _sampled(path, frames=9)
    assert s.index.frames == 140 and idx == [0, 17, 35, 52, 70, 87, 104, 122, 139]
    assert times == pytest.approx([i * 0.5 for i in idx], abs=1e-6)
    _, idx, _ = _sampled(path, frames=None, fps=0.3)
    assert idx == [int(k / 0.3 * 2 + 1e-9) for k in range(21)]


def test_pts_wrapping_twice_is_read_in_output_order(tmp_path):
    # A clock that wraps twice (a TS recording over 53 h; here 12 frames 5 h apart): FFmpeg
    # unwraps at most one wrap, so the stamps jump back. Every frame must still come out once
    # and in order, sampled by its place in the output, with the row saying time_s is
    # output order at the nominal rate, not the file's clock.
    path = _numbered(tmp_path / "wrap2.ts", 25, 0.48, ",setpts=N*5*3600/TB",
                     ("-c:v", "libx264", "-g", "4", "-bf", "0"), "-fps_mode", "passthrough")
    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert len(pts) == 12 and sum(b < a for a, b in zip(pts, pts[1:])) == 2  # two wraps
    for kw, want in ((dict(frames=12), list(range(12))), (dict(frames=5), [0, 3, 6, 8, 11])):
        s = FrameSampler(path, **kw)
        got = list(s)
        assert s.index.ordinal and s.missed == 0 and not s.index.truncated
        assert [f.index for f in got] == [_number(f.image) for f in got] == want


# 30 fps, then 15 fps from frame 30 (1.0 s), then 30 fps again from frame 45 (2.0 s)
VFR = ",setpts='if(lt(N\\,30)\\,N\\,if(lt(N\\,45)\\,30+2*(N-30)\\,60+N-45))/(30*TB)'"


def _vfr_time(n: int) -> float:
    return n / 30 if n < 30 else 1 + (n - 30) / 15 if n < 45 else 2 + (n - 45) / 30


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    path = _numbered(tmp_path_factory.mktemp("vfr") / "vfr.mp4", 30, 3, VFR,
                     ("-c:v", "libx264", "-g", "30", "-bf", "2"), "-fps_mode", "passthrough")
    player = _player(path)
    assert [n for n, _ in player] == list(range(90))
    assert [t for _, t in player] == pytest.approx([_vfr_time(n) for n in range(90)], abs=1e-6)
    return path


@pytest.mark.parametrize("seek", [True, False])
def test_vfr_frames_by_presentation_index(vfr_clip, seek):
    s, idx, times = _sampled(vfr_clip, frames=9, seek=seek)
    assert s.index.frames == 90 and s.index.duration_s == pytest.approx(_vfr_time(89))
    assert idx == [0, 11, 22, 33, 44, 56, 67, 78, 89]
    assert times == pytest.approx([_vfr_time(i) for i in idx], abs=1e-6)


@pytest.mark.parametrize("seek", [True, False])
def test_vfr_fps_samples_the_frame_on_screen_at_each_time(vfr_clip, seek):
    # In the 15 fps stretch --fps 10 falls midway between frames at 1.1, 1.3, ...: frames
    # 32, 35, ... (shown from 1.133, 1.333) were sampled there, 31, 34, ... are on screen.
    _, idx, times = _sampled(vfr_clip, frames=None, fps=10.0, seek=seek)
    assert idx == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 33, 34, 36, 37, 39, 40, 42, 43, 45,
                   48, 51, 54, 57, 60, 63, 66, 69, 72, 75, 78, 81, 84, 87]
    assert times == pytest.approx([_vfr_time(i) for i in idx], abs=1e-6)
    # 7 fps: grid times inside frames (before: 0.286 s sampled frame 9, shown from 0.3)
    _, idx, _ = _sampled(vfr_clip, frames=None, fps=7.0, seek=seek)
    assert idx == _shown_at([_vfr_time(n) for n in range(90)], 7.0)
    assert idx[:8] == [0, 4, 8, 12, 17, 21, 25, 30]


def test_phone_timestamps_with_jitter(tmp_path):
    # A phone's 1/600 s clock with a few ms of jitter, B-frames, a 15 fps stretch.
    jitter = (",settb=1/600,setpts='round((if(lt(N\\,40)\\,N/30\\,if(lt(N\\,70)\\,40/30+(N-40)/15"
              "\\,40/30+2+(N-70)/30))+0.006*sin(N*1.7))/TB)'")
    path = _numbered(tmp_path / "phone.mp4", 30, 4, jitter, ("-c:v", "libx264", "-g", "30", "-bf", "3"),
                     "-fps_mode", "passthrough", "-enc_time_base", "1/600", "-video_track_timescale", "600")
    player = _player(path)
    t = [x - player[0][1] for _, x in player]
    assert [n for n, _ in player] == list(range(120)) and len({round(b - a, 4) for a, b in zip(t, t[1:])}) > 5
    _, idx, times = _sampled(path, frames=9)
    assert idx == [0, 15, 30, 45, 60, 74, 89, 104, 119] and times == pytest.approx([t[i] for i in idx], abs=1e-6)
    for fps in (7.0, 10.0):
        _, idx, times = _sampled(path, frames=None, fps=fps)
        assert idx == _shown_at(t, fps) and times == pytest.approx([t[i] for i in idx], abs=1e-6)


def test_cli_rows_of_a_wrapping_ts_and_a_vfr_mp4(tmp_path, vfr_clip):
    from scanner.cli import main

    ts = _numbered(tmp_path / "wrap.ts", 25, 4, "", ("-c:v", "libx264", "-g", "25", "-bf", "2"),
                   "-output_ts_offset", "95441.7")
    out = tmp_path / "r.jsonl"
    main(["scan", str(ts), str(vfr_clip), "--out", str(out), "--detector", "test_tiny", "--fps", "10",
          "--no-progress", "--workers", "1"])
    rows = {json.loads(line)["path"]: json.loads(line) for line in out.read_text().splitlines()}
    for path, total, duration, idx, time_of in (
            (ts, 100, 3.96, [int(k * 2.5) for k in range(40)], lambda i: i * 0.04),
            (vfr_clip, 90, _vfr_time(89), [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 33, 34], _vfr_time)):
        row = rows[str(path)]
        assert row.get("error") is None and row["frames_missed"] == 0
        assert row["video"]["frames_total"] == total and row["video"]["timing"] == "pts"
        assert row["video"]["duration_s"] == pytest.approx(duration, abs=1e-3)
        detail = row["frames_detail"]
        assert [d["index"] for d in detail][:len(idx)] == idx
        assert [d["time_s"] for d in detail] == pytest.approx([time_of(d["index"]) for d in detail], abs=1e-3)
