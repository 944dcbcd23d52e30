"""Grad-CAM views for the report: the aligned crop the detector scored, heat on top.

For a re-decoded frame the face is found again with the scan's MTCNN settings,
matched to the row's face box, aligned with the scan's alignment, and explained
with :func:`engines.explain.gradcam` on the eager detector. The recomputed
P(fake) is shown next to the scan's: a large difference (another engine or
precision, other weights) is said, never hidden.
"""
from __future__ import annotations

import logging

import numpy as np

from ..decode import Frame
from .thumbnails import jpeg_uri

log = logging.getLogger("dfscan")
MATCH_IOU = 0.5
ALPHA = 0.45  # heat opacity over the crop


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """``float (H, W)`` in [0, 1] -> ``uint8 (H, W, 3)``: black-red-yellow-white ramp."""
    h = np.clip(heat, 0.0, 1.0)[..., None]
    stops = np.array([[0, 0, 0], [180, 0, 30], [255, 140, 0], [255, 255, 200]], np.float32)
    pos = h * (len(stops) - 1)
    lo = np.floor(pos).clip(0, len(stops) - 2).astype(int)[..., 0]
    frac = pos[..., 0] - lo
    rgb = stops[lo] * (1 - frac[..., None]) + stops[lo + 1] * frac[..., None]
    return rgb.astype(np.uint8)


def overlay(crop: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Blend a heatmap over an RGB ``uint8`` crop; weight grows with the heat."""
    a = (alpha * np.clip(heat, 0, 1))[..., None]
    return (crop * (1 - a) + heat_colours(heat) * a).round().clip(0, 255).astype(np.uint8)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class GradCamExplainer:
    """Callable ``(frame, face) -> {"uri", "p_fake", "note"}`` for :func:`.thumbnails.evidence`.

    Args:
        detector: name of a registered detector (must match the rows').
        weights: weights overriding the packaged default (as ``scan --weights``).
        device: where MTCNN and the detector run.
        px: side of the shown crop.
    """

    def __init__(self, detector: str, weights: str | None = None, device: str = "cpu", px: int = 128):
        from engines import create_detector
        from engines.explain import cam_module

        from ..faces import FaceDetector

        self.detector = create_detector(detector, weights=weights, device=device)
        cam_module(self.detector)  # fail now, with the reason, when it has no conv map
        self.device, self.px = device, px
        # The scan's default MTCNN settings give the scan's landmarks (min_face sets the
        # pyramid); only the face filter is looser: the scan already kept this face.
        self.faces = FaceDetector(device=device, min_prob=0.5, max_faces=16)

    @property
    def weights_hash(self) -> str:
        return self.detector.weights_hash

    def __call__(self, frame: Frame, face: dict) -> dict:
        import torch

        from engines.explain import gradcam

        from ..align import align_faces

        found = self.faces.detect([frame])[0]
        ious = [_iou(b, face["box"]) for b in found.boxes]
        if not ious or max(ious) < MATCH_IOU:
            return {"note": "face not found again in the re-decoded frame"}
        k = int(np.argmax(ious))
        crops, _ = align_faces([frame.image], [0], found.landmarks[k:k + 1], self.detector.spec, self.device)
        res = gradcam(self.detector, crops)
        crop = crops[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        uri, _, _ = jpeg_uri(overlay(crop, res.heatmap[0].numpy()), self.px)
        p = float(res.p_fake[0])
        note = None
        if abs(p - float(face["score"])) > 0.05:
            note = f"recomputed P(fake) {p:.3f} differs from the scan's {float(face['score']):.3f}"
        return {"uri": uri, "p_fake": p, "note": note}

    def matches(self, row: dict) -> bool:
        """Explain only rows scored by this very detector and weights."""
        return row.get("detector") == self.detector.name and row.get("weights_hash") == self.weights_hash


def make_explainer(rows: list[dict], opts) -> tuple[GradCamExplainer | None, str | None]:
    """The explainer ``opts.explain`` asks for, or ``(None, why not)``; why not is also a
    warning line: only the page's header said it, and the command ended "written", exit 0,
    as if the heatmaps asked for were in it."""
    ex, note = _make_explainer(rows, opts)
    if ex is None and note:
        from ..terminal import terminal_safe  # the note quotes --weights and row values

        log.warning("%s", terminal_safe(note))
    return ex, note


def _make_explainer(rows: list[dict], opts) -> tuple[GradCamExplainer | None, str | None]:
    if not opts.explain:
        return None, None
    if opts.explain != "gradcam":
        return None, f"unknown --explain method {opts.explain!r} (known: gradcam)"
    if not opts.thumbnails:
        return None, "Grad-CAM skipped: thumbnails are off"
    scored = [(r.get("detector"), r.get("weights_hash")) for r in rows if r.get("detector")]
    if not scored:
        return None, "Grad-CAM skipped: no row names its detector"
    name, wanted = max(set(scored), key=scored.count)
    try:
        ex = GradCamExplainer(name, opts.weights, opts.device)
    except Exception as e:  # unknown detector, missing weights, no conv map: say which
        return None, f"Grad-CAM skipped: {e}"
    if ex.weights_hash != wanted:
        return None, (f"Grad-CAM skipped: weights {ex.weights_hash} are not the scan's {wanted} "
                      "(pass the scan's --weights)")
    others = len(scored) - scored.count((name, wanted))
    note = f"Grad-CAM on {name} layer {ex.detector.cam_layer}"
    if others:
        note += f"; {others} video(s) scored by another detector or weights are not explained"
    return ex, note
