"""Training and validation samples: real faces and fakes made on the fly from them.

A sample is drawn deterministically from ``(seed, epoch, index)``: a cached
real face, and with probability 1/2 a fake made from it: a self-blended image
(:func:`scanner.research.synth.self_blend` with :data:`scanner.research.synth.TRAIN_BLEND`,
global or partial mask) or a multi-scale swap with another identity
(:func:`.mfs.mfs_swap`). Then a random flip, real-world degradations
(:func:`.augment.train_augment`) and a resize to the model's input.
With ``p_global`` > 0, that share of training reals gets the self-blend source
transform over the whole crop (colour, scale, blur or sharpening, no blending
boundary): a globally shifted appearance is then seen as real, and only an
inconsistency between face and surroundings as fake.
Validation samples use the same fakes without degradations.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .synth import TRAIN_BLEND, jitter_source, self_blend
from .augment import train_augment
from .data import FaceCache
from .mfs import mfs_swap

FLIP_LM = [1, 0, 2, 4, 3]  # left/right eye and mouth corner swap under a horizontal flip
KIND_REAL, KIND_SBI, KIND_MFS, KIND_RECON = 0, 1, 2, 3


def make_fake(cache: FaceCache, i: int, pool: np.ndarray, groups: np.ndarray, rng: np.random.Generator,
              p_mfs: float, recon: np.ndarray | None = None, p_recon: float = 0.0
              ) -> tuple[np.ndarray, tuple[int, int, int, int], int]:
    """Fake of cached face ``i``: ``(image, box (x0, y0, x1, y1), kind)``; the MFS donor is a
    face of ``pool`` with another identity. With ``recon`` (the cache's crops through
    :mod:`.recon`'s autoencoder, same order), a ``p_recon`` share of fakes is face ``i``
    reconstructed (the whole crop is generated: its box is the crop)."""
    img, lm = np.asarray(cache.crops[i]), cache.landmarks[i]
    # Drawn only when enabled, so recipes without it keep their exact random stream.
    if recon is not None and p_recon > 0 and rng.random() < p_recon:
        s = img.shape[0]
        return np.asarray(recon[i]), (0, 0, s, s), KIND_RECON
    if rng.random() < p_mfs:
        for _ in range(10):
            j = int(pool[rng.integers(len(pool))])
            if groups[j] != groups[i]:
                fake, box = mfs_swap(img, np.asarray(cache.crops[j]), lm, rng)
                return fake, box, KIND_MFS
    mode = "global" if rng.random() < 0.6 else "partial"
    fake, box, _ = self_blend(img, lm, mode, rng, TRAIN_BLEND)
    return fake, box, KIND_SBI


def global_jitter(img: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real face with the self-blend source transform applied everywhere (``uint8 (H, W, 3)``)."""
    centre = np.asarray(lm, np.float64).mean(0)
    return np.round(jitter_source(img, centre, rng, TRAIN_BLEND)).astype(np.uint8)


def soften(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real face blurred as much as the autoencoder smooths (Gaussian sigma 0.4-1.0 px at
    224 px; 0.7 matches its loss of fine detail): with reconstruction fakes, the same share of
    reals gets this, so lost fine detail alone is no fake cue, only the decoder's traces."""
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))


def frame_edge(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``img`` (``uint8 (S, S, 3)``, aligned) cut by 1-2 simulated frame edges, black beyond them.

    A face near the border of a video gets an aligned crop whose context runs past the
    frame, which :mod:`scanner.align` fills with black: a straight, slightly tilted
    boundary (the alignment's rotation) 0-30 % of the crop in from a side. Applied after
    the degradations (at scan time the black is added after the video's compression) to
    real and fake crops alike, so such a boundary is no fake cue."""
    s = img.shape[0]
    c = (s - 1) / 2
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) - c
    t = np.deg2rad(rng.uniform(-12, 12))  # one rotation for the whole frame: its edges stay a rectangle
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)  # frame axes
    out = img.copy()
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        inner = c - rng.uniform(0.0, 0.3) * s  # the edge's distance from the crop's centre
        coord = u if side in (0, 1) else v
        out[(coord < -inner) if side in (0, 2) else (coord > inner)] = 0
    return out


def _flip(img: np.ndarray, box) -> tuple[np.ndarray, tuple]:
    w = img.shape[1]
    return np.ascontiguousarray(img[:, ::-1]), (w - box[2], box[1], w - box[0], box[3])


class FaceSamples(torch.utils.data.Dataset):
    """``epoch_len`` samples per epoch from the faces ``pool`` of ``cache``.

    Item: ``(x uint8 (3, size, size), label float32 (0 real, 1 fake), box float32 (4,)
    x0 y0 x1 y1 as fractions of the crop or -1 for reals, kind int64)``.
    """

    def __init__(self, cache: FaceCache, pool: np.ndarray, size: int, epoch_len: int, seed: int,
                 train: bool = True, p_mfs: float = 0.35, p_global: float = 0.0,
                 recon: np.ndarray | None = None, p_recon: float = 0.0, p_edge: float = 0.0,
                 p_low_res: float = 0.0):
        self.cache, self.pool, self.size = cache, np.asarray(pool), size
        self.epoch_len, self.seed, self.train, self.p_mfs = epoch_len, seed, train, p_mfs
        self.p_global, self.recon, self.p_recon, self.p_edge = p_global, recon, p_recon, p_edge
        self.p_low_res = p_low_res
        self.epoch = 0
        self.groups = cache.groups

    def __len__(self) -> int:
        return self.epoch_len

    def __getitem__(self, k: int):
        # Validation samples are the same every epoch; training ones differ per epoch.
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 10**6, k])
        i = int(self.pool[k % len(self.pool)] if not self.train else self.pool[rng.integers(len(self.pool))])
        fake = (k % 2 == 1) if not self.train else rng.random() < 0.5
        if fake:
            img, box, kind = make_fake(self.cache, i, self.pool, self.groups, rng, self.p_mfs,
                                       self.recon, self.p_recon)
        else:
            img, box, kind = np.asarray(self.cache.crops[i]), (-1, -1, -1, -1), KIND_REAL
            # Drawn only when enabled, so recipes without it keep their exact random stream.
            if self.train and self.p_global > 0 and rng.random() < self.p_global:
                img = global_jitter(img, self.cache.landmarks[i], rng)
            if self.train and self.recon is not None and self.p_recon > 0 and rng.random() < self.p_recon:
                img = soften(img, rng)
        if self.train:
            if rng.random() < 0.5:
                img, box = _flip(img, box) if fake else (np.ascontiguousarray(img[:, ::-1]), box)
            img = train_augment(img, rng, p_low_res=self.p_low_res)
            if self.p_edge > 0 and rng.random() < self.p_edge:  # drawn only when enabled
                img = frame_edge(img, rng)
        s = img.shape[0]
        if self.size != s:
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        b = torch.tensor(box, dtype=torch.float32) / (s if fake else 1)
        return x, torch.tensor(float(fake)), b, torch.tensor(kind)
