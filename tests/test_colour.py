"""HDR (PQ, HLG) tone-mapped to SDR, untagged HD read as BT.709 (scanner/colour.py).

The HDR clips are made here from a real face clip: its SDR frames are taken back to
linear light (BT.1886), SDR white put at HDR reference white (203 cd/m^2, BT.2408),
BT.709 -> BT.2020, PQ (ST 2084) or HLG (BT.2100, inverse OOTF) encoded and stored as
10-bit BT.2020 limited range, tagged as phones and HDR10 files are. Read back, they must
look like the SDR original, not like the washed-out picture swscale alone makes.
"""
from __future__ import annotations

import json

import av
import numpy as np
import pytest

from conftest import SAMPLES
from scanner import colour
from scanner.decode import FrameSampler

TRC = {"pq": 16, "hlg": 18}


def _sdr_frames(n: int = 3) -> list[np.ndarray]:
    with av.open(str(SAMPLES / "d5.mp4")) as c:  # 480 x 480 talking head, untagged SD
        return [f.to_ndarray(format="rgb24") for f, _ in zip(c.decode(video=0), range(n))]


def _hdr_code(img: np.ndarray, kind: str) -> np.ndarray:
    """SDR ``uint8 (H, W, 3)`` -> PQ / HLG BT.2020 R'G'B' ``uint16`` (the pipeline reversed)."""
    lin = (img / 255.0) ** 2.4 @ colour.gamut_matrix(colour.PRI_BT709, colour.PRI_BT2020).T
    nits = np.clip(lin, 0, None) * colour.REFERENCE_WHITE
    if kind == "pq":
        signal = colour.pq_inverse_eotf(nits)
    else:  # inverse HLG OOTF: display light -> scene light, then the OETF
        fd = nits / colour.PEAK
        yd = fd @ colour.rgb_to_xyz(colour._PRIMARIES[colour.PRI_BT2020])[1]
        ys = np.maximum(yd, 1e-12) ** (1 / colour.HLG_GAMMA)
        signal = colour.hlg_oetf(fd / ys[..., None] ** (colour.HLG_GAMMA - 1))
    return np.round(signal * 65535).astype(np.uint16)


def _write(path, imgs, kind: str | None, sar=None, rotation=None):
    """``imgs`` as H.264: 8-bit SDR (``kind`` None) or 10-bit HDR tagged like HDR10 / HLG."""
    h, w = imgs[0].shape[:2]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p10le" if kind else "yuv420p"
        s.options = {"crf": "12"}
        if kind:
            cc = s.codec_context
            cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 9, TRC[kind], 9, 1
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, img in enumerate(imgs):
            if kind:
                f = av.VideoFrame.from_ndarray(_hdr_code(img, kind), format="rgb48le")
                f = f.reformat(format="yuv420p10le", dst_colorspace="BT2020", dst_color_range="MPEG")
            else:
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("hdr")
    imgs = _sdr_frames()
    return imgs, {k: _write(d / f"{k or 'sdr'}.mp4", imgs, k) for k in (None, "pq", "hlg")}


