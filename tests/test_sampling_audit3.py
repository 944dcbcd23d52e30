"""Sampling audit 3: which displayed frames a scan reads, and whether a cut file says so.

Clips are made here with the ffmpeg CLI; every frame carries its own number in its pixels
(10 black/white bars), so each sampled frame's identity is read back from the image and
compared with the picture the ffmpeg CLI itself outputs at that index.

Truncation: a fragmented MP4 (moof + mdat per fragment, no sample table) cut inside a moof,
right after one, or inside an mdat on a sample boundary, and an AVI cut inside its movi
data on a chunk boundary, were read as shorter, complete videos (a verdict on part of the
file, no error); their boxes / RIFF chunks say how long they are.
"""
from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest

from scanner.decode import FrameSampler, VideoError

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")

W, H, BITS = 160, 64, 10
# frame N: bar b (16 px wide) white when bit b of N is set
NUMBERED = "format=gray,geq=lum='if(bitand(N\\,pow(2\\,floor(X/16)))\\,235\\,16)',format=yuv420p"
X264 = ("-c:v", "libx264", "-g", "25", "-bf", "3")


def _ffmpeg(*args, stdout=None):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, stdout=stdout)


def _numbered(path, seconds=4, codec=X264, out=(), pipe_format=None):
    args = ["-f", "lavfi", "-i", f"color=black:s={W}x{H}:r=25:d={seconds}", "-vf", NUMBERED, *codec, *out]
    if pipe_format:  # written to a pipe: the muxer cannot seek back (no index, no sizes)
        with open(path, "wb") as f:
            _ffmpeg(*args, "-f", pipe_format, "-", stdout=f)
    else:
        _ffmpeg(*args, str(path))
    return path


def _number(image) -> int:
    grey = image.mean(axis=2)
    return sum(1 << b for b in range(BITS) if grey[:, b * 16 + 4:b * 16 + 12].mean() > 128)


