"""baseline_sharpness: a shortcut scorer registered like a detector, for evaluations."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.registry import create_detector

ROOT = Path(__file__).resolve().parents[1]


def _faces(size: int = 128) -> np.ndarray:
    """Real aligned faces (engines/data/parity_faces.npz), uint8 (N, size, size, 3)."""
    faces = np.load(ROOT / "engines/data/parity_faces.npz")["faces"]
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in faces])


def _score(det, faces: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return det(x).numpy()


def test_sharpness_is_the_laplacian_variance_of_the_face_and_drops_with_blur():
    det = create_detector("baseline_sharpness")
    faces = _faces(det.spec.size)
    got = _score(det, faces)
    # Reference: OpenCV's 4-neighbour Laplacian of BT.601 luma over the central 3/4.
    m = det.margin
    for f, g in zip(faces, got):
        y = f.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        lap = cv2.Laplacian(y, cv2.CV_64F, ksize=1)[m + 1:-m - 1, m + 1:-m - 1]
        assert g == pytest.approx(math.log(lap.var()) - math.log(100.0), abs=1e-3)
    blurred = _score(det, np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in faces]))
    sharpened = _score(det, np.stack([cv2.addWeighted(f, 2.0, cv2.GaussianBlur(f, (0, 0), 1.0), -1.0, 0)
                                      for f in faces]))
    assert (blurred < got - 0.5).all() and (sharpened > got).all()


def test_sharpness_baseline_runs_on_the_engines_and_is_no_default_benchmark(tmp_path):
    from engines.backends import prepare_engine
    from scanner.cli_engines import _default_detectors

    det = create_detector("baseline_sharpness")
    x = torch.from_numpy(_faces(det.spec.size)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        eager = det(x).numpy()
    pytest.importorskip("onnxruntime")
    ort = prepare_engine(det, "onnxruntime", batch_sizes=(1, 8, 16), cache_dir=str(tmp_path))
    assert ort.info.parity is not None
    assert np.allclose(ort(x).numpy(), eager, atol=1e-3)
    assert "baseline_sharpness" not in _default_detectors()


def test_scanning_with_a_baseline_says_its_verdicts_mean_nothing(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", str(ROOT / "tests/data/d1.mp4"),
                        "--detector", "baseline_sharpness", "--frames", "4", "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "shortcut baseline, not a detector" in " ".join((r.stdout + r.stderr).split())
    assert len(out.read_text().splitlines()) == 1


def test_eval_scores_images_with_the_baseline(tmp_path):
    """`dfscan eval IMAGES --detector baseline_sharpness` (the README's shortcut check):
    the baseline has no parameters, so the image path must not take its device from them
    (it was a StopIteration traceback)."""
    from types import SimpleNamespace

    from scanner.research.evaluate import score_items

    det = create_detector("baseline_sharpness")
    assert not list(det.parameters())
    faces = torch.from_numpy(_faces(det.spec.size)).permute(0, 3, 1, 2).float()[:3]

    class Source:
        def crops(self, item, spec):
            return np.array([0, 0, 1], np.int64), faces

    got = score_items([SimpleNamespace(path=tmp_path / "a.png")], det, Source())
    assert set(got) == {0} and math.isfinite(got[0])
