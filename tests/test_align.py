"""Alignment: Umeyama fit, kornia warp vs an independent OpenCV warp, box mapping."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from engines.spec import InputSpec
from scanner.align import align_faces, apply_affine, invert_affine, umeyama_similarity


def _similarity(scale, angle, tx, ty) -> torch.Tensor:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float32)


def test_umeyama_recovers_known_similarity():
    dst = InputSpec(size=224).template_tensor()
    truth = torch.stack([_similarity(0.8, 0.3, 10, -5), _similarity(2.5, -1.2, 100, 40)])
    src = apply_affine(invert_affine(truth), dst.expand(2, 5, 2))
    est = umeyama_similarity(src, dst)
    assert torch.allclose(est, truth, atol=1e-4)


def test_umeyama_never_reflects():
    dst = InputSpec(size=112).template_tensor()
    mirrored = dst.clone()
    mirrored[:, 0] = -mirrored[:, 0]
    m = umeyama_similarity(mirrored[None], dst)
    assert torch.linalg.det(m[0, :, :2]) > 0


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (360, 480, 3), dtype=np.uint8), (0, 0), 2)
    return np.ascontiguousarray(img)


def test_warp_matches_opencv(photo):
    spec = InputSpec(size=128)
    # Landmarks of a ~150 px face, rotated: scale ~0.8, so no antialias pre-shrink.
    truth = _similarity(0.8, 0.25, -90, -60)
    lm = apply_affine(invert_affine(truth[None]), spec.template_tensor()[None])
    crops, mats = align_faces([photo], [0], lm, spec, antialias=False)
    ref = cv2.warpAffine(photo, mats[0].double().numpy(), (128, 128), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    got = crops[0].permute(1, 2, 0).numpy()
    diff = np.abs(got - ref.astype(np.float32))[4:-4, 4:-4]
    assert diff.mean() < 1.0  # < 1/255 of the full range, in 0..255 units
    assert torch.allclose(mats[0], truth, atol=1e-3)


def test_antialias_only_changes_large_faces(photo):
    spec = InputSpec(size=64)
    big = apply_affine(invert_affine(_similarity(0.2, 0.0, -10, -10)[None]), spec.template_tensor()[None])
    a, _ = align_faces([photo], [0], big, spec, antialias=False)
    b, _ = align_faces([photo], [0], big, spec, antialias=True)
    # Same geometry: the means agree; antialiasing removes high-frequency aliasing.
    assert abs(a.mean().item() - b.mean().item()) < 3.0
    assert b.std().item() < a.std().item()


@pytest.mark.parametrize("scale", [0.3, 0.1, 0.05, 0.03])
@pytest.mark.parametrize("angle", [0.0, 0.3])
def test_large_face_crop_of_a_uniform_frame_is_uniform(scale, angle):
    # The antialiased pre-shrink kept the ROI margin of the plain warp (2 frame px), which
    # at a strong shrink is under one pixel of the shrunk patch: the crop's edge samples
    # fell outside it and were blended with black (edge rows at 113 instead of 200 for a
    # face shrunk 20x, e.g. a close-up in 4K).
    spec = InputSpec(size=64)
    frame = np.full((3000, 3000, 3), 200, np.uint8)
    m = _similarity(scale, angle, 0, 0)
    m[:, 2] = 31.5 - apply_affine(m[None], torch.tensor([[[1500.0, 1500.0]]]))[0, 0]  # centred
    lm = apply_affine(invert_affine(m[None]), spec.template_tensor()[None])
    crops, _ = align_faces([frame], [0], lm, spec, antialias=True)
    assert (crops - 200).abs().max().item() < 1.0


@pytest.mark.gpu
def test_large_faces_align_the_same_on_cuda(photo):
    """A face shrunk by more than 2 takes the antialiased pre-shrink, which on the CPU runs on
    uint8; CUDA has no uint8 kernel for it, so there it runs on float: crops agree."""
    spec = InputSpec(size=64)
    big = apply_affine(invert_affine(_similarity(0.2, 0.0, -10, -10)[None]), spec.template_tensor()[None])
    cpu, _ = align_faces([photo], [0], big, spec, device="cpu")
    gpu, _ = align_faces([photo], [0], big, spec, device="cuda")
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    assert (gpu.cpu() - cpu).abs().max().item() < 2.0  # uint8 rounding of the CPU path only


def test_empty_landmarks():
    crops, mats = align_faces([], [], np.zeros((0, 5, 2)), InputSpec(size=32))
    assert crops.shape == (0, 3, 32, 32) and mats.shape == (0, 2, 3)
