"""Frame sampling: exact frames, seek == sequential, rotation, VFR, bad inputs."""
from __future__ import annotations

import time

import av
import numpy as np
import pytest

from conftest import DATA, _default_pattern, frame_id, make_video
from scanner.decode import FrameSampler, VideoError, build_index, choose_targets, open_file


def _all_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("gop", [5, 12, 250])
def test_sampled_frames_equal_full_decode(tmp_path, gop):
    path = make_video(tmp_path / "v.mp4", frames=120, gop=gop)
    full = _all_frames(path)
    for seek in (True, False):
        got = list(FrameSampler(path, frames=10, seek=seek))
        assert [f.index for f in got] == list(np.linspace(0, 119, 10).round().astype(int))
        for f in got:  # skip_frame=NONREF and seeking must not change sampled pixels
            assert np.array_equal(f.image, full[f.index])


def test_seek_skips_gops_without_targets(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=200, gop=10)
    s = FrameSampler(path, frames=4)
    got = list(s)
    assert len(got) == 4 and s.seeks >= 2 and s.missed == 0


def test_fewer_frames_than_requested_gives_each_once():
    got = list(FrameSampler(DATA / "d1.mp4", frames=32))
    assert [f.index for f in got] == list(range(16))
    assert all(f.image.shape == (512, 512, 3) for f in got)


def test_fps_sampling_and_times(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=100, fps=25)
    got = list(FrameSampler(path, frames=None, fps=5))
    assert [f.index for f in got] == list(range(0, 100, 5))
    assert [round(f.time_s, 3) for f in got] == [round(i / 25, 3) for i in range(0, 100, 5)]


def test_variable_frame_rate_uses_presentation_order(tmp_path):
    steps = lambda i: 1 if i % 3 else 4  # noqa: E731 - irregular gaps
    path = make_video(tmp_path / "vfr.mkv", frames=40, pts_step=steps)
    got = list(FrameSampler(path, frames=40))
    assert [f.index for f in got] == list(range(40))
    assert [frame_id(f.image) for f in got] == [i % 32 for i in range(40)]  # id wraps at 32
    times = [f.time_s for f in got]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert len({round(b - a, 3) for a, b in zip(times, times[1:])}) >= 2


def test_missing_duration_stream(tmp_path):
    # Raw MPEG-TS has no header duration/frame count; the index pass still counts frames.
    path = make_video(tmp_path / "v.ts", frames=50)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0
    got = list(FrameSampler(path, frames=5))
    assert [f.index for f in got] == [0, 12, 24, 37, 49]


def test_rotation_metadata_is_applied(tmp_path):
    path = make_video(tmp_path / "rot.mp4", frames=3, size=(160, 96), rotation=-90)
    f = next(iter(FrameSampler(path, frames=1)))
    assert f.image.shape == (160, 96, 3)  # portrait after rotating the landscape frame
    # rotation -90 = 90 deg clockwise: the top-left marker ends at the top-right.
    assert f.image[:10, -10:, 1].mean() > 200 and f.image[:10, :10, 1].mean() < 50


def test_small_copy_and_scale(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=3, size=(640, 360))
    f = next(iter(FrameSampler(path, frames=1, det_max_side=320)))
    assert f.small.shape == (180, 320, 3) and f.scale == pytest.approx(0.5)


def test_index_of_real_clip():
    with open_file(DATA / "d18.mp4") as c:
        ix = build_index(c, c.streams.video[0])
    assert ix.frames == 216 and not ix.truncated and ix.keyframe[0]
    assert len(choose_targets(ix, 32, None)) == 32


