"""`dfscan synth`: labelled fakes made from real faces alone.

Follows the idea of Self-Blended Images (Shiohara & Yamasaki, "Detecting
Deepfakes with Self-Blended Images", CVPR 2022) and CADDM's Multi-scale Facial
Swap (Dong et al., "Implicit Identity Leakage", CVPR 2023): a face is blended
with a slightly altered copy of itself (colour, scale and position jitter)
inside a soft mask derived from its landmarks, which reproduces the blending
boundary and colour/geometry mismatch of face swaps without a second identity.

Masks: with only MTCNN's 5 points (eyes, nose, mouth corners), the face region
is approximated by the convex hull of those points plus points placed at
brows, temples, jaw and chin in units of the inter-ocular distance. ``global``
blends the whole hull; ``partial`` blends the hull inside a random window of
0.35-0.65 of the face's size (CADDM's multi-scale local swaps). The mask is
grown or shrunk by a few pixels and Gaussian-blurred, and scaled by a blend
ratio drawn from {0.25, 0.5, 0.75, 1, 1, 1} as in SBI.

Output: ``real/`` and ``fake/`` face chips (square PNGs centred on the face
with context) and ``manifest.csv`` with ``path,label,group,subset,landmarks,
box,blend``: ``landmarks`` are the chip's 5 points (so later steps align
without detection), ``box`` is ``x0 y0 x1 y1`` (chip pixels, exclusive end)
bounding every pixel the blend changed (empty for real chips), ``group`` is
the source's person as ``dfscan train`` splits them (:func:`scanner.research.data.identity`,
with the same ``--identity``: ``name``, a MEAD actor, a GRID speaker, else the file; ``folder``,
the folder holding the source, for footage laid out ``data/alice/*.mp4``), so a real chip and its fake, and one person's
clips, never straddle a split (by file, an actor's 8 MEAD clips fell on both sides), and
``subset`` is ``sbi-global``/``sbi-partial`` for both chips of a pair.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.errors import DfscanError

from ..decode import VIDEO_EXTENSIONS
from .labelled import IMAGE_EXTENSIONS, format_landmarks

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class BlendParams:
    """Randomness of :func:`self_blend`; the defaults are ``dfscan synth``'s.

    Attributes:
        scale, shift: source copy scale range and shift (fraction of the side).
        gain: per-channel colour gain magnitude range (sign random, never a no-op).
        offset: colour offset range (0..255 units).
        freq: probability of a frequency mismatch (source blurred or sharpened).
        ratios: discrete blend ratios (SBI's), or None for uniform in ``ratio_range``.
        hull_scale: range of a random scaling of the face hull about its centre.
    """

    scale: tuple[float, float] = (0.93, 1.07)
    shift: float = 0.03
    gain: tuple[float, float] = (0.03, 0.10)
    offset: float = 8.0
    freq: float = 0.0
    ratios: tuple[float, ...] | None = BLEND_RATIOS
    ratio_range: tuple[float, float] = (0.25, 1.0)
    hull_scale: tuple[float, float] = (1.0, 1.0)


# Wider jitter for training (``dfscan train``): colour, frequency, scale and mask size.
TRAIN_BLEND = BlendParams(scale=(0.9, 1.1), shift=0.04, gain=(0.02, 0.15), offset=12.0, freq=0.5,
                          ratios=None, ratio_range=(0.3, 1.0), hull_scale=(0.85, 1.15))


def face_outline(lm: np.ndarray) -> np.ndarray:
    """Convex hull ``int32 (P, 2)`` of a face region from 5 landmarks ``(5, 2)`` (x, y)."""
    lm = np.asarray(lm, np.float64)
    eyes, mouth = lm[:2].mean(0), lm[3:5].mean(0)
    d = max(np.linalg.norm(lm[1] - lm[0]), 1.0)
    r = (lm[1] - lm[0]) / d  # towards the image-right eye
    up = eyes - mouth
    up = up / max(np.linalg.norm(up), 1e-6)
    pts = [eyes + 0.45 * d * up + s * 0.6 * d * r for s in (-1, 1)]  # brows
    pts += [eyes + s * 0.8 * d * r for s in (-1, 1)]  # temples
    pts += [mouth + s * 0.7 * d * r for s in (-1, 1)]  # jaw
    pts += [mouth - 0.55 * d * up + s * 0.3 * d * r for s in (-1, 1)] + [mouth - 0.65 * d * up]  # chin
    hull = cv2.convexHull(np.vstack([lm, np.array(pts)]).astype(np.float32))
    return np.round(hull.reshape(-1, 2)).astype(np.int32)


def blend_mask(shape: tuple[int, int], lm: np.ndarray, mode: str, rng: np.random.Generator,
               hull_scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Soft blend mask ``float32 (H, W)`` in [0, 1] (before the blend ratio)."""
    h, w = shape
    hull = face_outline(lm)
    if hull_scale != (1.0, 1.0):  # mask size jitter (no draw at the defaults: synth output unchanged)
        c = hull.mean(0)
        hull = np.round((hull - c) * rng.uniform(*hull_scale) + c).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    if mode == "partial":
        x0, y0 = hull.min(0)
        x1, y1 = hull.max(0)
        for _ in range(20):  # a window that cuts a real part of the face
            ww, wh = (int((x1 - x0) * rng.uniform(0.35, 0.65)), int((y1 - y0) * rng.uniform(0.35, 0.65)))
            wx, wy = rng.integers(x0, max(x0 + 1, x1 - ww)), rng.integers(y0, max(y0 + 1, y1 - wh))
            win = np.zeros_like(mask)
            win[wy:wy + wh, wx:wx + ww] = 1
            if (win & mask).sum() > 0.1 * mask.sum():
                mask = win & mask
                break
    k = int(rng.integers(1, max(2, min(h, w) // 40)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    mask = cv2.dilate(mask, kernel) if rng.random() < 0.5 else cv2.erode(mask, kernel)
    sigma = rng.uniform(0.01, 0.03) * min(h, w)
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma), 0.0, 1.0)


def jitter_source(img: np.ndarray, centre: np.ndarray, rng: np.random.Generator,
                  p: BlendParams = BlendParams()) -> np.ndarray:
    """The altered copy: colour gain/offset, scale about the face centre, shift, and
    (with probability ``p.freq``) a blur or sharpening, i.e. a frequency mismatch."""
    h, w = img.shape[:2]
    s = rng.uniform(*p.scale)
    shift = rng.uniform(-p.shift, p.shift, 2) * np.array([w, h])
    m = np.array([[s, 0, (1 - s) * centre[0] + shift[0]], [0, s, (1 - s) * centre[1] + shift[1]]])
    src = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    sign = rng.choice([-1.0, 1.0], 3)
    gain = 1.0 + sign * rng.uniform(*p.gain, 3)  # never a no-op: at least gain[0] per channel
    offset = rng.uniform(-p.offset, p.offset, 3)
    out = src.astype(np.float32) * gain + offset
    if p.freq and rng.random() < p.freq:
        blurred = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
        amount = rng.uniform(-1.0, 0.8)  # < 0: sharpen (unsharp mask), > 0: blur
        out = out + amount * (blurred - out) if amount > 0 else out + (-amount) * (out - blurred)
    return np.clip(out, 0, 255)


def self_blend(img: np.ndarray, lm: np.ndarray, mode: str, rng: np.random.Generator,
               params: BlendParams = BlendParams()) -> tuple[np.ndarray, tuple[int, int, int, int], float]:
    """Self-blended fake of ``img`` (RGB ``uint8 (H, W, 3)``) with face landmarks ``lm``.

    Returns the fake ``uint8 (H, W, 3)``, the tight box ``(x0, y0, x1, y1)``
    (exclusive end) of the pixels that differ from ``img``, and the blend ratio.
    Pixels outside the box are exactly ``img``'s.
    """
    if mode not in ("global", "partial"):
        raise ValueError(f"blend mode {mode!r} is not global/partial")
    mask = blend_mask(img.shape[:2], lm, mode, rng, params.hull_scale)
    ratio = float(rng.choice(params.ratios)) if params.ratios else float(rng.uniform(*params.ratio_range))
    m = mask * ratio
    m[m < 1 / 255] = 0.0  # the blur's far tail changes nothing visible; cut it
    if not m.any():  # else np.nonzero below is empty and .min() a bare ValueError
        raise DfscanError("blend mask is empty (face too small or outside the chip)")
    m = m[..., None]
    src = jitter_source(img, np.asarray(lm, np.float64).mean(0), rng, params)
    fake = np.where(m > 0, np.round(src * m + img.astype(np.float32) * (1 - m)), img).astype(np.uint8)
    # The box bounds the pixels that actually changed (a subset of the mask's support).
    ys, xs = np.nonzero(np.any(fake != img, axis=-1) if np.any(fake != img) else m[..., 0] > 0)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return fake, box, ratio


def face_chip(image: np.ndarray, box: np.ndarray, lm: np.ndarray, size: int, context: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Square chip ``(size, size, 3)`` centred on the face box, side = ``context`` x the
    box's longer side; landmarks mapped into chip pixels ``(5, 2)``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = context * max(box[2] - box[0], box[3] - box[1])
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float64)
    chip = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
    lm_chip = np.asarray(lm, np.float64) @ m[:, :2].T + m[:, 2]
    return chip, lm_chip.astype(np.float32)


@dataclass
class SynthConfig:
    frames: int = 8
    size: int = 256
    context: float = 1.8
    mode: str = "mixed"  # global | partial | mixed
    seed: int = 0
    max_faces: int = 1
    device: str = "cpu"
    identity: str = "name"  # how files map to people: scanner.research.data.identity's modes


def _sources(inputs: list[str]) -> list[Path]:
    out = []
    for s in inputs:
        p = Path(s)
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        out += [q for q in files if q.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS]
    if not out:
        raise DfscanError(f"no images or videos in {inputs}")
    return out


def _faces(path: Path, cfg: SynthConfig, detector) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(frame index, frame, box, landmarks) of the largest faces of sampled frames."""
    from .features import _downscale, read_rgb
    from ..decode import Frame, sample_frames

    if path.suffix.lower() in IMAGE_EXTENSIONS:
        img = read_rgb(path)
        small, scale = _downscale(img, 960)
        frames = [Frame(0, 0.0, img, small, scale)]
    else:
        frames = list(sample_frames(path, cfg.frames, det_max_side=960))
    out = []
    for fr, faces in zip(frames, detector.detect(frames)):
        for k in range(min(len(faces), cfg.max_faces)):
            out.append((fr.index, fr.image, faces.boxes[k], faces.landmarks[k]))
    return out


MANIFEST_FIELDS = ["path", "label", "group", "subset", "landmarks", "box", "blend"]


def synthesize(inputs: list[str], out_dir: str | Path, cfg: SynthConfig = SynthConfig(), progress=lambda x: x) -> dict:
    """Write real/ and fake/ chips + manifest.csv for every detected face; returns counts.

    The manifest gets each pair's rows once both chips are written, and is flushed: a run
    interrupted (Ctrl-C, a kill, a full disk) keeps a manifest of every pair it wrote. It was
    written only at the end, so such a run left chips without one, or (into a used folder)
    the previous run's manifest describing chips since overwritten."""
    from ..faces import FaceDetector

    out = Path(out_dir)
    sources = _sources(inputs)
    (out / "real").mkdir(parents=True, exist_ok=True)
    (out / "fake").mkdir(parents=True, exist_ok=True)
    detector = FaceDetector(device=cfg.device, min_face=40, max_faces=cfg.max_faces)
    used, skipped, n = set(), [], 0  # sources that gave a pair
    # UTF-8 as read_manifest reads it (not the locale's); a non-UTF-8 file name keeps its bytes
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        f.flush()
        for src in progress(sources):
            try:
                faces = _faces(src, cfg, detector)
            except DfscanError as e:
                skipped.append((str(src), str(e)))
                continue
            if not faces:
                skipped.append((str(src), "no face found"))
            for fidx, image, box, lm in faces:
                rows = _pair(out, src, fidx, image, box, lm, n, cfg, skipped)
                if rows:
                    w.writerows(rows)
                    f.flush()
                    used.add(str(src))
                    n += 1
    return {"faces": n, "rows": 2 * n, "sources": len(used), "skipped": skipped}


def _pair(out: Path, src: Path, fidx: int, image, box, lm, n: int, cfg: SynthConfig, skipped: list) -> list[dict]:
    """Write the n-th real chip and its self-blended fake; their two manifest rows, or none
    (the face is skipped with its reason)."""
    rng = np.random.default_rng([cfg.seed, n])
    mode = cfg.mode if cfg.mode != "mixed" else ("global", "partial")[n % 2]
    chip, lm_chip = face_chip(image, box, lm, cfg.size, cfg.context)
    try:
        fake, fbox, ratio = _blend(chip, lm_chip, mode, rng)
    except DfscanError as e:  # a tiny face at --size 16: no pair rather than a traceback
        skipped.append((f"{src} frame {fidx}", str(e)))
        return []
    stem = f"{src.stem}_f{fidx:05d}_{n:05d}"
    _write(out / "real" / f"{stem}.png", chip)
    _write(out / "fake" / f"{stem}_{mode}.png", fake)
    # A real chip and its fake share group (never split apart) and subset (the
    # blend mode), so `eval` reports each mode with its own reals.
    from .data import identity

    base = {"group": identity(src, cfg.identity), "subset": f"sbi-{mode}", "landmarks": format_landmarks(lm_chip)}
    return [{"path": f"real/{stem}.png", "label": "real", **base, "box": "", "blend": ""},
            {"path": f"fake/{stem}_{mode}.png", "label": "fake", **base,
             "box": " ".join(map(str, fbox)), "blend": f"{mode}:{ratio:g}"}]


def _blend(chip: np.ndarray, lm: np.ndarray, mode: str, rng: np.random.Generator):
    """:func:`self_blend` for synth, refusing a "fake" with no pixel changed: written, it
    would be a copy of its real chip labelled fake (possible when a tiny mask blurs to
    weights that round away)."""
    fake, box, ratio = self_blend(chip, lm, mode, rng)
    if np.array_equal(fake, chip):
        raise DfscanError("the blend changed no pixel (face too small)")
    return fake, box, ratio


def _write(path: Path, rgb: np.ndarray) -> None:
    """Encoded by cv2, written by Python: cv2.imwrite crashed the process (SIGSEGV) on a
    path holding a file name that is not UTF-8 (a Latin-1 source name)."""
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    try:
        if not ok:
            raise OSError("encoding failed")
        path.write_bytes(buf.tobytes())
    except OSError as e:
        raise DfscanError(f"could not write {path}: {e}") from e


def run_synth(args) -> int:
    """CLI handler of ``dfscan synth``."""
    # --size, --frames, --max-faces and --context are checked as they are parsed (commands.py)
    cfg = SynthConfig(frames=args.frames, size=args.size, context=args.context, mode=args.mode,
                      seed=args.seed, max_faces=args.max_faces, device=args.device,
                      identity=args.identity)
    from ..output import writable

    writable(Path(args.out) / "manifest.csv")  # a file as --out was a traceback at the first write
    res = synthesize(args.inputs, args.out, cfg)
    print(f"{res['faces']} faces from {res['sources']} files -> {res['rows']} chips "
          f"({res['faces']} real, {res['faces']} self-blended) in {args.out}/ (manifest.csv)")
    for p, why in res["skipped"]:
        print(f"skipped {p}: {why}")
    return 0 if res["faces"] else 1
