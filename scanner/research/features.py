"""Face crops and frozen embeddings of labelled sets, cached on disk.

Faces of videos come from the scan pipeline (``iter_face_crops``:
PyAV sampling, MTCNN, landmark alignment to the model's template), so a probe
sees at training time exactly the crops ``dfscan scan`` will feed it; faces of
images go through the same detector and aligner. Images whose manifest row carries
landmarks (``dfscan synth`` output) are aligned without detection.

Embeddings are cached per (model, crop settings, crop code, file content) as ``.npz``
under the cache folder: a second `probe fit` with other classifier settings,
or `separability` on the same set, does not touch the backbone again.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from engines.files import replacing
from engines.registry import file_hash
from engines.spec import InputSpec

from .labelled import Item

if TYPE_CHECKING:
    from ..config import ScanConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropConfig:
    """How faces are taken from each file (largest ``max_faces`` per frame)."""

    frames: int = 32
    max_faces: int = 1
    min_face: int = 40
    max_side: int = 960
    device: str = "cpu"
    face_prob: float = 0.9  # MTCNN probability a face needs (scan's face_prob)


def read_rgb(path: Path) -> np.ndarray:
    """Image file -> RGB ``uint8 (H, W, 3)`` as displayed (EXIF orientation applied, so landmarks
    are in displayed pixels); DfscanError when it cannot be decoded."""
    from PIL import Image, ImageOps

    from engines.errors import DfscanError

    try:
        with Image.open(path) as im:
            # A phone photo stored sideways with an orientation tag was read sideways: its face
            # was not found, or scored on its side.
            im = ImageOps.exif_transpose(im)
            return np.array(im.convert("RGB"))  # writable copy (torch refuses read-only arrays)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        # Callers skip files that raise DfscanError (as they do unreadable videos); PIL's own
        # errors (a truncated or non-image .jpg) ended separability and synth in a traceback.
        raise DfscanError(f"unreadable image: {type(e).__name__}: {e}") from e


class CropSource:
    """Aligned face crops ``float32 (K, 3, S, S)`` RGB [0, 255] per labelled file."""

    def __init__(self, cfg: CropConfig = CropConfig()):
        self.cfg = cfg
        self._detector = None

    def detector(self):
        if self._detector is None:
            from ..faces import FaceDetector

            c = self.cfg
            self._detector = FaceDetector(device=c.device, max_side=c.max_side, min_face=c.min_face,
                                          max_faces=c.max_faces, min_prob=c.face_prob)
        return self._detector

    def crops(self, item: Item, spec: InputSpec) -> tuple[np.ndarray, torch.Tensor]:
        """Frame indices ``int64 (K,)`` and crops of ``item`` (K may be 0: no face)."""
        from ..align import align_faces

        if item.is_image and item.landmarks is not None:
            img = read_rgb(item.path)
            crops, _ = align_faces([img], [0], item.landmarks[None], spec, device=self.cfg.device)
            return np.zeros(1, np.int64), crops
        if not item.is_image:
            return self._video_crops(item, spec)
        frames = self._frames(item)
        faces = self.detector().detect(frames) if frames else []
        idx, lms = [], []
        for k, f in enumerate(faces):
            for lm in f.landmarks[: self.cfg.max_faces]:
                idx.append(k)
                lms.append(lm)
        if not lms:
            return np.zeros(0, np.int64), torch.zeros(0, 3, spec.size, spec.size)
        crops, _ = align_faces([f.image for f in frames], idx, np.stack(lms), spec, device=self.cfg.device)
        return np.array([frames[k].index for k in idx], np.int64), crops

    def _frames(self, item: Item) -> list:
        from ..decode import Frame

        img = read_rgb(item.path)
        small, scale = _downscale(img, self.cfg.max_side)
        return [Frame(0, 0.0, img, small, scale)]

    def _video_crops(self, item: Item, spec: InputSpec) -> tuple[np.ndarray, torch.Tensor]:
        """The scan pipeline's own sampling/detection/alignment (largest faces first)."""
        from ..config import ScanConfig

        c = self.cfg
        scan_cfg = ScanConfig(frames=c.frames, max_faces=c.max_faces, min_face=c.min_face, det_max_side=c.max_side)
        idx, crops, errors = [], [], []
        for _, frame_index, u8 in iter_face_crops([item.path], spec, scan_cfg, c.device, errors):
            idx += [frame_index] * len(u8)
            crops.append(torch.from_numpy(u8).permute(0, 3, 1, 2).float())
        if errors and not crops:  # unreadable: skipped for that reason, never as "no face found" (nor cached so)
            raise errors[0][1]
        if not crops:
            return np.zeros(0, np.int64), torch.zeros(0, 3, spec.size, spec.size)
        return np.array(idx, np.int64), torch.cat(crops)


