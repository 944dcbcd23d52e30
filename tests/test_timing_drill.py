"""Awkward timing: dfscan samples the frames a player shows, at the times it shows them.

Inputs are made here with the ffmpeg CLI from a real face clip (160x160, 25 fps, 4 s):
stream-copy cuts on open-GOP keyframes, MPEG-TS recordings cut mid-GOP and joined with
``cat``, an MP4 whose timestamps are decode order. The player's frames are the CLI's
own decode (:func:`test_edit_lists._player_frames`); frame i must be the i-th of them.
"""
from __future__ import annotations

import shutil

import av
import numpy as np
import pytest

from conftest import DATA
from scanner.decode import FrameSampler
from test_edit_lists import _ffmpeg, _player_frames

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")


def _real_clip(path, codec="libx264", opts=("-g", "25", "-bf", "2"), start=0.0, seconds=4):
    _ffmpeg("-ss", str(start), "-i", str(DATA / "d18.mp4"), "-an", "-vf", "scale=160:160", "-r", "25",
            "-t", str(seconds), "-c:v", codec, *opts, str(path))
    return path


def _open_gop_keyframes(path) -> list[tuple[int, float]]:
    """(byte position, time) of the keyframes after the first with a leading picture
    (the next packet in decode order is shown before the keyframe)."""
    with av.open(str(path)) as c:
        pk = [p for p in c.demux(video=0) if p.size]
    return [(p.pos, float(p.pts * p.time_base)) for i, p in enumerate(pk[:-1])
            if i and p.is_keyframe and pk[i + 1].pts < p.pts]


def _player_times(path) -> list[float | None]:
    """Each shown frame's time, the decoder's output in order (reference decode)."""
    with av.open(str(path)) as c:
        return [f.time for f in c.decode(video=0)]


