"""Decode audit 2: answers that were wrong without an error.

* An audio file carrying its album cover (an .m4a/.mp4 song) was judged on the cover
  picture as a one-frame video: FFmpeg's best-stream pick returns the attached picture
  when it is the only "video". It is now ``no_video_stream``, saying it holds cover art.
* A display matrix with a mirror (``-display_hflip``, some front cameras) or a transpose
  was read by its angle alone: a horizontal mirror reads 180 degrees, so the picture was
  judged upside down, and a vertical flip reads 0 and was judged as stored. Frames are now
  turned as FFmpeg's own autorotation shows them.
"""
from __future__ import annotations

import shutil
import struct
import subprocess

import av
import numpy as np
import pytest

from conftest import make_video
from scanner.decode import FrameSampler, VideoError, open_file, pick_video_stream

needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")


def _ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@needs_ffmpeg
@pytest.mark.parametrize("ext", ["m4a", "mp4"])
def test_audio_with_cover_art_is_no_video_stream_not_a_one_frame_video(tmp_path, ext):
    _ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(tmp_path / "a.m4a"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x64:d=1", "-frames:v", "1", "-update", "1",
            str(tmp_path / "cover.jpg"))
    song = tmp_path / f"song.{ext}"
    _ffmpeg("-i", str(tmp_path / "a.m4a"), "-i", str(tmp_path / "cover.jpg"), "-map", "0", "-map", "1",
            "-c", "copy", "-disposition:v:0", "attached_pic", str(song))
    with open_file(song) as c:
        assert [s.disposition & av.stream.Disposition.attached_pic for s in c.streams.video]  # it has one
        assert pick_video_stream(c) is None
    with pytest.raises(VideoError) as e:
        list(FrameSampler(song, frames=8))  # was: 1 frame, the cover, sampled and judged
    assert e.value.kind == "no_video_stream" and "cover art" in str(e.value)


_ONE, _W = 0x10000, 0x40000000
# tkhd matrix (a, b, c, d) -> the corner where the stored top-left marker is shown (as
# FFmpeg's autorotation shows it: transpose/hflip/vflip filters), and whether sides swap.
MATRICES = {
    "identity": ((_ONE, 0, 0, _ONE), "TL", False),
    "hflip": ((-_ONE, 0, 0, _ONE), "TR", False),  # was judged upside down (BR)
    "vflip": ((_ONE, 0, 0, -_ONE), "BL", False),  # was judged as stored (TL)
    "rot180": ((-_ONE, 0, 0, -_ONE), "BR", False),
    "cw90": ((0, _ONE, -_ONE, 0), "TR", True),
    "ccw90": ((0, -_ONE, _ONE, 0), "BL", True),
    "transpose": ((0, _ONE, _ONE, 0), "TL", True),  # was TR
    "antitranspose": ((0, -_ONE, -_ONE, 0), "BR", True),  # was BL
}


def _with_matrix(src, dst, abcd):
    """``src`` (an MP4 with one track) with its tkhd display matrix replaced."""
    data = bytearray(src.read_bytes())
    payload = data.index(b"tkhd") + 4
    assert data[payload] == 0  # version 0: the matrix sits 40 bytes in
    a, b, c, d = abcd
    data[payload + 40:payload + 76] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, _W)
    dst.write_bytes(bytes(data))
    return dst


def _marker_corner(img) -> str:
    h, w = img.shape[:2]
    corners = {"TL": img[: h // 4, : w // 4], "TR": img[: h // 4, -w // 4:],
               "BL": img[-h // 4:, : w // 4], "BR": img[-h // 4:, -w // 4:]}
    lit = [k for k, q in corners.items() if q[..., 1].mean() > 128]
    assert len(lit) == 1, lit
    return lit[0]


@pytest.mark.parametrize("name", list(MATRICES))
def test_display_matrix_flips_are_shown_as_ffmpeg_shows_them(tmp_path, name):
    abcd, corner, swapped = MATRICES[name]
    src = make_video(tmp_path / "src.mp4", frames=24, size=(160, 96), gop=6)
    path = _with_matrix(src, tmp_path / f"{name}.mp4", abcd)
    frames = list(FrameSampler(path, frames=3, det_max_side=80))
    assert len(frames) == 3
    for f in frames:
        assert f.image.shape[:2] == ((160, 96) if swapped else (96, 160))
        assert _marker_corner(f.image) == corner
        assert _marker_corner(f.small) == corner  # the detector's copy is turned alike
        assert f.small.shape[0] < f.image.shape[0]


@needs_ffmpeg
@pytest.mark.parametrize("name", ["hflip", "vflip", "transpose", "antitranspose"])
def test_display_matrix_flips_match_the_ffmpeg_cli(tmp_path, name):
    """The expectations above, checked against FFmpeg's own autorotation."""
    abcd, corner, swapped = MATRICES[name]
    src = make_video(tmp_path / "src.mp4", frames=4, size=(160, 96))
    path = _with_matrix(src, tmp_path / f"{name}.mp4", abcd)
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    h, w = (160, 96) if swapped else (96, 160)
    assert _marker_corner(np.frombuffer(out, np.uint8).reshape(h, w, 3)) == corner


def test_a_frame_with_side_data_newer_than_pyav_is_still_turned(tmp_path):
    """PyAV fails on a frame's side data of a kind it cannot name (FFmpeg attaches the EXIF of
    JPEG/MJPEG pictures): reading the display matrix made every such frame an error."""
    import av
    from PIL import Image

    from scanner.picture import to_frame

    ex = Image.Exif()
    ex[0x0112] = 6  # EXIF orientation: turn 90 degrees clockwise to display
    Image.new("RGB", (64, 32), (200, 30, 30)).save(tmp_path / "o.jpg", exif=ex.tobytes())
    with av.open(str(tmp_path / "o.jpg")) as c:
        f = next(c.decode(video=0))
        fr = to_frame(f, 0, 0.0, None)
    assert f.rotation == -90  # FFmpeg's reading of the EXIF orientation
    assert fr.image.shape[:2] == (64, 32)  # turned upright, not an error


def test_reading_the_display_matrix_leaves_the_frame_free(tmp_path):
    """PyAV caches the side-data container on the frame it reads, the two referring to each
    other: every frame read so stayed alive until a garbage collection, with its decoder's
    buffers (a live RTSP stream reconnected 5 times left 52 threads behind)."""
    import gc

    import av

    from scanner.picture import display_turn

    src = make_video(tmp_path / "src.mp4", frames=4, size=(160, 96))
    path = _with_matrix(src, tmp_path / "hflip.mp4", MATRICES["hflip"][0])
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        assert display_turn(f) == (0, False, True)  # read all the same
        assert not [r for r in gc.get_referrers(f) if "SideData" in type(r).__name__]
