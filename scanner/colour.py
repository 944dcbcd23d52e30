"""Decoded frames to the 8-bit BT.709 (SDR) RGB every detector was trained on.

Four cases swscale alone gets wrong, without any error:

* **HDR** (PQ, SMPTE ST 2084 / BT.2100; HLG, ARIB STD-B67 / BT.2100; usually BT.2020
  primaries and 10-bit; iPhones record HLG HEVC by default). swscale converts the matrix
  and range only, so the PQ/HLG signal is read as if it were SDR gamma: faces come out
  washed out and flat. FFmpeg in PyAV has no ``zscale``; swscale of FFmpeg 8 tone-maps
  when asked for BT.709 transfer and primaries, but measured on PQ/HLG copies of a real
  face clip it was further from the SDR original (1.24 / 0.98 grey levels against 0.84 /
  0.52 here) and took 6.6 s to set up each new scaler (per size and format), so the
  conversion is done here: 16-bit non-linear R'G'B' from swscale (matrix and range of the
  frame), then per pixel

  1. PQ EOTF (ST 2084) to display light in cd/m^2, or HLG inverse OETF + OOTF (BT.2100:
     system gamma 1.2 at the nominal 1000 cd/m^2 peak) to display light;
  2. scaled so HDR reference white, 203 cd/m^2 (BT.2408), is SDR white (1.0);
  3. BT.2020 -> BT.709 primaries (3x3 matrix in linear light);
  4. a smooth highlight roll-off on max(R, G, B) (one gain per pixel, so hue and
     saturation hold): identity up to :data:`KNEE`, then an extended Reinhard curve that
     reaches SDR white at the assumed peak (1000 cd/m^2, the usual grading peak and HLG's
     nominal one); out-of-gamut and brighter values are clipped;
  5. BT.1886 inverse EOTF (gamma 2.4, black at 0) to 8 bits.

  Steps 1 and 5 are lookup tables; the rest is float32 numpy on strips of rows, so the
  working set stays in cache and an 8K frame needs no gigabyte of temporaries.

* **Untagged colour matrix**: a YUV frame without a ``colorspace`` tag is converted by
  swscale with BT.601 whatever its size, while players (mpv, browsers) read untagged HD
  as BT.709 (saturated reds differ by ~13 levels). The rule is mpv's: BT.709 when the
  coded width is >= 1280 or the height above 576 (taller than PAL SD, so phone clips shot
  in BT.709 and scaled down to 360x640 stay BT.709), BT.601 otherwise (SD, as before). Tagged
  frames (MJPEG's too: FFmpeg tags JFIF's BT.601), RGB and grey keep swscale's reading;
  an untagged range stays limited (MPEG), as before.

* **Limited-range grey**: swscale reads every grey format as full range, whatever the
  frame's range tag (and ``src_color_range``), so a monochrome stream in limited range
  (black 16, white 235; HEVC 4:0:0 and AV1 monochrome default to it, FFV1 and Y4M may
  say so) came out with grey blacks and dim whites: 4.2 levels too dark and 5.3 off on
  average on a real face clip. :func:`gray_full_range` expands it first, as swscale
  expands limited-range YUV.

* **Wide-gamut SDR** (BT.2020 or Display P3 / SMPTE EG 432-1 primaries, SDR transfer):
  swscale converts the matrix, not the primaries, so colours come out desaturated. The
  16-bit R'G'B' is taken to display light by BT.1886 (gamma 2.4), through the gamut matrix
  (BT.2087) and back, clipped; steps 3 and 5 above without tone mapping.

Other SDR frames take swscale's own path unchanged (the same call as before this module
existed, only ``src_colorspace`` is added for untagged HD), so SD and tagged footage,
and every detector's training crops, decode to the same bytes as before.
"""
from __future__ import annotations

import functools

import av
import numpy as np

# FFmpeg's AVColorTransferCharacteristic / AVColorSpace / AVColorPrimaries codes.
TRC_PQ, TRC_HLG = 16, 18  # SMPTE ST 2084, ARIB STD-B67
SPC_UNSPECIFIED = 2
RANGE_MPEG, RANGE_JPEG = 1, 2  # AVColorRange: limited ("tv") / full ("pc")
PRI_BT709, PRI_BT2020, PRI_P3_D65 = 1, 9, 12
HDR_KINDS = {TRC_PQ: "pq", TRC_HLG: "hlg"}

