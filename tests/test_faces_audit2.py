"""Face finding audit: answers that depended on what else shared a detection batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA
from scanner.decode import Frame, FrameSampler
from scanner.faces import FaceDetector
from scanner.mtcnn import _nms_min

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_min_nms_keeps_images_of_a_batch_apart_at_negative_coordinates():
    # Image 0: a small face at the bottom-right; image 1: a large face running past the
    # top-left corner. Shifting image 1 by max + 1 only put its box on image 0's, and the
    # "Min" NMS (overlap / smaller box) dropped image 0's face.
    boxes = torch.tensor([[300.0, 300.0, 400.0, 400.0], [-101.0, -101.0, 149.0, 149.0]])
    scores = torch.tensor([0.99, 0.999])
    kept = _nms_min(boxes, scores, torch.tensor([0, 1]), 0.7)
    assert sorted(kept.tolist()) == [0, 1]
    # Within one image it still suppresses (the shift is the same for every box of a group).
    inner = torch.tensor([[0.0, 0.0, 100.0, 100.0], [10.0, 10.0, 90.0, 90.0]])
    assert _nms_min(inner, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.7).tolist() == [0]


@pytest.fixture(scope="module")
def det_copy() -> np.ndarray:
    """A 960x540 detection copy holding a real face (tests/data/d1.mp4, first sample)."""
    fr = next(iter(FrameSampler(DATA / "d1.mp4", 1, None, None)))
    canvas = np.full((540, 960, 3), 100, np.uint8)
    face = np.asarray(Image.fromarray(fr.image).resize((360, 360), Image.BILINEAR))
    canvas[120:480, 400:760] = face
    return canvas


def _stream_frame(small: np.ndarray, height: int, width: int) -> Frame:
    full = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
    return Frame(0, 0.0, full, small, small.shape[1] / width)


def test_frames_of_one_detection_size_but_other_scales_map_back_each_by_its_own(det_copy):
    # Live batches mix streams: a 1280x720 and a 1920x1080 camera both give 960x540
    # detection copies. One MTCNN call for both mapped the 1080p faces with the 720p
    # scale (boxes at 2/3 of their place, the crop aligned on the wrong pixels).
    det = FaceDetector(min_face=64)
    hd, fhd = _stream_frame(det_copy, 720, 1280), _stream_frame(det_copy, 1080, 1920)
    alone = [det.detect([hd])[0], det.detect([fhd])[0]]
    together = det.detect([hd, fhd])
    assert [len(f) for f in alone] == [1, 1]
    for a, b in zip(alone, together):
        assert len(b) == 1
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        np.testing.assert_allclose(b.landmarks, a.landmarks, atol=1e-3)
    # The same face, in each stream's own full-resolution pixels (the two searches start
    # their pyramids at other sizes, min_face in detection pixels: a few pixels apart).
    np.testing.assert_allclose(together[1].boxes, together[0].boxes * 1.5, rtol=0.03)


def test_a_min_face_below_mtcnns_floor_is_said_once(caplog):
    """On 8K frames (downscaled 0.125x for detection) a 64-px min_face is 8 detection pixels,
    below P-Net's 12: faces from 96 px were searched while the settings said 64, silently."""
    import logging

    det = FaceDetector(min_face=64)
    with caplog.at_level(logging.WARNING, logger="scanner.faces"):
        assert det.minsize(0.5) == 32
        assert not caplog.records
        assert det.minsize(0.125) == 12
        assert det.minsize(0.125) == 12
    assert len(caplog.records) == 1
    assert "faces smaller than 96 px are not found" in caplog.text and "det_max_side" in caplog.text