def _bad(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _kind(path) -> str:
    with pytest.raises(VideoError) as e:
        list(FrameSampler(path, frames=4))
    return e.value.kind


def test_bad_inputs_have_specific_reasons(tmp_path):
    real = (DATA / "d18.mp4").read_bytes()
    assert _kind(_bad(tmp_path, "empty.mp4", b"")) == "empty_file"
    assert _kind(_bad(tmp_path, "trunc.mp4", real[: len(real) // 2])) == "truncated"
    rng = np.random.default_rng(0)
    assert _kind(_bad(tmp_path, "noise.mp4", rng.bytes(50_000))) == "not_video"
    assert _kind(_bad(tmp_path, "text.mp4", b"hello, not a video\n" * 100)) == "not_video"
    jpg = (DATA / "mesonet" / "real").glob("*.jpg").__next__().read_bytes()
    assert _kind(_bad(tmp_path, "image.mp4", jpg)) == "not_video"
    assert _kind(tmp_path / "missing.mp4") == "not_found"
    (tmp_path / "loop_a.mp4").symlink_to(tmp_path / "loop_b.mp4")
    (tmp_path / "loop_b.mp4").symlink_to(tmp_path / "loop_a.mp4")
    assert _kind(tmp_path / "loop_a.mp4") == "not_found"  # was "internal" (OSError ELOOP)


def test_audio_only_file(tmp_path):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert _kind(path) == "no_video_stream"


def test_video_without_decodable_frames(tmp_path):
    # A valid MP4 index whose sample data is zeroed: every packet is undecodable.
    data = bytearray((DATA / "d18.mp4").read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:end] = bytes(end - start)
    path = _bad(tmp_path, "zeroed.mp4", bytes(data))
    assert _kind(path) == "no_frames"


# Permissions are tested for real, as an unprivileged user, in
# test_correctness.py::test_unreadable_file_is_permission_for_an_unprivileged_user.


def test_broken_timestamps_fall_back_to_output_order(tmp_path):
    # Re-encoding decoded frames with pts=None (a common scripting mistake) muxes every
    # packet at pts 0: frames must then be identified by output order.
    path = tmp_path / "nopts.mp4"
    with av.open(str(DATA / "d1.mp4")) as inp, av.open(str(path), "w") as out:
        vin = inp.streams.video[0]
        s = out.add_stream("libx264", rate=vin.average_rate)
        s.width, s.height, s.pix_fmt = 128, 128, "yuv420p"
        for f in inp.decode(vin):
            g = f.reformat(width=128, height=128, format="yuv420p")
            g.pts = None
            for p in s.encode(g):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    full = [np.asarray(f.to_ndarray(format="rgb24"), np.int16) for f in av.open(str(path)).decode(video=0)]
    sampler = FrameSampler(path, frames=4)
    got = list(sampler)
    assert sampler.index.ordinal and sampler.index.frames == 16
    assert [f.index for f in got] == [0, 5, 10, 15]
    for f in got:
        assert np.array_equal(f.image, full[f.index])


def _x264(path, n=100, fmt=None, options=None, codec="libx264", pts=None):
    from fractions import Fraction

    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt, s.options = 96, 64, "yuv420p", {"g": "10"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((64, 96, 3), i * 2 % 256, np.uint8), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts(i), Fraction(1, 25)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_avi_with_dropped_frame_chunks_is_complete(tmp_path):
    # A capture that dropped 2 frames twice: the AVI muxer fills the gaps with empty
    # chunks, which the header counts (64) but which hold no frame (60 packets).
    path = _x264(tmp_path / "drop.avi", 60, codec="mpeg4", pts=lambda i: i + 2 * (i > 20) + 2 * (i > 40))
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 64
    s = FrameSampler(path, frames=8)
    got = list(s)
    assert not s.index.truncated and s.index.frames == 60 and len(got) == 8 and s.missed == 0


def test_mp4_cut_on_a_sample_boundary_is_truncated(tmp_path):
    # No read error shows this cut: the demuxer just stops where the data ends. The
    # sample table still lists every sample (a 60 % cut landed here in one CI run).
    full = _x264(tmp_path / "full.mp4", fmt="mp4", options={"movflags": "faststart"})
    with av.open(str(full)) as c:
        pos = [p.pos for p in c.demux(video=0) if p.size]
    for k in (1, 37, 73, len(pos) - 1):
        path = _bad(tmp_path, f"cut{k}.mp4", full.read_bytes()[: pos[k]])
        assert _kind(path) == "truncated", k


def test_the_video_ffmpeg_would_play_is_judged_not_the_first_stream(tmp_path):
    # A one-frame stream (a title card, a thumbnail) listed before the real video: the scan
    # judged that frame alone. FFmpeg's own choice skips it.
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w") as c:
        streams = [c.add_stream("libx264", rate=25) for _ in range(2)]
        for s in streams:
            s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for k, n in ((0, 1), (1, 40)):
            for i in range(n):
                img = np.full((64, 96, 3), 40 + 4 * i, np.uint8)
                for pkt in streams[k].encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(pkt)
            for pkt in streams[k].encode():
                c.mux(pkt)
    s = FrameSampler(path, frames=8)
    assert len(list(s)) == 8 and s.index.frames == 40


def test_matroska_cut_between_clusters_is_truncated(tmp_path):
    # FFmpeg's Matroska demuxer stops quietly at a cluster boundary: a scan judged 55 % of
    # the video with no warning. The Segment's declared size shows the cut.
    full = _x264(tmp_path / "full.mkv", fmt="matroska")
    data = full.read_bytes()
    s = FrameSampler(full, frames=4)
    assert len(list(s)) == 4 and not s.index.truncated
    for share in (3, 6, 9):
        assert _kind(_bad(tmp_path, f"cut{share}.mkv", data[: len(data) * share // 10])) == "truncated"
    # A live recording's Segment has an unknown size (all value bits set): no claim either way.
    seg = data.index(bytes.fromhex("18538067")) + 4
    assert data[seg] == 0x01  # 8-byte size field, as FFmpeg writes it
    live = data[:seg] + bytes.fromhex("01ffffffffffffff") + data[seg + 8: len(data) * 6 // 10]
    s = FrameSampler(_bad(tmp_path, "live.mkv", live), frames=4)
    assert len(list(s)) == 4 and not s.index.truncated


@pytest.mark.parametrize("name,fmt,options", [("cut.avi", "avi", None), ("cut.mp4", "mp4", {"movflags": "faststart"})])
def test_cut_files_are_still_truncated(tmp_path, name, fmt, options):
    # The demuxer reports the last packet cut short by the end of the file.
    full = _x264(tmp_path / ("full_" + name), fmt=fmt, options=options).read_bytes()
    path = _bad(tmp_path, name, full[: len(full) * 6 // 10])
    assert _kind(path) == "truncated"


def test_mp4_edit_list_skips_the_frames_before_its_start(tmp_path):
    # A clip cut with `ffmpeg -ss T -c copy` starts mid-GOP: the MP4 keeps the GOP's
    # first frames for decoding and an edit list marks them "discard" (never shown).
    # They are not part of the video: counted, sampled or timed, a sampled one was lost.
    src = make_video(tmp_path / "src.mp4", frames=40, gop=20)
    path = tmp_path / "cut.mp4"
    with av.open(str(src)) as i, av.open(str(path), "w") as o:
        vin = i.streams.video[0]
        vo = o.add_stream_from_template(vin)
        shift = 7 * round(1 / (vin.time_base * 25))  # 7 frames before the edit's start
        for p in i.demux(vin):
            if p.dts is not None:
                p.pts, p.dts, p.stream = p.pts - shift, p.dts - shift, vo
                o.mux(p)
    with av.open(str(path)) as c:
        assert sum(p.is_discard for p in c.demux(video=0)) == 7
    for frames, seek in ((33, False), (4, True)):
        s = FrameSampler(path, frames=frames, seek=seek)
        got = list(s)
        assert s.index.frames == 33 and s.missed == 0 and len(got) == min(frames, 33)
        assert [frame_id(f.image) for f in got] == [(7 + f.index) % 32 for f in got]
        assert got[0].time_s == 0.0 and got[-1].time_s == pytest.approx(32 / 25)


@pytest.mark.parametrize("fmt,codec", [("h264", "libx264"), ("hevc", "libx265")])
def test_raw_elementary_stream_is_read_in_output_order(tmp_path, fmt, codec):
    # A raw .h264/.hevc stream (allowed by the format whitelist) carries no timestamp
    # at all: every packet was dropped from the index and the scan said "no packets".
    opts = {"x265-params": "log-level=none"} if codec == "libx265" else {"bf": "2"}
    path = make_video(tmp_path / f"v.{fmt}", frames=30, codec=codec, fmt=fmt, options=opts)
    s = FrameSampler(path, frames=4)
    got = list(s)
    assert s.index.frames == 30 and s.missed == 0
    assert [f.index for f in got] == [0, 10, 19, 29]
    assert [frame_id(f.image) for f in got] == [0, 10, 19, 29]


@pytest.mark.parametrize("fmt,codec", [("h264", "libx264"), ("hevc", "libx265")])
def test_raw_stream_cut_mid_gop_counts_only_decodable_frames(tmp_path, fmt, codec):
    # A raw stream cut mid-GOP (a byte-cut dump): the decoder outputs nothing before the
    # first keyframe, yet those packets were counted as frames: 15 of 35 indexed frames
    # never came out, so 3 of 8 sampled frames were missed and frames_total was 35.
    opts = {"x265-params": "log-level=none:keyint=20"} if codec == "libx265" else {"g": "20", "bf": "2"}
    src = make_video(tmp_path / f"full.{fmt}", frames=60, codec=codec, fmt=fmt, options=opts)
    with av.open(str(src)) as c:
        pos = [p.pos for p in c.demux(video=0) if p.size]
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(src.read_bytes()[pos[25]:])  # inside the second GOP
    with av.open(str(cut)) as c:
        decodable = sum(1 for _ in c.decode(video=0))
    s = FrameSampler(cut, frames=8)
    got = list(s)
    assert s.index.frames == decodable and s.missed == 0 and len(got) == 8
    first = frame_id(got[0].image)
    assert [frame_id(f.image) for f in got] == [(first + f.index) % 32 for f in got]
    assert got[-1].index == decodable - 1


def test_anamorphic_video_is_unsqueezed_to_square_pixels(tmp_path):
    # Non-square pixels (sample aspect ratio 2:1) store every face squeezed to half its
    # width; the detector scored such faces of a real clip 5x higher (0.075 vs 0.014).
    from fractions import Fraction

    # 80 x 160 stored, 160 x 160 displayed; make_video's marker is 20 x 40 stored, 40 x 40 shown
    path = make_video(tmp_path / "sar.mp4", frames=3, size=(80, 160), sar=Fraction(2, 1))
    f = next(iter(FrameSampler(path, frames=1, det_max_side=80)))
    assert f.image.shape == (160, 160, 3)
    ys, xs = np.nonzero(f.image[..., 1] > 128)
    assert ys.max() == pytest.approx(39, abs=1) and xs.max() == pytest.approx(39, abs=1)
    assert f.small.shape == (80, 80, 3) and f.scale == pytest.approx(0.5)


@pytest.mark.parametrize("name,fmt,codec,size", [
    ("v.y4m", "yuv4mpegpipe", "rawvideo", (96, 64)),
    ("cam.dv", "dv", "dvvideo", (720, 576)),  # DV camcorder footage
])
def test_plain_video_formats_are_read(tmp_path, name, fmt, codec, size):
    # Both were refused as "not a video file (... Invalid argument)": their demuxers were
    # missing from the format whitelist although they reference no other file.
    path = make_video(tmp_path / name, frames=6, size=size, codec=codec, fmt=fmt, options={})
    s = FrameSampler(path, frames=3)
    got = list(s)
    assert s.index.frames == 6 and [frame_id(f.image) for f in got] == [f.index for f in got] == [0, 2, 5]


def test_image_file_says_it_is_an_image(tmp_path):
    jpg = next((DATA / "mesonet" / "real").glob("*.jpg")).read_bytes()
    for name in ("photo.jpg", "photo.mp4"):
        with pytest.raises(VideoError, match=r"an image file \(JPEG\), not a video") as e:
            list(FrameSampler(_bad(tmp_path, name, jpg)))
        assert e.value.kind == "not_video"


@pytest.mark.parametrize("codec", ["libx264", "mpeg2video"])
def test_stream_cut_mid_gop_samples_only_decodable_frames(tmp_path, codec):
    # An MPEG-TS recorded or cut mid-GOP: frames before the first keyframe (and its
    # leading B-frames) have lost their references and decoders drop them. They were
    # indexed as frames, so 8 of 32 sampled frames (2 of 6 at --fps 2) were lost.
    src = make_video(tmp_path / "full.ts", frames=60, gop=20, codec=codec)
    data = src.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[len(data) // 188 // 4 * 188:])  # a quarter in: mid-GOP
    for kw in ({"frames": 32}, {"frames": None, "fps": 10}):
        s = FrameSampler(cut, **kw)
        got = list(s)
        assert s.missed == 0 and len(got) == s.requested > 0
        ids = [frame_id(f.image) for f in got]
        first_key = s.index.pts[np.argmax(s.index.keyframe)]
        assert s.index.presentation[0] == first_key and got[0].index == 0 and got[0].time_s == 0.0
        assert ids == [(ids[0] + f.index) % 32 for f in got]


def test_frames_beyond_8k_are_scaled_down_before_rgb(tmp_path, monkeypatch):
    # A 7.6 MB MJPEG AVI of 16000x16000 frames took 768 MB per RGB frame (4.6 GB peak for
    # 4 frames; a dozen sit in the queue): memory grew with what the file claims.
    from scanner import picture

    assert picture.display_size(16000, 16000, None) == (5760, 5760)
    assert picture.display_size(7680, 4320, None) == (7680, 4320)  # 8K UHD itself: as stored
    monkeypatch.setattr(picture, "MAX_PIXELS", 160 * 120 // 4)
    path = make_video(tmp_path / "v.mp4", frames=3, size=(160, 120))
    f = next(iter(FrameSampler(path, frames=1, det_max_side=40)))
    assert f.image.shape == (60, 80, 3) and frame_id(f.image) == 0
    assert f.small.shape == (30, 40, 3) and f.scale == pytest.approx(0.5)


def _ts_segment(path, first, n, first_pts, size, sar=None):
    """An MPEG-TS of frames ``first..first+n-1`` (default pattern) from ``first_pts``
    in 90 kHz ticks: one recording segment (``sar``: its pixels' aspect ratio)."""
    from fractions import Fraction

    with av.open(str(path), "w", format="mpegts") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = size[0], size[1], "yuv420p", {"g": "10", "bf": "2"}
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_default_pattern(first + i, *size), format="rgb24")
            f.pts, f.time_base = first_pts + i * 3600, Fraction(1, 90000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path.read_bytes()


def test_ts_whose_timestamps_jump_back_keeps_playback_order(tmp_path):
    # Recordings joined with `cat` (a camera's TS segments, a broadcast capture across a
    # clock reset): the second part's timestamps restart lower, off the first part's grid.
    # Sorted by pts, its frames were numbered first: indices and times said the last
    # frames came first (and the other way round) with no error.
    path = tmp_path / "joined.ts"
    path.write_bytes(_ts_segment(tmp_path / "a.ts", 0, 20, 900_000, (96, 64))
                     + _ts_segment(tmp_path / "b.ts", 20, 20, 450_123, (80, 48)))
    s = FrameSampler(path, frames=40)
    got = list(s)
    assert s.index.frames == 40 and s.missed == 0
    assert [f.index for f in got] == list(range(40))
    assert [frame_id(f.image) for f in got] == [i % 32 for i in range(40)]
    assert [f.image.shape[1] for f in got] == [96] * 20 + [80] * 20
    times = [f.time_s for f in got]
    assert times[0] == 0.0 and all(b > a for a, b in zip(times, times[1:]))


def test_mpegts_cut_mid_packet_is_truncated(tmp_path):
    # A TS still being written or cut by a download ends inside a 188-byte packet; the
    # demuxer stops quietly and the last frame decodes from half its data: a scan judged
    # the part read with no warning. Whole packets at the end (also 192-byte M2TS, and a
    # file whose start was cut anywhere) make no claim.
    data = _x264(tmp_path / "full.ts", fmt="mpegts").read_bytes()
    for share in (3, 6, 9):
        end = len(data) * share // 10 // 188 * 188 + 100
        assert _kind(_bad(tmp_path, f"cut{share}.ts", data[:end])) == "truncated"
    for name, whole in (("head.ts", data[: len(data) // 2 // 188 * 188]), ("tail.ts", data[1000:]),
                        ("m2ts.m2ts", _x264(tmp_path / "f.m2ts", fmt="mpegts",
                                            options={"mpegts_m2ts_mode": "1"}).read_bytes())):
        s = FrameSampler(_bad(tmp_path, name, whole), frames=4)
        assert len(list(s)) == 4 and not s.index.truncated, name


@pytest.mark.parametrize("name", ["b.avi", "b.wmv"])
def test_b_frames_in_avi_or_asf_come_out_in_display_order(tmp_path, name):
    # AVI and ASF store no presentation times: with H.264 B-frames the packets carry
    # decode-order stamps, and pictures leave the decoder reordered with those stamps.
    # Ranked by them, "frame 4" was another picture (the red channel said 2, 3, 1 ...).
    path = make_video(tmp_path / name, frames=40, options={"g": "12", "bf": "3"})
    full = _all_frames(path)
    for kw in ({"frames": 40}, {"frames": 7}):
        got = list(FrameSampler(path, **kw))
        assert [f.index for f in got] == sorted({f.index for f in got})
        assert [frame_id(f.image) for f in got] == [f.index % 32 for f in got]  # id wraps at 32
        for f in got:
            assert np.array_equal(f.image, full[f.index])


def test_h264_in_mpeg_ps_counts_frames_without_timestamps(tmp_path):
    # FFmpeg's MPEG-PS muxer packs several H.264 pictures in one PES packet, and only the
    # first gets a pts: the others (57 of 60 here) were left out of the index, so the
    # video had 3 frames, and the samples were other pictures than their index said.
    path = make_video(tmp_path / "v.mpg", frames=60, fmt="mpeg")
    full = _all_frames(path)
    s = FrameSampler(path, frames=8)
    got = list(s)
    assert s.index.frames == 60 and s.missed == 0
    assert [f.index for f in got] == list(np.linspace(0, 59, 8).round().astype(int))
    for f in got:
        assert np.array_equal(f.image, full[f.index])


def test_broadcast_switching_aspect_ratio_mid_stream_is_unsqueezed_per_part(tmp_path):
    # DVB broadcasts switch between 4:3 and 16:9 pictures of the same stored size (a
    # programme after an advert): the SAR read when the file was opened was applied to
    # every frame, so the 16:9 part's faces came out squeezed to 3/4 of their width.
    from fractions import Fraction

    path = tmp_path / "switch.ts"
    path.write_bytes(_ts_segment(tmp_path / "a.ts", 0, 20, 90_000, (96, 64), Fraction(1, 1))
                     + _ts_segment(tmp_path / "b.ts", 20, 20, 90_000 + 20 * 3600, (96, 64), Fraction(2, 1)))
    got = list(FrameSampler(path, frames=40))
    assert [frame_id(f.image) for f in got] == [i % 32 for i in range(40)]
    shapes = [f.image.shape[:2] for f in got]
    # Decoders report a new SAR with a frame or two of reorder delay: the boundary is loose.
    assert shapes[:16] == [(64, 96)] * 16 and shapes[-16:] == [(32, 96)] * 16


def test_a_live_stream_switching_aspect_ratio_is_unsqueezed_per_part(tmp_path):
    # Live sources passed the SAR of the stream as opened for every picture: after a 4:3 ->
    # 16:9 switch a broadcast's faces stayed squeezed (the batch reader's fix, shared).
    from fractions import Fraction

    from scanner.live.source import LiveSource, SourceSettings

    path = tmp_path / "switch.ts"
    path.write_bytes(_ts_segment(tmp_path / "a.ts", 0, 20, 90_000, (96, 64), Fraction(1, 1))
                     + _ts_segment(tmp_path / "b.ts", 20, 20, 90_000 + 20 * 3600, (96, 64), Fraction(2, 1)))
    src = LiveSource("switch", str(path), SourceSettings(allow_files=True, max_retries=0, sample_fps=0,
                                                         buffer_frames=64)).start()
    deadline = time.monotonic() + 20
    while src.state != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    shapes = []
    while (item := src.buffer.get()) is not None:
        shapes.append(item.frame.image.shape[:2])
    assert len(shapes) >= 36, shapes
    assert shapes[:16] == [(64, 96)] * 16 and shapes[-16:] == [(32, 96)] * 16


def test_raw_dv_cut_mid_frame_is_truncated(tmp_path):
    # The DV demuxer pads a last frame cut short to its full size: a byte-cut capture was
    # judged with a half-grey last frame, no warning.
    full = make_video(tmp_path / "full.dv", frames=5, size=(720, 576), codec="dvvideo")
    data = full.read_bytes()
    assert len(data) == 5 * 144000
    s = FrameSampler(full, frames=5)
    assert len(list(s)) == 5 and not s.index.truncated
    assert _kind(_bad(tmp_path, "cut.dv", data[: 3 * 144000 + 50000])) == "truncated"


def test_avi_cut_inside_its_header_is_truncated_not_not_a_video(tmp_path):
    # A download that stopped in the first kilobytes of an AVI: FFmpeg cannot parse the
    # header, and the row said "not a video file" (a cut further on was already truncated).
    data = _x264(tmp_path / "full.avi", fmt="avi", codec="mpeg4").read_bytes()
    for end in (2000, 5000):
        assert _kind(_bad(tmp_path, f"cut{end}.avi", data[:end])) == "truncated"
    riff = bytearray(data[:5000])
    riff[4:8] = (5000 - 8).to_bytes(4, "little")  # a complete (if broken) header: no claim
    assert _kind(_bad(tmp_path, "broken.avi", bytes(riff))) == "not_video"


def _woven_clip(path, interlaced: bool):
    """Every frame weaves two fields of one photo 8 px apart, as a moving subject is
    captured interlaced; x264 stores it as interlaced (tff) or as a plain progressive picture."""
    import av
    from PIL import Image

    img = np.asarray(Image.open(DATA / "multiface.jpg").convert("RGB").resize((320, 240)))
    woven = img.copy()
    woven[1::2] = np.roll(img, 8, axis=1)[1::2]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.options = {"crf": "10", **({"x264-params": "interlaced=1:tff=1"} if interlaced else {})}
        for i in range(10):
            f = av.VideoFrame.from_ndarray(woven, format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode())
    return img


def test_interlaced_frames_are_deinterlaced_and_counted(tmp_path):
    # Interlaced video (1080i broadcast, camcorders) was read as woven pictures: on motion
    # the two fields comb every edge, MTCNN lost faces (53 of 82 on a crowd clip re-encoded
    # interlaced) and a real talking head was called fake (0.32 -> 0.54).
    comb = lambda x: float(np.abs(np.diff(x.astype(np.float64), axis=0)).mean())  # noqa: E731
    img = _woven_clip(tmp_path / "i.mp4", interlaced=True)
    _woven_clip(tmp_path / "p.mp4", interlaced=False)
    sampler = FrameSampler(tmp_path / "i.mp4", 3)
    frames = list(sampler)
    assert [f.deinterlaced for f in frames] == [True] * 3 and sampler.deinterlaced == 3
    assert all(comb(f.image) < 1.3 * comb(img) for f in frames)  # the comb (4.7x the photo's) is gone
    progressive = FrameSampler(tmp_path / "p.mp4", 3)  # the same weave, not flagged: left as it is
    assert all(not f.deinterlaced and comb(f.image) > 4 * comb(img) for f in progressive)
    assert progressive.deinterlaced == 0
    import json

    from scanner.cli import main

    out = tmp_path / "o.jsonl"
    main(["scan", str(tmp_path / "i.mp4"), "--out", str(out), "--detector", "test_tiny", "--frames", "4",
          "--no-progress", "--workers", "1"])
    assert json.loads(out.read_text())["video"]["deinterlaced"] == 4  # the row says so