def _mad(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


def test_transfer_functions_hit_the_standards_anchor_points():
    # BT.2408: HDR reference white 203 cd/m^2 is 58% PQ and 75% HLG (1000 cd/m^2 display).
    assert colour.pq_inverse_eotf(203.0) == pytest.approx(0.58, abs=0.005)
    assert colour.pq_eotf(colour.pq_inverse_eotf(np.array([0.1, 203.0, 1000.0]))) == pytest.approx([0.1, 203, 1000])
    e = colour.hlg_inverse_oetf(np.array(0.75))
    assert colour.PEAK * e ** colour.HLG_GAMMA == pytest.approx(203, abs=1)  # OOTF of grey
    assert colour.hlg_oetf(colour.hlg_inverse_oetf(np.linspace(0, 1, 11))) == pytest.approx(np.linspace(0, 1, 11))
    x = np.linspace(0, 6, 601, dtype=np.float32)
    y = colour.rolloff(x)
    assert np.array_equal(y[x <= colour.KNEE], x[x <= colour.KNEE]) and np.all(np.diff(y) > 0)
    assert colour.rolloff(np.float32(colour.PEAK / colour.REFERENCE_WHITE)) == pytest.approx(1.0, abs=1e-5)
    # BT.2087: BT.2020 -> BT.709 for linear light.
    assert colour.gamut_matrix(colour.PRI_BT2020)[0] == pytest.approx([1.6605, -0.5876, -0.0728], abs=2e-4)


@pytest.mark.parametrize("kind", ["pq", "hlg"])
def test_hdr_frames_are_tone_mapped_to_the_sdr_picture(clips, kind):
    # PQ/HLG was converted as if it were SDR gamma: the face came out washed out
    # (31 levels off on average for PQ, 17 for HLG).
    imgs, paths = clips
    sampler = FrameSampler(paths[kind], frames=3, det_max_side=240)
    frames = list(sampler)
    with av.open(str(paths[kind])) as c:
        washed = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for fr, img, old in zip(frames, imgs, washed):
        assert fr.image.shape == img.shape and fr.image.dtype == np.uint8
        assert _mad(fr.image, img) < 1.5 and _mad(old, img) > 10 * _mad(fr.image, img)
        assert fr.hdr == kind
        want_small = av.VideoFrame.from_ndarray(img).reformat(240, 240, interpolation="AREA").to_ndarray()
        assert fr.small.shape == (240, 240, 3) and _mad(fr.small, want_small) < 1.5
    assert (sampler.hdr, sampler.tone_mapped) == (kind, 3)


def test_hdr_keeps_display_aspect_and_rotation(tmp_path):
    # Anamorphic (stored half as wide, SAR 2:1) and turned 90 degrees by the display matrix.
    from fractions import Fraction

    imgs = _sdr_frames(2)
    squeezed = [av.VideoFrame.from_ndarray(i).reformat(240, 480, interpolation="AREA").to_ndarray() for i in imgs]
    path = _write(tmp_path / "anamorphic.mp4", [np.rot90(s, -1).copy() for s in squeezed], "pq",
                  sar=Fraction(1, 2), rotation=90)
    for fr, img in zip(FrameSampler(path, frames=2), imgs):
        assert fr.image.shape == (480, 480, 3)
        assert _mad(fr.image, img) < 4 and fr.hdr == "pq"  # squeezed and stretched back: a little blur


def _iou(a, b) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


def test_hdr_faces_and_scores_match_the_sdr_clip(clips, tmp_path):
    # Washed out, a PQ clip of a real face scored 0.106 with meso4_df against 0.012 for SDR.
    from scanner.cli import main

    _, paths = clips
    out = tmp_path / "rows.jsonl"
    main(["scan", *(str(paths[k]) for k in (None, "pq", "hlg")), "--out", str(out), "--detector", "meso4_df",
          "--engine", "eager", "--frames", "3", "--no-progress", "--workers", "1"])
    rows = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    base = rows[str(paths[None])]
    for kind in ("pq", "hlg"):
        row = rows[str(paths[kind])]
        assert row["faces"] == base["faces"] == 3 and abs(row["score"] - base["score"]) < 0.03
        for a, b in zip(row["frames_detail"], base["frames_detail"]):  # MTCNN: the same face
            assert len(a["faces"]) == len(b["faces"]) == 1
            assert _iou(np.array(a["faces"][0]["box"]), np.array(b["faces"][0]["box"])) >= 0.5
        assert (row["video"]["hdr"], row["video"]["tone_mapped"]) == (kind, 3)
    assert (base["video"]["hdr"], base["video"]["tone_mapped"]) == (None, 0)


def test_live_streams_tone_map_hdr_too(clips):
    from conftest import wait_for
    from scanner.live.source import LiveSource, SourceSettings

    imgs, paths = clips
    src = LiveSource("hdr", str(paths["pq"]), SourceSettings(allow_files=True, max_retries=0)).start()
    try:
        wait_for(lambda: src.state == "stopped", 10, what="file to end")
    finally:
        src.stop()
    item = src.buffer.get()
    assert item is not None and _mad(item.frame.image, imgs[0]) < 1.5 and item.frame.hdr == "pq"
    assert src.describe()["frames_tone_mapped"] == src.stats.sampled >= 1


BARS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
                 (255, 255, 255), (40, 40, 40)], np.uint8)


def _bars(path, w: int, h: int, matrix: str | None, tag: int = 2, full: bool = False):
    """Colour bars encoded with ``matrix`` (None: swscale's BT.601), stream tagged ``tag``;
    ``full``: full range (flagged by color_range alone, as phones do)."""
    img = np.repeat(BARS, w // len(BARS), axis=0)[None].repeat(h, axis=0)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", {"crf": "10"}
        s.codec_context.colorspace, s.codec_context.color_range = tag, 2 if full else 0
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=matrix, dst_color_range="JPEG" if full else None)
        f.colorspace, f.pts = tag, 0
        out.mux(s.encode(f))
        out.mux(s.encode())
    return path