REFERENCE_WHITE = 203.0  # cd/m^2, HDR reference white (ITU-R BT.2408)
PEAK = 1000.0  # cd/m^2 mapped to SDR white: HLG's nominal peak, the usual PQ grading peak
HLG_GAMMA = 1.2  # BT.2100 HLG system gamma at a 1000 cd/m^2 nominal peak
# Linear SDR level (relative to white) below which the roll-off changes nothing: SDR
# signal 0.86 (code 220), so skin and mid-tones map 1:1; reference white ends at signal
# 0.935 (code 238) and everything up to PEAK fits above it.
KNEE = 0.7
SD_HEIGHT, HD_WIDTH = 576, 1280  # untagged matrix: BT.709 above / from here, BT.601 otherwise

# Chromaticities (x, y) of R, G, B and the D65 white point.
_D65 = (0.3127, 0.3290)
_PRIMARIES = {
    PRI_BT709: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),  # ITU-R BT.709
    PRI_BT2020: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),  # ITU-R BT.2020
    PRI_P3_D65: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),  # SMPTE EG 432-1
}
_ENCODE_STEPS = 4096  # output table indexed by sqrt(linear): < 0.3 code error near black
_STRIP_PIXELS = 1 << 16  # pixels per strip: its float32 planes (~0.8 MB) stay in cache; fastest measured


def rgb_to_xyz(primaries) -> np.ndarray:
    """``float64 (3, 3)`` linear RGB -> CIE XYZ (white Y = 1) of three (x, y) primaries
    and D65 white (SMPTE RP 177)."""
    xy = np.asarray(primaries, np.float64)
    cols = np.stack([xy[:, 0] / xy[:, 1], np.ones(3), (1 - xy[:, 0] - xy[:, 1]) / xy[:, 1]])
    white = np.array([_D65[0] / _D65[1], 1.0, (1 - _D65[0] - _D65[1]) / _D65[1]])
    return cols * np.linalg.solve(cols, white)


def gamut_matrix(src: int, dst: int = PRI_BT709) -> np.ndarray:
    """``float64 (3, 3)`` linear RGB of primaries ``src`` -> ``dst`` (FFmpeg codes)."""
    return np.linalg.solve(rgb_to_xyz(_PRIMARIES[dst]), rgb_to_xyz(_PRIMARIES[src]))


# Luminance weights of linear BT.709 RGB (the Y row of its XYZ matrix: 0.2126, 0.7152,
# 0.0722). Y is the same whatever the primaries, so after the gamut matrix these weights
# give the luminance BT.2100's HLG OOTF defines with BT.2020 weights.
_Y709 = rgb_to_xyz(_PRIMARIES[PRI_BT709])[1].astype(np.float32)