def _samples_what_a_player_shows(path, frames=9, missed=0) -> FrameSampler:
    shown = _player_frames(path)
    s = FrameSampler(path, frames=frames)
    got = list(s)
    assert s.index.frames == len(shown) and s.missed == missed
    assert len(got) == min(frames, len(shown)) - missed
    assert got[-1].index == len(shown) - 1  # evenly spread to the last frame shown
    for f in got:
        err = ((shown - f.image.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
        assert err[f.index] < 2.0 and int(np.argmin(err)) == f.index, (f.index, int(np.argmin(err)))
    if not s.index.ordinal:  # timed by the file: the player's time from the first frame shown
        times = _player_times(path)
        assert [f.time_s for f in got] == pytest.approx([times[f.index] - times[0] for f in got], abs=1e-3)
    return s


@pytest.mark.parametrize("codec,opts", [
    ("libx264", ("-g", "25", "-bf", "2", "-x264-params", "open-gop=1")),
    ("mpeg2video", ("-g", "12", "-bf", "2", "-q:v", "4")),  # broadcast MPEG-2: open GOPs
])
def test_open_gop_cut_to_matroska_samples_the_frames_a_player_shows(tmp_path, codec, opts):
    # 'ffmpeg -ss T -c copy cut.mkv' starts on an open-GOP keyframe whose leading
    # B-frames (shown before it, decoded after it) refer to the GOP cut away: the decoder
    # drops them, but the index counted them. MPEG-2: frames_total 90 for 88 shown, frame
    # i was the player's frame i-2 and frame 0 never came out (1 missed); x264 (the
    # leading B-frame kept no pts: output order): 51 for 50, the last one never came out.
    src = _real_clip(tmp_path / "src.mp4", codec, opts)
    (_, key), *_ = _open_gop_keyframes(src)
    path = tmp_path / "cut.mkv"
    _ffmpeg("-ss", f"{key + 0.3:.2f}", "-i", str(src), "-c", "copy", str(path))
    s = _samples_what_a_player_shows(path)
    assert not s.index.ordinal  # the dropped pictures were all the untimed ones: seeks, exact times


def test_recording_starting_on_an_open_gop_keyframe_counts_only_frames_shown(tmp_path):
    # An MPEG-TS recording (or HLS segment) that starts on an x264 open-GOP I-frame, and
    # its raw H.264 dump: counted the leading B-frames the decoder drops (27 frames for
    # 25 shown): in the TS frame i was the player's i-2 and frame 0 never came out; in
    # the .h264 (output order) the last frame never came out.
    src = _real_clip(tmp_path / "src.ts", opts=("-g", "25", "-bf", "2", "-x264-params", "open-gop=1"))
    (pos, _), *_ = _open_gop_keyframes(src)
    path = tmp_path / "rec.ts"
    path.write_bytes(src.read_bytes()[pos:])
    _samples_what_a_player_shows(path)
    raw = tmp_path / "rec.h264"
    _ffmpeg("-i", str(path), "-c", "copy", str(raw))
    assert _samples_what_a_player_shows(raw).index.ordinal


def test_recordings_joined_with_cat_count_no_lead_in(tmp_path):
    # Two MPEG-TS recordings joined byte-wise (the clock restarts: frames in output order),
    # the first one cut mid-GOP: the decoder outputs nothing before its first keyframe,
    # but output order counted those frames: 190 for 175 shown, the last 3 of 32 missed.
    src = _real_clip(tmp_path / "src.ts")
    with av.open(str(src)) as c:
        pos = [p.pos for p in c.demux(video=0) if p.size]
    second = _real_clip(tmp_path / "second.ts", start=3.2)  # other pictures
    path = tmp_path / "joined.ts"
    path.write_bytes(src.read_bytes()[pos[10]:] + second.read_bytes())  # frame 10: mid-GOP
    s = _samples_what_a_player_shows(path, frames=32)
    assert s.index.ordinal


def test_a_splice_whose_decoder_drops_pictures_still_samples_the_last_frame_shown(tmp_path):
    # A stream-copied recording joined with one starting on an open-GOP keyframe: at the
    # splice the decoder drops the leading B-frame and more pictures (their order clashes
    # with the first recording's), which no index foresees. frames_total said 128 for 123
    # shown and the last 2 of 32 samples (the last frame shown among them) were missed;
    # now the count is what came out and the last frame shown is sampled (one target
    # past the end is still missed, and counted).
    first = tmp_path / "first.ts"
    _ffmpeg("-i", str(_real_clip(tmp_path / "full.mp4")), "-t", "2", "-c", "copy", str(first))
    src = _real_clip(tmp_path / "src.ts", opts=("-g", "25", "-bf", "2", "-x264-params", "open-gop=1"),
                     start=3.2)
    (pos, _), *_ = _open_gop_keyframes(src)
    path = tmp_path / "joined.ts"
    path.write_bytes(first.read_bytes() + src.read_bytes()[pos:])
    with av.open(str(path)) as c:
        packets = sum(1 for p in c.demux(video=0) if p.size)
    s = _samples_what_a_player_shows(path, frames=32, missed=1)
    assert s.index.ordinal and s.index.frames < packets - 1  # the case at hand: drops mid-stream


def test_mp4_with_decode_order_timestamps_samples_in_output_order(tmp_path):
    # '-video_track_timescale 1' rounds a B-frame clip's composition offsets away: every
    # pts equals its dts, so pts order is decode order while the decoder outputs display
    # order. Sampled by pts, 18 of 32 frames were a neighbour of the one reported.
    src = _real_clip(tmp_path / "src.mp4")
    path = tmp_path / "ts1.mp4"
    _ffmpeg("-i", str(src), "-c", "copy", "-video_track_timescale", "1", str(path))
    with av.open(str(path)) as c:
        assert all(p.pts == p.dts for p in c.demux(video=0) if p.size)  # the case at hand
    assert _samples_what_a_player_shows(path, frames=32).index.ordinal


def test_a_b_frame_clip_with_real_timestamps_stays_timed(tmp_path):
    # The first-GOP probe must not turn ordinary B-frame clips into output-order ones.
    for name in ("plain.mp4", "plain.mkv", "plain.ts"):
        s = _samples_what_a_player_shows(_real_clip(tmp_path / name))
        assert not s.index.ordinal, name


def test_the_row_says_whether_times_are_the_files_or_output_order(tmp_path):
    # Frames read in output order (a clock that restarts, duplicate or missing pts) are
    # timed at the nominal rate, as documented, but the row did not say which videos
    # were: their time_s looked like the file's own clock.
    import json

    from scanner.cli import main

    first = _real_clip(tmp_path / "first.ts", seconds=1)
    joined = tmp_path / "joined.ts"
    second = _real_clip(tmp_path / "second.ts", start=3.2, seconds=1)
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    out = tmp_path / "o.jsonl"
    main(["scan", str(first), str(joined), "--out", str(out), "--detector", "test_tiny", "--frames", "4",
          "--no-progress", "--workers", "1"])
    rows = {json.loads(line)["path"]: json.loads(line) for line in out.read_text().splitlines()}
    assert rows[str(first)]["video"]["timing"] == "pts"
    assert rows[str(joined)]["video"]["timing"] == "output_order"
    assert rows[str(joined)]["video"]["frames_total"] == 50 and rows[str(joined)]["frames_missed"] == 0


def test_the_first_gop_probe_holds_a_bounded_contiguous_run(monkeypatch):
    # The probe keeps PyAV packets during the whole index pass: 32 frames of 4K ProRes
    # would hold ~120 MB. It keeps the keyframe whatever its size, then stops for good at
    # the first packet over the byte cap (a gap would make it decode a broken run).
    from types import SimpleNamespace

    from scanner import leading

    monkeypatch.setattr(leading, "PROBE_BYTES", 100)
    g = leading.FirstGop()
    for pts, key, size in ((5, False, 10), (10, True, 500), (8, False, 60), (9, False, 50), (11, False, 5)):
        g.add(SimpleNamespace(pts=pts, is_keyframe=key, size=size), True)
    assert g.lead_in == 1 and [p.pts for p, _ in g.packets] == [10, 8] and g.leading and g.full