def _bar_error(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    step = w // len(BARS)
    return np.abs(image[h // 2, step // 2::step].astype(int) - BARS).max(axis=1)


def _swscale(path) -> np.ndarray:
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        assert f.colorspace in (1, 2, 5) and not colour.hdr_kind(f)
        return f.to_ndarray(format="rgb24")


def test_untagged_hd_is_bt709_and_untagged_sd_stays_bt601(tmp_path):
    # Players read an untagged HD stream as BT.709; swscale took BT.601 at every size,
    # so the saturated bars of an untagged 720p clip came out up to 23 levels off.
    hd = _bars(tmp_path / "hd.mp4", 1280, 720, "ITU709")
    (fr,) = FrameSampler(hd, frames=1, det_max_side=640)
    assert _bar_error(fr.image).max() <= 3 and _bar_error(_swscale(hd)).max() >= 10
    assert _bar_error(fr.small).max() <= 3  # the detector's copy reads it the same way
    # SD stays BT.601 and tagged HD stays as tagged: the same bytes as swscale's own reading.
    sd = _bars(tmp_path / "sd.mp4", 640, 480, None)
    tagged = _bars(tmp_path / "tagged.mp4", 1280, 720, "ITU709", tag=1)
    for path in (sd, tagged):
        (fr,) = FrameSampler(path, frames=1)
        assert _bar_error(fr.image).max() <= 3 and np.array_equal(fr.image, _swscale(path))


def test_untagged_full_range_hd_is_bt709_too(tmp_path):
    # FFmpeg's H.264/HEVC decoders give full-range streams as yuvj420p, which was taken for
    # JFIF (MJPEG) and kept BT.601 at any size: untagged full-range HD bars 23 levels off,
    # the face of a 720p clip 2.6 (0.9 as BT.709). A 10-bit one was already BT.709.
    hd = _bars(tmp_path / "hd.mp4", 1280, 720, "ITU709", full=True)
    (fr,) = FrameSampler(hd, frames=1, det_max_side=640)
    assert _bar_error(fr.image).max() <= 3 and _bar_error(fr.small).max() <= 3
    # MJPEG (FFmpeg tags its JFIF BT.601) and SD keep swscale's reading.
    sd = _bars(tmp_path / "sd.mp4", 640, 480, None, full=True)
    (fr,) = FrameSampler(sd, frames=1)
    assert _bar_error(fr.image).max() <= 3 and np.array_equal(fr.image, _swscale(sd))
    mjpeg = tmp_path / "hd.avi"
    with av.open(str(mjpeg), "w") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 1280, 720, "yuvj420p", {"qmin": "1", "qmax": "1"}
        img = np.repeat(BARS, 1280 // len(BARS), axis=0)[None].repeat(720, axis=0)
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj420p")
        f.pts = 0
        out.mux(s.encode(f))
        out.mux(s.encode())
    (fr,) = FrameSampler(mjpeg, frames=1)
    assert _bar_error(fr.image).max() <= 3 and np.array_equal(fr.image, _swscale(mjpeg))


def test_untagged_size_rule_is_mpvs(tmp_path):
    """BT.709 from 1280 wide or above 576 tall (a BT.709 phone clip scaled to 360x640 stays
    BT.709), BT.601 up to PAL's 720x576."""
    portrait = _bars(tmp_path / "portrait.mp4", 360, 640, "ITU709")
    pal = _bars(tmp_path / "pal.mp4", 720, 576, None)
    (fr,) = FrameSampler(portrait, frames=1)
    assert _bar_error(fr.image).max() <= 3
    (fr,) = FrameSampler(pal, frames=1)
    assert np.array_equal(fr.image, _swscale(pal))


def _zscale_ok() -> bool:
    import shutil
    import subprocess

    if not shutil.which("ffmpeg"):
        return False
    out = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return " zscale " in out and "libx265" in encoders


@pytest.mark.skipif(not _zscale_ok(), reason="ffmpeg with zscale (zimg) and libx265 is not installed")
@pytest.mark.parametrize("kind, transfer, limit", [("pq", "smpte2084", 1.5), ("hlg", "arib-std-b67", 3.0)])
def test_hdr_made_by_ffmpeg_zscale_reads_as_its_sdr_source(tmp_path, kind, transfer, limit):
    """An independent HDR encoder: the clips above are made with this module's own curves,
    so a constant wrong the same way both ways would pass them. FFmpeg's zscale (zimg)
    converts the SDR clip to 10-bit BT.2020 PQ / HLG (SDR white at 203 cd/m^2) as HDR
    masters are made; read back it must match the SDR frames (HLG within zimg's and this
    module's readings of the BT.2100 OOTF: zimg applies HLG's gamma 1.2 per channel, BT.2100
    on luminance, 2.3 levels on this clip; PQ 1.1; 17 and 31 without)."""
    import subprocess

    out = tmp_path / f"{kind}.mp4"
    chain = (f"zscale=t={transfer}:p=bt2020:m=bt2020nc:tin=bt709:pin=bt709:min=170m:npl=203,"  # d5 is untagged SD: BT.601
             "format=yuv420p10le")
    params = f"log-level=error:crf=12:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLES / "d5.mp4"), "-frames:v", "3", "-vf", chain,
                    "-c:v", "libx265", "-x265-params", params, str(out)], check=True)
    got = list(FrameSampler(out, frames=3))
    assert [f.hdr for f in got] == [kind] * 3
    for sdr, f in zip(_sdr_frames(3), got):
        assert _mad(f.image, sdr) < limit


def test_test_streams_are_encoded_and_tagged_bt709(tmp_path):
    """scanner.live.publish.transcode_clip makes the live tests' and bench's 720p streams: it
    encoded RGB with swscale's BT.601 and left the stream untagged, so read back as HD
    (BT.709) its saturated colours were off by up to 41 levels."""
    from scanner.live.publish import _letterbox, transcode_clip

    src = _bars(tmp_path / "bars.mp4", 640, 480, None)
    (want,) = FrameSampler(src, frames=1)
    (tmp_path / "hd.mp4").write_bytes(transcode_clip(str(src), 1280, 720, seconds=0.04, fmt="mp4"))
    (got,) = FrameSampler(tmp_path / "hd.mp4", frames=1)
    ref = _letterbox(want.image, 1280, 720).astype(int)
    flat = (ref[:, :-8] == ref[:, 8:]).all(axis=2)  # away from the bars' edges (chroma bleeds)
    diff = np.abs(got.image[:, 4:-4].astype(int) - ref[:, 4:-4])[flat]
    assert diff.max() <= 8, diff.max()  # 41 before (x264 ultrafast alone: 5)


def _write_wide(path, imgs, primaries: int, trc: int, matrix: str, colorspace: int):
    """SDR ``imgs`` re-encoded with ``primaries`` (BT.1886 display light, BT.709 -> wide
    gamut), 10-bit limited range, tagged with ``trc`` and ``colorspace``: no HDR transfer."""
    h, w = imgs[0].shape[:2]
    to_wide = colour.gamut_matrix(colour.PRI_BT709, primaries).T
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p10le", {"crf": "12"}
        cc = s.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = primaries, trc, colorspace, 1
        for i, img in enumerate(imgs):
            code = np.clip((img / 255.0) ** 2.4 @ to_wide, 0, 1) ** (1 / 2.4)
            f = av.VideoFrame.from_ndarray(np.round(code * 65535).astype(np.uint16), format="rgb48le")
            f = f.reformat(format="yuv420p10le", dst_colorspace=matrix, dst_color_range="MPEG")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode())
    return path


@pytest.mark.parametrize("primaries, trc, matrix, colorspace", [(9, 14, "BT2020", 9), (12, 1, "ITU709", 1)])
def test_wide_gamut_sdr_primaries_are_converted_to_bt709(tmp_path, primaries, trc, matrix, colorspace):
    # BT.2020 (or Display P3) primaries with an SDR transfer: swscale converted the matrix
    # only, so the face came out desaturated: 3.6 grey levels off on average for BT.2020
    # (6.7 on the face of a zscale-made 720p copy), 2.0 for P3 (3.8); 0.5 now (1.1).
    imgs = _sdr_frames(2)
    path = _write_wide(tmp_path / "wide.mp4", imgs, primaries, trc, matrix, colorspace)
    for fr, img in zip(FrameSampler(path, frames=2, det_max_side=240), imgs):
        assert _mad(fr.image, img) < 1.5 and fr.hdr is None
        want_small = av.VideoFrame.from_ndarray(img).reformat(240, 240, interpolation="AREA").to_ndarray()
        assert _mad(fr.small, want_small) < 1.5
