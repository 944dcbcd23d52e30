"""The crop a trained detector scores at scan time is the crop `dfscan train` trained it on.

Training caches 224-px aligned crops as uint8 and area-resizes them (OpenCV INTER_AREA) to the
model's input; a scan aligned straight at the input size, bilinear, so faces shrunk less than 2x
gave sharper crops than any seen in training (a real face scored up to 0.2 higher)."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA
from engines.detectors.effnet_lite import lite_spec
from engines.spec import TRAIN_CROP
from scanner.align import align_faces, apply_affine, area_resize
from scanner.decode import FrameSampler
from scanner.faces import FaceDetector


@pytest.mark.parametrize("size", [160, 128, 112])
def test_area_resize_is_opencv_inter_area(size):
    rng = np.random.default_rng(size)
    for img in (rng.integers(0, 256, (TRAIN_CROP, TRAIN_CROP, 3), dtype=np.uint8),
                cv2.GaussianBlur(rng.integers(0, 256, (TRAIN_CROP, TRAIN_CROP, 3), dtype=np.uint8), (7, 7), 2)):
        ref = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        got = area_resize(torch.from_numpy(img).permute(2, 0, 1)[None].float(), size)[0]
        assert np.array_equal(got.permute(1, 2, 0).numpy().astype(np.uint8), ref)


@pytest.fixture(scope="module")
def faces():
    frames = list(FrameSampler(DATA / "d1.mp4", frames=3, det_max_side=960))
    found = FaceDetector().detect(frames)
    got = [(fr.image, fc.landmarks[:1]) for fr, fc in zip(frames, found) if len(fc)]
    assert got
    return got


def test_scan_crop_of_a_trained_lite_detector_is_its_training_crop(faces):
    spec = lite_spec(160)
    assert spec.via == TRAIN_CROP
    for image, lm in faces:
        scan, mats = align_faces([image], [0], lm, spec)
        cached, _ = align_faces([image], [0], lm, lite_spec(TRAIN_CROP))  # what dfscan train caches
        u8 = cached[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        trained = cv2.resize(u8, (160, 160), interpolation=cv2.INTER_AREA)  # FaceSamples' resize
        assert np.array_equal(scan[0].permute(1, 2, 0).numpy().astype(np.uint8), trained)
        # the matrices map the frame's landmarks onto the 160-px template, as before
        mapped = apply_affine(mats, torch.as_tensor(lm, dtype=torch.float32))[0]
        assert (mapped - spec.template_tensor()).abs().max() < 6
        direct, m_direct = align_faces([image], [0], lm, dataclasses.replace(spec, via=None))
        assert torch.allclose(mats, m_direct, atol=1e-3)  # same geometry; only the sampling differs
        assert (direct - scan).abs().mean() > 0.1
