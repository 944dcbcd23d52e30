"""One decoded picture to a :class:`Frame`: what every reader (files, live streams, report
thumbnails) does to a decoded ``av.VideoFrame`` before faces are searched.

In this order: rotation read (yadif drops the side data), deinterlacing of frames flagged
interlaced (:mod:`scanner.interlace`), limited-range grey expanded (swscale reads grey as
full range: :func:`scanner.colour.gray_full_range`), square pixels at a bounded size (:func:`display_size`:
anamorphic video stretched, beyond 8K UHD scaled down), RGB in SDR BT.709
(:mod:`scanner.colour`: HDR tone-mapped, wide gamut converted, untagged matrices by
size), the detector's downscaled copy, then the picture turned upright.
"""
from __future__ import annotations

import errno
import math
from dataclasses import dataclass

import av
import numpy as np
from av.sidedata.sidedata import Type

from .colour import downscaled, gray_full_range, to_rgb, unconvertible
from .interlace import deinterlace

@dataclass
class Frame:
    """One decoded, upright video frame.

    Attributes:
        index: presentation index (0-based) in the video.
        time_s: presentation time in seconds from the stream start.
        image: RGB ``uint8 (H, W, 3)`` at full resolution.
        small: RGB ``uint8 (h, w, 3)`` downscaled copy for face detection, or None.
        scale: ``small`` size / ``image`` size (1.0 when ``small`` is None).
        deinterlaced: the decoder flagged the frame interlaced and it was made progressive
            (:mod:`scanner.interlace`).
        hdr: ``"pq"`` / ``"hlg"``: an HDR frame tone-mapped to SDR (:mod:`scanner.colour`);
            None for SDR.
    """

    index: int
    time_s: float
    image: np.ndarray
    small: np.ndarray | None = None
    scale: float = 1.0
    deinterlaced: bool = False
    hdr: str | None = None


# Frames beyond 8K UHD's pixel count are scaled down to it before conversion to RGB: a
# 7.6 MB MJPEG AVI of 16000x16000 frames took 768 MB per RGB frame (4.6 GB for 4 frames)
# and the frame queue holds a dozen per worker: an input-sized kill of the whole scan.
# Faces in such frames stay far larger than the crops the detectors take.
MAX_PIXELS = 7680 * 4320


def display_size(width: int, height: int, sar, max_pixels: int | None = None) -> tuple[int, int]:
    """Frame size in square pixels, at most ``max_pixels``: an anamorphic video (sample
    aspect ratio not 1, e.g. DV, HDV, broadcast) stores faces squeezed, which detectors
    score as distorted. The longest side is kept (no frame grows beyond it) and the
    other one follows the display aspect ratio."""
    if sar and sar > 0 and sar != 1:
        dar, side = width * float(sar) / height, max(width, height)
        width, height = (side, max(2, round(side / dar))) if dar >= 1 else (max(2, round(side * dar)), side)
    max_pixels = max_pixels or MAX_PIXELS
    if width * height > max_pixels:
        f = math.sqrt(max_pixels / (width * height))
        width, height = max(2, int(width * f)), max(2, int(height * f))
    return width, height


def to_frame(av_frame, idx: int, time_s: float, det_max_side: int | None, sar=None) -> Frame:
    """``sar``: the stream's sample aspect ratio (PyAV's frames do not carry it)."""
    turn = display_turn(av_frame)  # before: yadif drops the side data
    check_palette(av_frame)
    progressive = deinterlace(av_frame)
    av_frame = gray_full_range(av_frame if progressive is None else progressive)
    try:
        image, small, scale, hdr = _converted(av_frame, det_max_side, sar)
    except OSError as e:  # swscale refuses some matrices (YCgCo, ICtCp): was internal "Errno 95"
        if e.errno != errno.EOPNOTSUPP:
            raise
        from .decode import VideoError  # here: scanner.decode imports this module

        raise VideoError("unsupported_format", unconvertible(av_frame)) from e
    if turn != (0, False, False):
        image = _upright(image, *turn)
        small = None if small is None else _upright(small, *turn)
    return Frame(idx, time_s, image, small, scale, progressive is not None, hdr)


