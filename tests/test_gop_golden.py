"""Golden test: the seeking decode path yields exactly the frames, pixel for pixel,
that a full sequential decode yields at the same indices, over GOP structures and
containers (closed/open GOP, B-pyramid, HEVC, VP9, MPEG-4 in AVI, MKV, MPEG-TS).

Clips are made here with PyAV's bundled encoders (96x64, 300 frames, keyframe
every 25): cheap, and each frame carries its number in 12 black/white blocks.
"""
from __future__ import annotations

import av
import numpy as np
import pytest

from scanner.decode import FrameSampler, build_index, open_file

W, H, N, GOP = 96, 64, 300, 25
CASES = {
    "x264_closed.mp4": ("libx264", {"g": str(GOP), "bf": "2"}),
    "x264_open_pyramid.mp4": ("libx264", {"g": str(GOP), "bf": "3", "b-pyramid": "normal",
                                          "x264-params": "open-gop=1"}),
    "x265_open.mp4": ("libx265", {"x265-params": f"keyint={GOP}:min-keyint={GOP}:open-gop=1:bframes=4:"
                                                 "log-level=error"}),
    "vp9.webm": ("libvpx-vp9", {"g": str(GOP), "deadline": "realtime", "cpu-used": "8"}),
    "mpeg4.avi": ("mpeg4", {"g": str(GOP), "bf": "2"}),
    "x264_open.mkv": ("libx264", {"g": str(GOP), "bf": "3", "x264-params": "open-gop=1"}),
    "x264.ts": ("libx264", {"g": str(GOP), "bf": "2"}),
}
OPEN_GOP = {"x264_open_pyramid.mp4", "x265_open.mp4", "x264_open.mkv"}
SEEKABLE = {"x264_closed.mp4", "x264_open_pyramid.mp4", "x265_open.mp4", "vp9.webm", "x264_open.mkv"}


def pattern(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(12):  # frame number, 16x16 blocks in the top half
        r, c = divmod(b, 6)
        if (i >> b) & 1:
            img[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = 255
    x, y = np.arange(W)[None, :], np.arange(32)[:, None]  # moving gradient below
    img[32:, :, 0] = (x * 3 + y * 2 + i * 5) % 256
    img[32:, :, 1] = (x * 2 - y + i * 3) % 256
    img[32:, :, 2] = 128
    return img


def frame_number(img: np.ndarray) -> int:
    return sum(1 << b for b in range(12)
               if img[(b // 6) * 16 + 4:(b // 6) * 16 + 12, (b % 6) * 16 + 4:(b % 6) * 16 + 12].mean() > 127)


@pytest.fixture(scope="module", params=list(CASES))
def clip(request, tmp_path_factory):
    name = request.param
    codec, opts = CASES[name]
    if codec not in av.codecs_available:
        pytest.fail(f"PyAV's FFmpeg lacks encoder {codec}")  # bundled in the PyAV wheel
    path = tmp_path_factory.mktemp("gop") / name
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt, s.options = W, H, "yuv420p", dict(opts)
        for i in range(N):
            for p in s.encode(av.VideoFrame.from_ndarray(pattern(i), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        full = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert [frame_number(f) for f in full] == list(range(N))  # sequential decode is the truth
    with open_file(path) as c:
        index = build_index(c, c.streams.video[0])
    return name, path, full, index


def _leading(index) -> list[int]:
    """Presentation indices shown before their GOP's keyframe (decoded after it)."""
    out, key = [], None
    for p, k in zip(index.pts.tolist(), index.keyframe.tolist()):
        if k:
            key = p
        elif key is not None and p < key:
            out.append(index.rank(p))
    return sorted(out)


def _check(path, full, **kw) -> FrameSampler:
    s = FrameSampler(path, **kw)
    got = list(s)
    assert s.missed == 0 and len(got) == s.requested
    for f in got:
        assert np.array_equal(f.image, full[f.index]), f.index
        assert frame_number(f.image) == f.index
    return s


def test_leading_pictures_and_gop_edges_come_out_exact(clip):
    name, path, full, index = clip
    lead = _leading(index)
    if name in OPEN_GOP:
        assert lead, "the open-GOP encoder made no leading pictures: the case tests nothing"
    keys = sorted(index.rank(p) for p in index.pts[index.keyframe].tolist())
    # Every fourth GOP (so the seeking path must jump): its leading pictures, the frame
    # before its keyframe, the keyframe and the GOP's last frame.
    want = set()
    for g, k in enumerate(keys):
        if g % 4 == 1:
            want |= {i for i in lead if k - GOP < i < k} | {k - 1, k, min(N - 1, k + GOP - 1)}
    s = _check(path, full, indices=sorted(want))
    assert s.requested == len(want)
    if name in SEEKABLE:
        assert s.seeks >= 2 and s.refetched == 0  # the seek plan itself got every frame


@pytest.mark.parametrize("frames", [7, 13, 32])
def test_evenly_spaced_samples_equal_full_decode(clip, frames):
    _, path, full, _ = clip
    s = _check(path, full, frames=frames)
    assert s.requested == frames


def test_fps_sampling_equals_full_decode(clip):
    _, path, full, _ = clip
    s = _check(path, full, frames=None, fps=3)
    assert s.requested == 36  # 12 s at 3 frames per second