def _cli_numbers(path) -> list[int]:
    """Number of each picture the ffmpeg CLI outputs, in order (every frame, none repeated)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)
    return [_number(f) for f in frames]


def _boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of an MP4's top-level boxes."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((kind, pos, size))
        pos += size
    return out


def _scan(path, **kw):
    s = FrameSampler(path, **kw)
    return s, list(s)


# -- sampled frames are the pictures shown at those indices -----------------------------


@pytest.mark.parametrize("name,out,pipe", [
    ("cfr_pyramid.mp4", ("-x264-params", "b-pyramid=normal"), None),
    ("start_offset.mp4", ("-output_ts_offset", "10"), None),  # first pts 10 s
    ("negative_pts.mkv", ("-avoid_negative_ts", "disabled"), None),  # B-frames: first pts < 0
    ("no_cues.mkv", (), "matroska"),  # no index, unknown sizes: seeks read forward
    ("open_gop_no_cues.mkv", ("-x264-params", "open-gop=1"), "matroska"),
])
@pytest.mark.parametrize("kw", [{"frames": 7}, {"fps": 3}])
def test_sampled_frames_are_the_pictures_the_ffmpeg_cli_shows(tmp_path, name, out, pipe, kw):
    path = _numbered(tmp_path / name, seconds=6, out=out, pipe_format=pipe)
    shown = _cli_numbers(path)
    s, got = _scan(path, **kw)
    assert s.index.frames == len(shown) and s.missed == 0 and not s.index.ordinal
    idx = [f.index for f in got]
    assert len(set(idx)) == len(idx) == s.requested  # distinct frames, as many as chosen
    assert [_number(f.image) for f in got] == [shown[i] for i in idx]  # the CLI's picture i
    assert [f.time_s for f in got] == pytest.approx([i / 25 for i in idx], abs=1e-3)
    if "frames" in kw:  # evenly spaced by presentation index, first and last included
        assert idx == np.linspace(0, len(shown) - 1, 7).round().astype(int).tolist()
    else:  # the frame on screen at each k/3 s
        assert idx == sorted({int(np.floor(k / 3 * 25 + 1e-6)) for k in range(18)})


# -- fragmented MP4 cut inside a fragment -----------------------------------------------


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory):
    path = _numbered(tmp_path_factory.mktemp("frag") / "frag.mp4", seconds=8,
                     out=("-movflags", "frag_keyframe+empty_moov"))
    return path, path.read_bytes()


def _fragment_cuts(data: bytes) -> dict[str, int]:
    """Cut points inside the 5th fragment: in its moof, right after it, and on a sample
    boundary inside its mdat (the first sample's end, read from the moof's trun)."""
    boxes = _boxes(data)
    moofs = [(pos, size) for kind, pos, size in boxes if kind == b"moof"]
    moof, size = moofs[4]
    trun = data.index(b"trun", moof)
    flags = int.from_bytes(data[trun + 5:trun + 8], "big")
    p = trun + 12 + 4 * bool(flags & 0x1) + 4 * bool(flags & 0x4)  # sample count, offset, first flags
    p += 4 * bool(flags & 0x100)  # the first sample's duration
    assert flags & 0x200, "trun without sample sizes"
    first_sample = int.from_bytes(data[p:p + 4], "big")
    return {"in_moof": moof + 24, "after_moof": moof + size, "sample_boundary": moof + size + 8 + first_sample}


@pytest.mark.parametrize("where", ["in_moof", "after_moof", "sample_boundary"])
def test_fragmented_mp4_cut_inside_a_fragment_is_truncated(tmp_path, fragmented, where):
    _, data = fragmented
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:_fragment_cuts(data)[where]])
    with pytest.raises(VideoError) as e:
        _scan(cut, frames=5)
    assert e.value.kind == "truncated"


@pytest.mark.parametrize("flags", ["frag_keyframe", "frag_keyframe+empty_moov+skip_trailer", "cmaf",
                                   "frag_every_frame+empty_moov"])
def test_complete_fragmented_mp4_is_not_truncated(tmp_path, flags):
    path = _numbered(tmp_path / "f.mp4", out=("-movflags", flags))
    s, got = _scan(path, frames=5)
    assert s.index.frames == 100 and not s.index.truncated and s.missed == 0
    assert [_number(f.image) for f in got] == [f.index for f in got]


def test_fragmented_mp4_cut_between_fragments_makes_no_claim(tmp_path, fragmented):
    """No header gives a fragmented file's length: a cut exactly between two fragments reads
    as a shorter, complete video (documented), every frame of it intact."""
    _, data = fragmented
    moofs = [pos for kind, pos, _ in _boxes(data) if kind == b"moof"]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:moofs[4]])
    s, got = _scan(cut, frames=5)
    assert not s.index.truncated and s.index.frames == len(_cli_numbers(cut)) < 200
    assert [_number(f.image) for f in got] == [f.index for f in got]


# -- AVI cut inside its movi data -------------------------------------------------------


def _avi_chunk_ends(data: bytes) -> list[int]:
    """End offsets of the chunks in the movi list (each a cut on a chunk boundary)."""
    movi = data.index(b"movi") + 4
    end = movi - 8 + 8 + int.from_bytes(data[movi - 8:movi - 4], "little")
    ends, pos = [], movi
    while pos + 8 <= end:
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        pos += 8 + size + (size & 1)
        ends.append(pos)
    return ends


@pytest.mark.parametrize("codec", [("-c:v", "mpeg4", "-g", "25"), ("-c:v", "libx264", "-g", "25", "-bf", "0")])
def test_avi_cut_inside_its_data_on_a_chunk_boundary_is_truncated(tmp_path, codec):
    data = _numbered(tmp_path / "a.avi", codec=codec).read_bytes()
    ends = _avi_chunk_ends(data)
    for at in (ends[len(ends) // 3], ends[-2]):  # before the last frames; just before idx1
        cut = tmp_path / "cut.avi"
        cut.write_bytes(data[:at])
        with pytest.raises(VideoError) as e:
            _scan(cut, frames=5)
        assert e.value.kind == "truncated"


def test_avi_written_to_a_pipe_is_complete(tmp_path):
    """A muxer that cannot seek back leaves the RIFF size at 0xFFFFFFFF: no length, no claim."""
    path = _numbered(tmp_path / "p.avi", codec=("-c:v", "mpeg4", "-g", "25"), pipe_format="avi")
    assert path.read_bytes()[4:8] == b"\xff\xff\xff\xff"
    s, got = _scan(path, frames=5)
    assert s.index.frames == 100 and not s.index.truncated
    assert [_number(f.image) for f in got] == [f.index for f in got]
