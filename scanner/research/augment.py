"""Image degradations for training robustness and for ``dfscan eval --perturb``.

All functions take and return RGB ``uint8 (H, W, 3)`` images; randomness comes
from a ``numpy.random.Generator`` so runs are reproducible with a seed.

``--perturb`` specs are ``name:value`` items separated by commas, applied in the
order given: ``jpeg:Q`` (JPEG quality), ``blur:SIGMA`` (Gaussian, pixels),
``downscale:F`` (shrink by F then back, area/linear), ``noise:STD`` (Gaussian,
0..255 units), ``h264:CRF`` (one-frame H.264 round trip through PyAV/libx264).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from engines.errors import DfscanError


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DfscanError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), float(sigma)) if sigma > 0 else img


def magnified(img: np.ndarray, factor: float, compress: Callable | None = None, cubic: bool = False) -> np.ndarray:
    """``img`` shrunk to ``factor`` (area), through ``compress`` at that size if given, then
    magnified back to its size (bilinear, or bicubic with ``cubic``)."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    if compress is not None:
        small = compress(small)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR)


def downscale(img: np.ndarray, factor: float) -> np.ndarray:
    return magnified(img, factor)


def noise(img: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img.astype(np.float32) + rng.normal(0, std, img.shape), 0, 255).astype(np.uint8)


def h264(img: np.ndarray, crf: float) -> np.ndarray:
    """Encode ``img`` as a one-frame H.264 stream (libx264, yuv420p, CRF) in memory and decode it."""
    import io

    import av

    h, w = img.shape[:2]
    pad = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # yuv420p needs even sides
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        st = out.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = pad.shape[1], pad.shape[0], "yuv420p"
        # Two slice threads, not libx264's default (one per CPU the process may use): the slices
        # change the pixels, so training and `--perturb h264` differed with the machine's cores.
        # 2 is what the 2-CPU machines that trained the shipped weights used.
        st.options = {"crf": str(int(crf)), "preset": "ultrafast", "tune": "zerolatency", "threads": "2"}
        for pkt in st.encode(av.VideoFrame.from_ndarray(pad, format="rgb24")):
            out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    buf.seek(0)
    with av.open(buf, "r", format="h264") as inp:
        frame = next(inp.decode(video=0)).to_ndarray(format="rgb24")
    return np.ascontiguousarray(frame[:h, :w])


def colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast/saturation and per-channel shifts, as camera and grading differ."""
    x = img.astype(np.float32)
    grey = x.mean(-1, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.7, 1.3)  # saturation
    x = (x - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-20, 20)  # contrast, brightness
    x = x + rng.uniform(-8, 8, 3)
    return np.clip(x, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Perturb:
    name: str
    value: float

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.name == "noise":
            return noise(img, self.value, rng)
        return _FIXED[self.name](img, self.value)


_FIXED: dict[str, Callable] = {"jpeg": jpeg, "blur": blur, "downscale": downscale, "h264": h264}
_RANGES = {"jpeg": (1, 100), "blur": (0, 20), "downscale": (0.01, 1), "noise": (0, 128), "h264": (0, 51)}


def parse_perturb(spec: str) -> list[Perturb]:
    """``"jpeg:40,blur:1.5"`` -> perturbations; a specific error for any bad item."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, val = item.partition(":")
        if name not in _RANGES:
            raise DfscanError(f"unknown perturbation {name!r} in {spec!r}; known: {', '.join(_RANGES)}")
        try:
            v = float(val)
        except ValueError:
            raise DfscanError(f"perturbation {item!r}: value {val!r} is not a number") from None
        lo, hi = _RANGES[name]
        if not lo <= v <= hi:
            raise DfscanError(f"perturbation {item!r}: value outside [{lo}, {hi}]")
        if name in ("jpeg", "h264") and v != int(v):  # applied as int(v): 40.5 ran (and read) as 40
            raise DfscanError(f"perturbation {item!r}: {name} takes a whole number")
        out.append(Perturb(name, v))
    if not out:  # "," ran the clean scan, reported as perturbed
        raise DfscanError(f"no perturbation in {spec!r}; e.g. jpeg:40,blur:1.5")
    return out


def apply_all(img: np.ndarray, perturbs: list[Perturb], rng: np.random.Generator) -> np.ndarray:
    for p in perturbs:
        img = p(img, rng)
    return img


def low_res_source(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A face that was small in a compressed video: shrunk (to 25-60 %), compressed at that size
    (JPEG 30-90, or H.264 CRF 23-38), then magnified back as alignment does (bilinear or bicubic),
    so its compression blocks and ringing are magnified too."""
    f = rng.uniform(0.25, 0.6)
    codec = h264 if rng.random() < 0.3 else jpeg
    q = rng.integers(23, 39) if codec is h264 else rng.integers(30, 91)
    return magnified(img, f, lambda small: codec(small, q), cubic=rng.random() >= 0.5)


def train_augment(img: np.ndarray, rng: np.random.Generator, p_h264: float = 0.15,
                  p_low_res: float = 0.0) -> np.ndarray:
    """Random real-world degradation chain for training (each step with its own probability);
    ``p_low_res``: share of images ending as :func:`low_res_source` (drawn only when > 0, so
    recipes without it keep their random stream)."""
    if rng.random() < 0.5:
        img = colour(img, rng)
    if rng.random() < 0.3:
        img = downscale(img, rng.uniform(0.4, 0.9))
    if rng.random() < 0.2:
        img = blur(img, rng.uniform(0.3, 1.5))
    if rng.random() < 0.2:
        img = noise(img, rng.uniform(1, 8), rng)
    r = rng.random()
    if r < p_h264:
        img = h264(img, rng.integers(18, 40))
    elif r < 0.65:
        img = jpeg(img, rng.integers(30, 96))
    if p_low_res > 0 and rng.random() < p_low_res:
        img = low_res_source(img, rng)
    return img