def pq_eotf(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: non-linear PQ ``signal`` in [0, 1] -> display light in cd/m^2
    (float64, same shape, 0 .. 10000)."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = np.power(np.clip(signal, 0.0, 1.0), 1 / m2)
    return 10000.0 * np.power(np.maximum(p - c1, 0.0) / (c2 - c3 * p), 1 / m1)


def pq_inverse_eotf(nits: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 inverse EOTF: display light in cd/m^2 -> PQ signal in [0, 1]."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = np.power(np.clip(np.asarray(nits, np.float64) / 10000.0, 0.0, 1.0), m1)
    return np.power((c1 + c2 * y) / (1 + c3 * y), m2)


_HLG_A = 0.17883277
_HLG_B = 1 - 4 * _HLG_A
_HLG_C = 0.5 - _HLG_A * np.log(4 * _HLG_A)


def hlg_inverse_oetf(signal: np.ndarray) -> np.ndarray:
    """BT.2100 HLG inverse OETF: non-linear ``signal`` in [0, 1] -> normalised scene light
    E in [0, 1] (float64, same shape)."""
    e = np.clip(np.asarray(signal, np.float64), 0.0, 1.0)
    with np.errstate(over="ignore"):  # the branch not taken may overflow
        high = (np.exp((e - _HLG_C) / _HLG_A) + _HLG_B) / 12
    return np.where(e <= 0.5, e * e / 3, high)


def hlg_oetf(scene: np.ndarray) -> np.ndarray:
    """BT.2100 HLG OETF: normalised scene light in [0, 1] -> signal in [0, 1]."""
    e = np.clip(np.asarray(scene, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        high = _HLG_A * np.log(np.maximum(12 * e - _HLG_B, 1e-12)) + _HLG_C
    return np.where(e <= 1 / 12, np.sqrt(3 * e), high)


def _decode_tables() -> dict[str, np.ndarray]:
    """``float32 (65536,)`` per kind: 16-bit R'G'B' code -> linear light per channel.
    PQ: display light relative to reference white (1.0 = 203 cd/m^2); HLG: scene light E
    in [0, 1] (its OOTF mixes the channels, so it is applied per pixel later); SDR: the
    BT.1886 EOTF with black at 0 (display light, 1.0 = white), the inverse of step 5."""
    signal = np.arange(65536, dtype=np.float64) / 65535
    return {"pq": (pq_eotf(signal) / REFERENCE_WHITE).astype(np.float32),
            "hlg": hlg_inverse_oetf(signal).astype(np.float32),
            "sdr": np.power(signal, 2.4).astype(np.float32)}


_DECODE = _decode_tables()
# BT.1886 EOTF with black at 0 is L = V**2.4, so V = L**(1/2.4); indexed by
# floor(sqrt(L) * (N - 1)) so that the steep start of the curve gets enough entries; entry
# i holds the middle of its interval (i + 0.5), the last one SDR white.
_ENCODE = np.round(255 * (np.minimum(np.arange(_ENCODE_STEPS) + 0.5, _ENCODE_STEPS - 1)
                          / (_ENCODE_STEPS - 1)) ** (2 / 2.4)).astype(np.uint8)


def rolloff(peak: np.ndarray, knee: float = KNEE, top: float = PEAK / REFERENCE_WHITE) -> np.ndarray:
    """Highlight roll-off of linear levels (relative to SDR white; float32 array, any shape).

    Identity up to ``knee``; above, an extended Reinhard curve ``h(u) = u (1 + u / U^2) /
    (1 + u)`` of ``u = (x - knee) / (1 - knee)`` with slope 1 at the knee (no visible
    edge), monotonic, reaching exactly 1.0 at ``top`` (``U`` = ``top`` in ``u`` units).
    """
    peak = np.asarray(peak, np.float32)
    big_u = (top - knee) / (1 - knee)
    u = np.maximum(peak - np.float32(knee), np.float32(0.0))
    u *= np.float32(1 / (1 - knee))
    h = u / np.float32(big_u * big_u)
    h += np.float32(1.0)
    h *= u
    u += np.float32(1.0)
    h /= u  # h(u); 0 at and below the knee, where min(peak, knee) = peak
    h *= np.float32(1 - knee)
    h += np.minimum(peak, np.float32(knee))
    return h


def hdr_kind(frame) -> str | None:
    """``"pq"`` / ``"hlg"`` when ``frame``'s transfer is an HDR one this module maps, else None."""
    return HDR_KINDS.get(int(frame.color_trc))


def wide_gamut(frame) -> int | None:
    """The primaries of an SDR ``frame`` that are wider than BT.709 (BT.2020, Display P3:
    FFmpeg codes), else None. swscale converts matrix and range only, so their colours came
    out desaturated (a BT.2020 SDR copy of a real face clip: 6.7 grey levels off on the face,
    P3: 3.8); BT.709, unspecified and other primaries keep swscale's exact bytes."""
    primaries = int(frame.color_primaries)
    return primaries if primaries in _PRIMARIES and primaries != PRI_BT709 and not hdr_kind(frame) else None


def sdr_options(frame) -> dict:
    """Extra ``reformat`` arguments for an SDR ``frame``: ``src_colorspace`` BT.709 for an
    untagged HD YUV frame (what players assume; swscale would take BT.601), else none, so
    every other frame is converted by exactly the same call as before."""
    if int(frame.colorspace) != SPC_UNSPECIFIED:
        return {}
    fmt = frame.format
    # yuvj* is no sign of JFIF: FFmpeg's H.264/HEVC decoders give it for any full-range
    # stream, and its MJPEG decoder tags JFIF's fixed BT.601 (colorspace 5) anyway.
    if fmt.is_rgb or len(fmt.components) < 3 or fmt.name.startswith("xyz"):
        return {}  # no YUV matrix at all (RGB, grey, palette, XYZ)
    if frame.height > SD_HEIGHT or frame.width >= HD_WIDTH:
        return {"src_colorspace": "ITU709"}
    return {}


# AVColorSpace codes (ITU-T H.273 MatrixCoefficients) that FFmpeg 8's swscale refuses to
# convert (EOPNOTSUPP), by name for the error a scan reports instead of "OSError: [Errno 95]".
_MATRIX_NAMES = {8: "YCgCo", 10: "BT.2020 constant luminance", 11: "SMPTE ST 2085 (Y'D'zD'x)",
                 12: "chromaticity-derived non-constant luminance",
                 13: "chromaticity-derived constant luminance", 14: "ICtCp (BT.2100)", 15: "IPT-C2",
                 16: "YCgCo-R (even)", 17: "YCgCo-R (odd)"}


def unconvertible(frame) -> str:
    """Why ``frame`` cannot be read as RGB, after FFmpeg's swscale refused its colours: the
    colour matrix (or, if that is one it converts, the other tags) named, so the row says what
    the file holds rather than an errno."""
    code = int(frame.colorspace)
    what = (f"colour matrix {_MATRIX_NAMES[code]} (code {code})" if code in _MATRIX_NAMES else
            f"colours (matrix {code}, transfer {int(frame.color_trc)}, primaries "
            f"{int(frame.color_primaries)}, range {int(frame.color_range)})")
    return (f"{frame.format.name} picture with {what}: FFmpeg's swscale cannot convert it to RGB, "
            "so its faces cannot be judged")


@functools.lru_cache(maxsize=None)
def _gray_expansion(bits: int) -> np.ndarray:
    """Limited-range grey code -> full-range code at ``bits`` (BT.601/709 levels scaled by
    depth: black 16 << (bits - 8), white 235 << (bits - 8)), rounded and clipped."""
    top = (1 << bits) - 1
    black, span = 16 << (bits - 8), 219 << (bits - 8)
    full = np.round((np.arange(1 << bits) - black) * (top / span))
    return np.clip(full, 0, top).astype(np.uint8 if bits <= 8 else np.uint16)


def gray_full_range(frame):
    """A grey ``frame`` tagged limited range as a new full-range frame of the same format
    and colour tags; any other frame as it is. swscale cannot do it (see the module
    docstring), so the codes go through one lookup table."""
    fmt = frame.format
    if int(frame.color_range) != RANGE_MPEG or not fmt.name.startswith("gray") or fmt.name.startswith("grayf"):
        return frame  # float grey has no code range to expand
    bits = fmt.components[0].bits
    dtype = np.dtype(np.uint8) if bits <= 8 else np.dtype(">u2" if fmt.name.endswith("be") else "<u2")
    out = av.VideoFrame(frame.width, frame.height, fmt.name)
    src, dst = (np.frombuffer(p, dtype).reshape(p.height, -1)[:, :frame.width]
                for p in (frame.planes[0], out.planes[0]))
    dst[...] = _gray_expansion(bits).take(src, mode="clip")
    out.color_range = RANGE_JPEG
    out.colorspace, out.color_trc, out.color_primaries = frame.colorspace, frame.color_trc, frame.color_primaries
    return out


def to_rgb(frame, width: int, height: int) -> tuple[np.ndarray, str | None]:
    """``frame`` as SDR BT.709 RGB ``uint8 (height, width, 3)`` and the HDR transfer it was
    tone-mapped from (``"pq"`` / ``"hlg"``) or None. Resampled by swscale: AREA when
    shrinking, BICUBIC when growing; SDR is converted by the same swscale call as ever
    (plus :func:`sdr_options`), so SD and tagged pictures keep their exact bytes."""
    same = (width, height) == (frame.width, frame.height)
    interpolation = None if same else "AREA" if width * height < frame.width * frame.height else "BICUBIC"
    hdr = hdr_kind(frame)
    if hdr:
        return tone_map(frame, width, height, interpolation), hdr
    primaries = wide_gamut(frame)
    if primaries:  # BT.1886 display light, primaries to BT.709 (BT.2087), BT.1886 again
        return to_sdr(_rgb16(frame, width, height, interpolation, sdr_options(frame)), "sdr", primaries), None
    if same:
        return frame.to_ndarray(format="rgb24", **sdr_options(frame)), None
    return frame.reformat(width=width, height=height, format="rgb24", interpolation=interpolation,
                          **sdr_options(frame)).to_ndarray(), None


def downscaled(frame, image: np.ndarray, hdr: str | None, width: int, height: int) -> np.ndarray:
    """RGB ``uint8 (height, width, 3)`` copy for the face detector (swscale AREA): from the
    YUV ``frame`` for SDR, as ever; from the converted ``image`` for HDR and wide-gamut SDR
    (swscale alone would leave the primaries unconverted; mapping twice would cost twice)."""
    if hdr or wide_gamut(frame):
        frame, kw = av.VideoFrame.from_ndarray(image, format="rgb24"), {}
    else:
        kw = sdr_options(frame)
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA", **kw).to_ndarray()


def _hdr_colorspace(frame) -> dict:
    """HDR without a matrix tag is BT.2020 non-constant luminance in practice (HDR10, HLG)."""
    return {"src_colorspace": "BT2020"} if int(frame.colorspace) == SPC_UNSPECIFIED else {}


def tone_map(frame, width: int, height: int, interpolation: str | None) -> np.ndarray:
    """HDR ``frame`` (PQ or HLG, any YUV/RGB format and depth) -> SDR BT.709 RGB
    ``uint8 (height, width, 3)``.

    swscale resamples to ``width`` x ``height`` (``interpolation``; None when the size is
    kept) while converting to planar 16-bit R'G'B', so a frame shrunk for size never exists
    at full size in RGB; :func:`to_sdr` then maps strips of rows.
    """
    primaries = int(frame.color_primaries)
    rgb = _rgb16(frame, width, height, interpolation, _hdr_colorspace(frame))
    return to_sdr(rgb, hdr_kind(frame), primaries if primaries in _PRIMARIES else PRI_BT2020)


def _rgb16(frame, width: int, height: int, interpolation: str | None, options: dict) -> tuple:
    """(R, G, B) ``uint16 (height, width)`` planes of ``frame`` by swscale (matrix, range,
    resampling; ``options`` for the source matrix), read in place."""
    kw = {} if interpolation is None else {"interpolation": interpolation}
    if (width, height) != (frame.width, frame.height):
        kw.update(width=width, height=height)
    gbr = frame.reformat(format="gbrp16le", **kw, **options)
    # Planar, read in place (no interleaving copy): gbrp's planes are G, B, R.
    g, b, r = (np.frombuffer(p, np.uint16).reshape(p.height, -1)[:, :p.width] for p in gbr.planes)
    return r, g, b


def to_sdr(rgb, kind: str, primaries: int = PRI_BT2020) -> np.ndarray:
    """Non-linear R'G'B' planes ``rgb`` = (R, G, B), each ``uint16 (H, W)`` (full range
    0..65535; transfer ``kind`` ``"pq"`` / ``"hlg"``, or ``"sdr"``: BT.1886, no roll-off;
    ``primaries`` an FFmpeg code) -> SDR BT.709 ``uint8 (H, W, 3)``."""
    h, w = rgb[0].shape
    out = np.empty((h, w, 3), np.uint8)
    gamut = None if primaries == PRI_BT709 else gamut_matrix(primaries).astype(np.float32)
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    for y in range(0, h, rows):
        _strip([c[y:y + rows] for c in rgb], kind, gamut, out[y:y + rows])
    return out


def _strip(code: list, kind: str, gamut: np.ndarray | None, out: np.ndarray) -> None:
    """One strip of :func:`to_sdr`: three ``uint16 (r, W)`` planes into ``out``, ``uint8
    (r, W, 3)``. Planar float32 throughout, gathers by ``np.take`` (16-bit codes and
    clipped levels are always in range): numpy is several times slower on interleaved
    pixels (a reduction over an axis of 3 is very slow) and with fancy indexing."""
    x = np.empty((3, *code[0].shape), np.float32)
    for i in range(3):  # linear light per channel (step 1; PQ: also step 2)
        np.take(_DECODE[kind], code[i], out=x[i], mode="clip")
    if gamut is not None:  # step 3: to BT.709 primaries, linear; negative = out of gamut
        x = np.stack([gamut[i, 0] * x[0] + gamut[i, 1] * x[1] + gamut[i, 2] * x[2] for i in range(3)])
    gain = np.float32(1.0)
    if kind == "hlg":
        # BT.2100 HLG OOTF: F_D = L_W * Y_S**(gamma - 1) * E with L_W = 1000 cd/m^2, then
        # relative to reference white (step 2); one factor per pixel.
        y = np.maximum(_Y709[0] * x[0] + _Y709[1] * x[1] + _Y709[2] * x[2], 0.0)
        gain = np.power(y, np.float32(HLG_GAMMA - 1), out=y)
        gain *= np.float32(PEAK / REFERENCE_WHITE)
    # Step 4: one gain for all three channels keeps their ratios (hue, saturation). The
    # table's scale (sqrt(level) * N) is folded in: sqrt(level * N**2) = sqrt(level) * N.
    full = np.float32((_ENCODE_STEPS - 1) ** 2)
    if kind == "sdr":  # already SDR: out-of-gamut and over-white values are only clipped
        roll = full
    else:
        # max(R, G, B) >= Y >= 0: the gamut matrix keeps luminance, so no pixel is all negative.
        peak = np.maximum(np.maximum(x[0], x[1]), x[2])
        peak *= gain
        roll = rolloff(peak)
        roll /= np.maximum(peak, np.float32(1e-6))
        roll *= gain * full
    level = np.empty(x[0].shape, np.uint8)
    for i in range(3):
        c = x[i]
        c *= roll
        np.clip(c, np.float32(0.0), full, out=c)
        np.sqrt(c, out=c)  # step 5: BT.1886 inverse EOTF through the sqrt-indexed table
        np.take(_ENCODE, c.astype(np.uint16), out=level, mode="clip")
        out[..., i] = level