def _converted(av_frame, det_max_side: int | None, sar):
    """(RGB image in square pixels, detector copy or None, its scale, HDR kind)."""
    small, scale = None, 1.0
    w, h = display_size(av_frame.width, av_frame.height, sar)
    image, hdr = to_rgb(av_frame, w, h)
    if det_max_side and max(w, h) > det_max_side:
        scale = det_max_side / max(w, h)
        sw, sh = max(2, round(w * scale)), max(2, round(h * scale))
        small = downscaled(av_frame, image, hdr, sw, sh)
        scale = sw / w  # the exact ratio swscale used horizontally
    return image, small, scale, hdr


def display_turn(av_frame) -> tuple[int, bool, bool]:
    """How the display matrix shows the stored picture: (quarter turns counter-clockwise as
    ``np.rot90`` counts them, then flip rows, then flip columns), decided as FFmpeg's own
    autorotation does (fftools: transpose/hflip/vflip from the angle and the matrix's signs).

    Why not the angle alone: a mirrored matrix (a front camera's, ``-display_hflip``) has no
    rotation, yet its angle reads 180 degrees, so a mirrored face was judged upside down;
    a vertical flip reads 0 and was judged as stored, upside down."""
    rotation = getattr(av_frame, "rotation", 0) or 0  # av_display_rotation_get: CCW
    m = _display_matrix(av_frame)
    if m is None:  # none, or unreadable: the angle alone (nearest quarter turn)
        return int(round(rotation / 90.0)) % 4, False, False
    theta = -rotation % 360  # FFmpeg's get_rotation: clockwise, in [0, 360)
    if abs(theta - 90) < 1:
        return (1, True, False) if m[3] > 0 else (3, False, False)  # transpose / turned CW
    if abs(theta - 180) < 1:
        return 0, bool(m[4] < 0), bool(m[0] < 0)
    if abs(theta - 270) < 1:
        return (3, True, False) if m[3] < 0 else (1, False, False)  # anti-transpose / CCW
    if abs(theta) < 1 or abs(theta - 360) < 1:
        return 0, bool(m[4] < 0), False
    return int(round(rotation / 90.0)) % 4, False, False  # other angles: the nearest quarter turn


def _display_matrix(av_frame) -> np.ndarray | None:
    """The frame's display matrix, ``int32 (9,)`` 16.16 fixed point, or None."""
    try:
        # Read on a tiny copy (side data comes along): PyAV caches the side-data container on
        # the frame it reads and the two refer to each other, so a frame read directly stayed
        # alive until a garbage collection, and with it its decoder's buffers (5 reconnects of
        # an RTSP stream left 52 threads behind). The copy holds none of the decoder's.
        probe = av_frame.reformat(width=16, height=16)
        sd = probe.side_data.get(Type.DISPLAYMATRIX)
    except (ValueError, av.FFmpegError):
        # PyAV names all of a frame's side data at once and fails on a kind newer than itself
        # (the EXIF of MJPEG frames, MV-HEVC's view ids): every such frame was a decode error.
        return None
    return None if sd is None else np.frombuffer(bytes(sd), np.int32).copy()


def _upright(image: np.ndarray, k: int, flip_rows: bool, flip_cols: bool) -> np.ndarray:
    image = np.rot90(image, k)  # CCW for k > 0, as the display matrix angle
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def check_palette(av_frame) -> None:
    """A ``VideoError`` for a palette frame (pal8) whose palette is all zero, i.e. missing:
    FFmpeg's AVI muxer stores raw 8-bit RGB (bgr8, rgb8) without one and its demuxer reads
    that back as pal8 with an empty palette, so every pixel read black and a face clip came
    out ``no_face`` without an error. No real palette is all transparent black."""
    if av_frame.format.name != "pal8" or np.frombuffer(av_frame.planes[1], np.uint8).any():
        return
    from .decode import VideoError  # here: scanner.decode imports this module

    raise VideoError("unsupported_format", "8-bit palette video without its palette (raw 8-bit RGB "
                     "in AVI?): every pixel would read black")


def picture_sar(stream_sar, opened_codec_sar, cc):
    """The SAR of the picture just decoded by ``cc``: the container's (``stream_sar``) when it
    declares one of its own, i.e. differs from the codec's at open (FFmpeg's rule), else the
    decoder's current one, which follows the stream (a broadcast switching between 4:3 and
    16:9 pictures of one stored size). Batch files and live streams alike."""
    if stream_sar != opened_codec_sar:
        return stream_sar
    return cc.sample_aspect_ratio or stream_sar
