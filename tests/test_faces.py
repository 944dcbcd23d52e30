"""MTCNN wrapper on a real group photo: mapping back to full resolution, filters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import DATA
from scanner.decode import Frame
from scanner.faces import FaceDetector


def _frame(img: np.ndarray, max_side: int | None) -> Frame:
    if not max_side or max(img.shape[:2]) <= max_side:
        return Frame(0, 0.0, img)
    scale = max_side / max(img.shape[:2])
    w, h = round(img.shape[1] * scale), round(img.shape[0] * scale)
    small = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    return Frame(0, 0.0, img, small, w / img.shape[1])


@pytest.fixture(scope="module")
def group() -> np.ndarray:
    return np.asarray(Image.open(DATA / "multiface.jpg").convert("RGB"))


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_downscaled_detection_maps_back_to_full_resolution(group):
    full = FaceDetector(max_side=4096, min_face=30, max_faces=20).detect([_frame(group, None)])[0]
    half = FaceDetector(max_side=max(group.shape[:2]) // 2, min_face=30, max_faces=20)
    small = half.detect([_frame(group, max(group.shape[:2]) // 2)])[0]
    assert len(full) >= 4 and len(small) >= 4
    for box in small.boxes:  # every face found at half size is the same face at full size
        assert max(_iou(box, fb) for fb in full.boxes) > 0.6
    # Landmarks (eyes) lie inside their boxes, in full-resolution pixels.
    for box, lm in zip(small.boxes, small.landmarks):
        assert box[0] <= lm[0, 0] <= box[2] and box[1] <= lm[0, 1] <= box[3]


def test_max_faces_keeps_largest_first(group):
    many = FaceDetector(max_side=1024, min_face=30, max_faces=20).detect([_frame(group, 1024)])[0]
    two = FaceDetector(max_side=1024, min_face=30, max_faces=2).detect([_frame(group, 1024)])[0]
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    assert len(two) == 2 and np.all(np.diff(area(many.boxes)) <= 0)
    assert np.allclose(sorted(area(two.boxes)), sorted(area(many.boxes)[:2]), rtol=1e-3)


def test_min_face_and_probability_filters(group):
    det = FaceDetector(max_side=1024, min_face=30, max_faces=20)
    faces = det.detect([_frame(group, 1024)])[0]
    side = np.minimum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])
    big = FaceDetector(max_side=1024, min_face=int(np.median(side)) + 1, max_faces=20)
    kept = big.detect([_frame(group, 1024)])[0]
    assert 0 < len(kept) < len(faces)
    assert np.all(faces.probs >= 0.9)


def test_batch_of_mixed_sizes_keeps_order(group):
    blank = np.zeros((200, 300, 3), np.uint8)
    res = FaceDetector(max_side=1024).detect([_frame(blank, None), _frame(group, 1024), _frame(blank, None)])
    assert [len(r) > 0 for r in res] == [False, True, False]


def test_batched_cascade_agrees_with_facenet(group):
    """scanner.mtcnn (batched crops) finds the same faces as facenet's own detect()."""
    from scanner import mtcnn as cascade

    from facenet_pytorch import MTCNN

    det = FaceDetector(max_side=1024, min_face=30, max_faces=50)
    img = _frame(group, 1024).small[None]
    ref = MTCNN(keep_all=True, thresholds=list(det.thresholds), min_face_size=30, post_process=False)
    ref_boxes, _, ref_pts = ref.detect(img, landmarks=True)
    (boxes, pts), = cascade.detect(det.mtcnn, img, 30, det.thresholds)
    assert abs(len(boxes) - len(ref_boxes[0])) <= 1 and len(boxes) >= 4
    # same networks and weights, loaded without facenet-pytorch's modules
    with torch.inference_mode():
        x = torch.randn(3, 3, 48, 48)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(det.mtcnn.onet(x), ref.onet(x)))
    for rb, rp in zip(ref_boxes[0], ref_pts[0]):
        best = max(range(len(boxes)), key=lambda k: _iou(rb, boxes[k]))
        assert _iou(rb, boxes[best]) > 0.8
        side = rb[2] - rb[0]
        assert np.abs(pts[best] - rp).max() < 0.1 * side  # landmarks within 10% of face size


@pytest.mark.parametrize("size,samples", [(24, 1), (48, 2)])
def test_cascade_crops_cover_facenets_region(size, samples):
    # R/O-Net see each candidate as facenet crops it: pixels x1-1..x2-1 (1-based box)
    # area-resized. roi_align(aligned=False) reads box corners as pixel centres, so every
    # crop was taken half a pixel right of and below that region (landmarks -0.5 px).
    from scanner import mtcnn as cascade

    h, w = 120, 160
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    img = torch.stack([xs, ys, xs + ys])[None]  # linear ramps: an area mean is a point sample
    boxes = torch.tensor([[11.0, 21.0, 58.0, 68.0], [61.0, 21.0, 156.0, 116.0]])  # 48 and 96 px
    got = cascade._crops(img, boxes, torch.zeros(2, dtype=torch.long), size, samples)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        region = img[:, :, y1 - 1:min(y2, h), x1 - 1:min(x2, w)]  # facenet's pad() + slice
        ref = (F.interpolate(region, size=(size, size), mode="area") - 127.5) * 0.0078125
        assert torch.allclose(got[k], ref[0], atol=1e-4)


def test_missing_facenet_weights_is_one_clear_error(monkeypatch):
    import importlib.util

    from scanner.faces import MissingDependency

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "facenet_pytorch" else find(name, *a, **k))
    with pytest.raises(MissingDependency, match="pip install --no-deps facenet-pytorch==2.6.0"):
        FaceDetector()