def _downscale(img: np.ndarray, max_side: int) -> tuple[np.ndarray | None, float]:
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return None, 1.0
    import cv2

    s = max_side / max(h, w)
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), s


@dataclass
class Embedder:
    """A frozen model as ``crops float32 (N,3,S,S) [0,255] -> float32 (N, D)``.

    ``key`` identifies model + weights + input spec (the cache key's model part).
    """

    key: str
    spec: InputSpec
    fn: Callable[[torch.Tensor], torch.Tensor]
    device: str = "cpu"
    batch: int = 32

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor) -> np.ndarray:
        out = [self.fn(crops[i:i + self.batch].to(self.device)).float().cpu()
               for i in range(0, crops.shape[0], self.batch)]
        return torch.cat(out).reshape(crops.shape[0], -1).numpy() if out else np.zeros((0, 0), np.float32)


def backbone_embedder(source: str, weights: str | Path, arch: str | None = None, size: int | None = None,
                      device: str = "cpu", batch: int = 32) -> tuple[Embedder, nn.Module]:
    """Embedder for a backbone file (see :func:`engines.backbones.create_backbone`)."""
    from engines.backbones import create_backbone, normalize

    model, spec = create_backbone(source, weights, arch, size)
    model = model.to(device)
    info = model.info
    key = f"backbone:{info.source}:{info.arch}:{file_hash(weights)}:{json.dumps(spec.to_dict(), sort_keys=True)}"
    return Embedder(key, spec, lambda x: model(normalize(x, spec)), device, batch), model


