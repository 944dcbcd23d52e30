"""Face stage drill on real footage: answers that were silently wrong.

Faces cut by the frame edge (a talking head leaning out of the picture, a crop of a
wider shot): MTCNN's R-Net/O-Net crops of a candidate box running past the frame were
clamped to the frame and stretched (facenet's ``pad``), while the nets' box offsets and
landmarks were read against the whole box. A face of ``tests/data/d1.mp4`` cut 10-30 %
at a side kept p >= 0.9 but its landmarks landed 40-180 px off (a 280 px face), so the
aligned crop the detector scored was a wrong region. The crops are now padded black
(the reference MTCNN's zero padding) and the landmarks stay on the face.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA
from scanner.decode import Frame, FrameSampler
from scanner.faces import FaceDetector

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip():
    det = FaceDetector(min_face=64)
    frames = list(FrameSampler(DATA / "d1.mp4", 2, None, None))
    return det, [(fr.image, det.detect([fr])[0]) for fr in frames]


def _cut(img: np.ndarray, box: np.ndarray, side: str, frac: float):
    """``img`` cut ``frac`` of the face's width/height into the face at ``side``, and
    the offset of the cut frame's origin in the full one."""
    x1, y1, x2, y2 = box
    if side == "left":
        x0 = int(x1 + frac * (x2 - x1))
        return img[:, x0:], np.array([x0, 0])
    if side == "top":
        y0 = int(y1 + frac * (y2 - y1))
        return img[y0:], np.array([0, y0])
    return img[:, : int(x2 - frac * (x2 - x1))], np.array([0, 0])  # right


@pytest.mark.parametrize("side,frac", [("left", 0.1), ("left", 0.2), ("top", 0.2), ("right", 0.1),
                                       ("right", 0.2)])
def test_face_cut_by_frame_edge_keeps_its_landmarks(clip, side, frac):
    det, frames = clip
    checked = 0
    for img, full in frames:
        assert len(full) == 1
        cut, off = _cut(img, full.boxes[0], side, frac)
        found = det.detect([Frame(0, 0.0, np.ascontiguousarray(cut))])[0]
        if len(found) == 0:  # skipped is a sane answer for a cut face; a wrong crop is not
            continue
        side_px = float(np.min(full.boxes[0, 2:] - full.boxes[0, :2]))
        err = np.abs(found.landmarks[0] + off - full.landmarks[0]).max()
        assert err < 0.08 * side_px, f"landmarks {err:.0f} px off on a {side_px:.0f} px face"
        checked += 1
    assert checked  # MTCNN keeps these cut faces (p >= 0.9): the drill must see one


@pytest.mark.parametrize("name,k", [("d2.mp4", 2), ("d2.mp4", 1), ("d18.mp4", 2)])
def test_turned_clip_scoring_confident_as_stored_is_turned_upright(name, k):
    """A frame stored turned k quarter turns (no rotation metadata) whose face MTCNN still
    scores >= 0.995 as stored (d2 upside down: 0.996) settled the video "upright" at once;
    d2 upside down then scanned fake 0.58 (upright: real 0.08) with orientation_deg 0."""
    from scanner.orientation import Orientation, rotate_frame

    det = FaceDetector()
    frames = [rotate_frame(f, k) for f in FrameSampler(DATA / name, 4, None, 960)]
    o = Orientation(det)
    o.settle(frames, det.detect(frames))
    assert o.k == (4 - k) % 4
