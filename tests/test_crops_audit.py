"""Crops audit: the pictures faces are cut from, whatever the stream's colour tags.

Real footage (portrait/d13, 720x1280 BT.709) re-encoded as yuvj420p, full-range yuv420p,
BT.601-tagged, untagged, 10-bit H.264/HEVC, odd sizes, anamorphic (SAR 4:3), display-matrix
rotations and interlaced read within 1.5 grey levels of the plain copy and match FFmpeg's own
RGB of the same frame; those are checked here on tiny synthetic clips against the ffmpeg CLI.
What failed: colour matrices FFmpeg's swscale refuses (YCgCo, BT.2020 constant luminance,
ICtCp, ...) ended the video as ``internal`` "OSError: [Errno 95] Operation not supported".
"""
from __future__ import annotations

import json
import shutil
import subprocess

import av
import numpy as np
import pytest

from scanner.decode import FrameSampler, VideoError

needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")


def _clip(path, colorspace: int, size=(64, 48), frames: int = 2):
    """A tiny H.264 clip of a colour gradient whose stream says matrix ``colorspace``."""
    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.colorspace = colorspace
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
            img[..., 1] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
            img[..., 2] = 40 * i
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    with av.open(str(path)) as c:  # the decoder must report the matrix, or the test means nothing
        assert int(next(c.decode(video=0)).colorspace) == colorspace
    return path


@pytest.mark.parametrize("code, name", [(8, "YCgCo"), (10, "BT.2020 constant luminance"),
                                        (14, "ICtCp")])
def test_a_colour_matrix_swscale_cannot_convert_is_a_specific_error(tmp_path, code, name):
    path = _clip(tmp_path / f"m{code}.mp4", code)
    with pytest.raises(VideoError) as e:
        list(FrameSampler(path, frames=2))
    assert e.value.kind == "unsupported_format"
    assert f"colour matrix {name}" in str(e.value) and "cannot convert it to RGB" in str(e.value)


def test_a_scan_row_says_which_colour_matrix(tmp_path):
    from scanner.cli import main

    path = _clip(tmp_path / "ycgco.mp4", 8)
    out = tmp_path / "rows.jsonl"
    main(["scan", str(path), "--out", str(out), "--frames", "2", "--no-progress", "--workers", "1",
          "--detector", "meso4_df"])
    (row,) = map(json.loads, out.read_text().splitlines())
    assert row["verdict"] == "error" and row["error"]["kind"] == "unsupported_format", row["error"]
    assert "YCgCo" in row["error"]["message"]


def test_matrices_swscale_converts_still_read(tmp_path):
    """BT.709, BT.601 (both tags), SMPTE 240M, BT.2020 NCL and untagged keep reading."""
    for code in (1, 2, 5, 6, 7, 9):
        (fr,) = FrameSampler(_clip(tmp_path / f"ok{code}.mp4", code), frames=1)
        assert fr.image.shape == (48, 64, 3) and fr.image.std() > 20


def _ffmpeg_rgb(path, matrix: str, rng: str, w: int, h: int) -> np.ndarray:
    """FFmpeg's own RGB of the first frame, read with the given matrix and range."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-vf",
                          f"scale=in_color_matrix={matrix}:in_range={rng}", "-pix_fmt", "rgb24",
                          "-f", "rawvideo", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(out, np.uint8).reshape(h, w, 3)


@needs_ffmpeg
@pytest.mark.parametrize("args, matrix, rng", [
    (["-pix_fmt", "yuvj420p", "-colorspace", "bt709", "-color_range", "pc"], "bt709", "pc"),
    (["-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_range", "pc"], "bt709", "pc"),
    (["-pix_fmt", "yuv420p", "-colorspace", "smpte170m"], "bt601", "tv"),
    (["-pix_fmt", "yuv420p"], "bt709", "tv"),  # untagged HD: BT.709, as players read it
    (["-pix_fmt", "yuv420p10le", "-colorspace", "bt709"], "bt709", "tv"),
])
def test_colours_match_ffmpegs_rgb_of_the_same_frame(tmp_path, args, matrix, rng):
    """Checked against the ffmpeg CLI told the stream's matrix and range: saturated bars
    read with the wrong matrix or range are 10-40 levels off; swscale versions agree within
    rounding (0.0-0.2 on average on real footage)."""
    path = tmp_path / "bars.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "smptehdbars=s=1280x720:d=0.08",
                    "-c:v", "libx264", "-qp", "0", *args, str(path)], check=True)
    (fr,) = FrameSampler(path, frames=1)
    d = np.abs(fr.image.astype(int) - _ffmpeg_rgb(path, matrix, rng, 1280, 720))
    assert d.mean() < 0.5 and np.percentile(d, 99) <= 3, (d.mean(), np.percentile(d, 99))