def penultimate(det: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Features before a detector's final linear layer.

    Uses ``det.embed(x)`` when the detector has one (probe detectors); otherwise
    the input of the last ``nn.Linear`` in module order, caught with a forward
    pre-hook; a detector without any ``nn.Linear`` falls back to its raw output.
    """
    if hasattr(det, "embed"):
        return det.embed
    linears = [m for m in det.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return lambda x: det.primary(det(x)).reshape(x.shape[0], -1)
    caught: list[torch.Tensor] = []
    linears[-1].register_forward_pre_hook(lambda _m, args: caught.append(args[0]))

    def fn(x: torch.Tensor) -> torch.Tensor:
        caught.clear()
        det(x)
        return caught[-1].reshape(x.shape[0], -1)

    return fn


def detector_embedder(name: str, weights: str | Path | None = None, device: str = "cpu",
                      batch: int = 32) -> tuple[Embedder, nn.Module]:
    """Embedder giving a registered detector's penultimate features."""
    from engines.registry import create_detector

    det = create_detector(name, weights, device)
    key = f"detector:{name}:{det.weights_hash}:{json.dumps(det.spec.to_dict(), sort_keys=True)}"
    return Embedder(key, det.spec, penultimate(det), device, batch), det


@dataclass
class FeatureSet:
    """Per-crop embeddings of a labelled set.

    ``X`` float32 (n, D); ``y`` int64 (n,) 1 = fake; ``groups`` object (n,);
    ``item`` int64 (n,) index into ``items``; ``frame`` int64 (n,) frame index.
    ``skipped`` lists (path, reason) of files that gave no crop.
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    item: np.ndarray
    frame: np.ndarray
    items: list
    skipped: list


# The scanner modules that turn a file into aligned crops (decode, colour, detection, alignment).
_CROP_CODE = ("decode", "picture", "colour", "interlace", "edit_list", "leading", "video_index",
              "faces", "mtcnn", "mtcnn_nets", "mtcnn_engine", "region", "orientation", "align",
              "research/features")  # this module reads the images (read_rgb)


@functools.lru_cache(maxsize=1)
def crop_code_hash() -> str:
    """SHA-256 (16 hex digits) of the crop code (:data:`_CROP_CODE`) and facenet-pytorch's version.

    Part of the cache key: crops depend on that code as much as on the settings, and a change
    there (e.g. a sub-pixel fix of the MTCNN crop) kept serving embeddings of the old crops."""
    from engines.cache import package_version

    h = hashlib.sha256(f"facenet-pytorch=={package_version('facenet-pytorch')}\0".encode())
    root = Path(__file__).resolve().parents[1]
    for name in _CROP_CODE:
        h.update(name.encode() + b"\0" + (root / f"{name}.py").read_bytes())
    return h.hexdigest()[:16]


def _cache_path(cache_dir: Path, embedder: Embedder, cfg: CropConfig, item: Item) -> Path:
    lm = "" if item.landmarks is None else item.landmarks.round(2).tobytes().hex()
    crop = {k: v for k, v in asdict(cfg).items() if k != "device"}
    raw = "|".join([embedder.key, json.dumps(crop, sort_keys=True), crop_code_hash(), file_hash(item.path, 32), lm])
    digest = hashlib.sha256(raw.encode()).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.npz"


def embed_items(items: list[Item], embedder: Embedder, source: CropSource, cache_dir: str | Path | None,
                progress: Callable[[Iterable], Iterable] = lambda x: x) -> FeatureSet:
    """Embed every face crop of every item (cached); files that fail are skipped."""
    from engines.errors import DfscanError

    cache = Path(cache_dir) if cache_dir else None
    feats, rows, skipped = [], [], []
    for i, item in enumerate(progress(items)):
        path = _cache_path(cache, embedder, source.cfg, item) if cache else None
        if path is not None and path.is_file():
            with np.load(path) as z:
                x, fr = z["x"], z["frame"]
        else:
            try:
                fr, crops = source.crops(item, embedder.spec)
            except DfscanError as e:  # unreadable video, missing face detector, ...
                skipped.append((str(item.path), str(e)))
                continue
            x = embedder(crops) if len(fr) else np.zeros((0, 0), np.float32)
            if path is not None:  # write-then-rename: a killed run never leaves a torn entry
                with replacing(path) as tmp, open(tmp, "wb") as f:
                    np.savez(f, x=x, frame=fr)
        if len(fr) == 0:
            skipped.append((str(item.path), "no face found"))
            continue
        feats.append(x.astype(np.float32))
        rows += [(item.label, item.group, i, f) for f in fr]
    if not feats:
        raise DfscanError("no face crops in any input file: " + "; ".join(f"{p}: {r}" for p, r in skipped[:5]))
    y, g, it, fr = zip(*rows)
    return FeatureSet(np.concatenate(feats), np.array(y, np.int64), np.array(g, object), np.array(it, np.int64),
                      np.array(fr, np.int64), items, skipped)


def iter_face_crops(paths: Iterable[str | Path], spec, cfg: ScanConfig | None = None, device: str = "cpu",
                    errors: list | None = None) -> Iterator[tuple[Path, int, np.ndarray]]:
    """Aligned face crops per sampled frame: ``(path, frame_index, uint8 (K, S, S, 3))``.

    Used by probe fitting, separability and synthesis; unreadable videos are
    skipped with a warning (they have no faces to contribute) and, with ``errors``
    given, appended to it as ``(path, VideoError)`` for the caller to report.
    """
    from ..config import ScanConfig
    from ..decode import FrameSampler, VideoError
    from ..faces import FaceDetector
    from ..pipeline import DETECT_BATCH, detect_and_align

    cfg = cfg or ScanConfig()
    faces = FaceDetector(device=device, max_side=cfg.det_max_side, min_face=cfg.min_face,
                         min_prob=cfg.face_prob, max_faces=cfg.max_faces)
    for path in map(Path, paths):
        frames = iter(FrameSampler(path, cfg.frames, cfg.fps, cfg.det_max_side, cfg.seek))
        while True:
            try:
                batch = list(itertools.islice(frames, DETECT_BATCH))
            except VideoError as e:
                log.warning("skipping %s: %s", path, e)
                if errors is not None:
                    errors.append((path, e))
                break
            if not batch:
                break
            for fr, fc, crops, _ in detect_and_align(batch, faces, spec, device, cfg.antialias):
                if len(fc):
                    u8 = crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
                    yield path, fr.index, u8.cpu().numpy()
