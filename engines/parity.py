"""Parity of a built engine against eager fp32 PyTorch on real face crops.

Reference batch: ``engines/data/parity_faces.npz``, array ``faces``
``uint8 (N, 256, 256, 3)`` RGB, real faces already aligned by the scanner's
aligner. They are resized to the detector's ``spec.size`` with antialiased
bilinear interpolation and fed to both the eager fp32 module and the engine.

Checks (all must hold):
- cosine similarity of the flattened primary outputs (logits) >= ``min_cosine``;
- no verdict flips: ``p_fake >= detector.threshold`` is the same for every crop;
- max |P(fake) - P(fake) eager fp32| <= :data:`MAX_P_FAKE_DIFF` of the precision
  (cosine ignores scale: logits x1.05 keep cosine 1 and every verdict, yet move
  every score);
- cosine of every other output (ADM's box offsets and scores) >= ``min_cosine``.
The maximum absolute difference of the primary outputs is recorded as well.

Per-precision limits, with what the bundled detectors measured on CPU (eager and
ONNX Runtime, 2026-12, meso4_df / mesoinception4_df / test_tiny): fp32 1e-3
(measured <= 3e-7), fp16 1e-2 (measured <= 1.9e-3), bf16 5e-2 (bf16 keeps 8
mantissa bits; measured <= 1.7e-2).
"""
from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .detector import Detector
from .errors import EngineError, ParityError

MIN_COSINE = 0.99
MAX_P_FAKE_DIFF = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 5e-2}


def parity_faces_path() -> Path:
    return Path(str(resources.files("engines") / "data" / "parity_faces.npz"))


@lru_cache(maxsize=2)
def _load_faces(path: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            faces = z["faces"] if "faces" in z.files else z[z.files[0]]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise EngineError(f"cannot read parity faces {path}: {e}") from e
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[-1] != 3 or len(faces) == 0:
        raise EngineError(f"{path}: expected uint8 (N, H, W, 3) faces, got {faces.dtype} {faces.shape}")
    return faces


def parity_batch(size: int, path: str | Path | None = None, device="cpu") -> torch.Tensor:
    """Reference crops as ``float32 (N, 3, size, size)`` RGB [0, 255] on ``device``."""
    faces = _load_faces(str(path or parity_faces_path()))
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(0, 255).to(device)


def _reference(detector: Detector, x: torch.Tensor):
    """Eager fp32 output of ``detector`` on ``x``'s device (detector itself is not moved)."""
    ref = detector
    p = next(detector.parameters(), None)
    if p is not None and (p.device != x.device or p.dtype != torch.float32):
        ref = copy.deepcopy(detector).to(x.device, torch.float32)
    with torch.no_grad():
        return ref.eval()(x)


def compare(detector: Detector, ref_out, out) -> dict:
    """Parity numbers between two raw outputs of ``detector``."""
    a = Detector.primary(ref_out).detach().float().reshape(-1).cpu()
    b = Detector.primary(out).detach().float().reshape(-1).cpu()
    if a.shape != b.shape:
        raise ParityError(f"engine output shape {tuple(b.shape)} != eager {tuple(a.shape)}")
    finite = bool(torch.isfinite(b).all())
    cos = float(F.cosine_similarity(a.double(), b.double(), dim=0, eps=1e-12)) if finite else float("nan")
    pa = detector.p_fake(ref_out).float().cpu()
    pb = detector.p_fake(out).float().cpu()
    flips = int(((pa >= detector.threshold) != (pb >= detector.threshold)).sum())
    return {
        "n": int(pa.numel()),
        "cosine": cos,
        "max_abs_diff": float((a - b).abs().max()) if finite else float("inf"),
        "max_abs_diff_p_fake": float((pa - pb).abs().max()),
        "verdict_flips": flips,
        "threshold": detector.threshold,
        "secondary_cosine": _secondary_cosine(ref_out, out),
    }


def _secondary_cosine(ref_out, out) -> list[float]:
    """Cosine of each output after the primary one (ADM's box offsets and scores, which
    ``extras`` turns into the artifact boxes written with every face): an engine that gets
    them wrong (an export that swaps or drops them) passed on the primary output alone."""
    refs = [] if isinstance(ref_out, torch.Tensor) else list(ref_out)[1:]
    outs = [] if isinstance(out, torch.Tensor) else list(out)[1:]
    if len(refs) != len(outs):
        return [float("nan")]
    res = []
    for a, b in zip(refs, outs):
        a, b = a.detach().double().reshape(-1).cpu(), b.detach().double().reshape(-1).cpu()
        if a.shape != b.shape or not bool(torch.isfinite(b).all()):
            res.append(float("nan"))
        else:  # equal (e.g. all-zero) outputs agree, though their cosine is 0
            res.append(1.0 if torch.equal(a, b) else float(F.cosine_similarity(a, b, dim=0, eps=1e-12)))
    return res


def passes(res: dict, min_cosine: float, max_p_diff: float) -> bool:
    """Whether the numbers of :func:`compare` meet the limits (written so that NaN fails
    every comparison). The one test of a fresh check and of a stored result alike."""
    return bool(res["cosine"] >= min_cosine and res["verdict_flips"] == 0
                and res["max_abs_diff_p_fake"] <= max_p_diff
                and all(c >= min_cosine for c in res["secondary_cosine"]))


def check_parity(engine, *, min_cosine: float = MIN_COSINE, faces: str | Path | None = None,
                 allow_failure: bool | None = None, max_p_diff: float | None = None) -> dict:
    """Compare ``engine`` with eager fp32; store and return the numbers.

    ``max_p_diff``: largest allowed |ΔP(fake)| (default: :data:`MAX_P_FAKE_DIFF`
    of the engine's precision).

    Raises :class:`ParityError` with the numbers when a check fails, unless
    ``allow_failure`` (default: ``engine.cfg.allow_parity_failure``).
    """
    det = engine.detector
    x = parity_batch(det.spec.size, faces, device=engine.device)
    res = compare(det, _reference(det, x), engine(x))
    limit = MAX_P_FAKE_DIFF[engine.cfg.precision] if max_p_diff is None else max_p_diff
    res["min_cosine"], res["max_p_fake_diff_allowed"] = min_cosine, limit
    res["passed"] = passes(res, min_cosine, limit)
    engine.info.parity = res
    allow = engine.cfg.allow_parity_failure if allow_failure is None else allow_failure
    if not res["passed"] and not allow:
        raise ParityError(
            f"{engine.kind} engine for {det.name} ({engine.cfg.precision}) failed parity vs eager fp32 on "
            f"{res['n']} real faces: cosine {res['cosine']:.5f} (need >= {min_cosine}), "
            f"{res['verdict_flips']} verdict flips at {det.threshold}, max |diff| {res['max_abs_diff']:.4g}, "
            f"max |dP(fake)| {res['max_abs_diff_p_fake']:.3g} (need <= {limit:g}), "
            f"other outputs' cosine {[round(c, 5) for c in res['secondary_cosine']]}; "
            "pass allow_parity_failure / --allow-parity-failure to keep it anyway"
        )
    return res
