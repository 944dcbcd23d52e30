"""Face finding audit 3: answers that were silently wrong on real faces."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from scanner.decode import Frame, FrameSampler
from scanner.faces import FaceDetector
from scanner.region import RegionSearch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def det() -> FaceDetector:
    return FaceDetector(min_face=64)


@pytest.fixture(scope="module")
def det_copy() -> np.ndarray:
    """A 960x540 detection copy holding a real face (tests/data/d1.mp4, first sample)."""
    fr = next(iter(FrameSampler(DATA / "d1.mp4", 1, None, None)))
    canvas = np.full((540, 960, 3), 100, np.uint8)
    canvas[120:480, 400:760] = np.asarray(Image.fromarray(fr.image).resize((360, 360), Image.BILINEAR))
    return canvas


def _sized(small: np.ndarray, height: int, width: int, index: int = 0) -> Frame:
    full = np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))
    return Frame(index, index / 25, full, small, small.shape[1] / width)


def test_region_search_maps_each_frame_by_its_own_scale_across_a_size_change(det, det_copy):
    # A video whose picture size changes (recordings joined with `cat`: 1280x720, then
    # 1920x1080; measured on such a joined MPEG-TS of portrait/d13) gives 960x540 detection
    # copies either side. A region-search batch across the change mapped the 1080p frame's
    # face with the 720p scale: box [536, 182, 750, 472] instead of [803, 263, 1131, 703],
    # and its crop was aligned on pixels off the face.
    frames = [_sized(det_copy, 720, 1280, 0), _sized(det_copy, 720, 1280, 1),
              _sized(det_copy, 1080, 1920, 2), _sized(det_copy, 1080, 1920, 3)]
    expected = det.detect(frames)
    assert [len(f) for f in expected] == [1, 1, 1, 1]
    region = RegionSearch(det)
    found = region.detect(frames[:2]) + region.detect(frames[1:3]) + region.detect(frames[3:])
    for got, want in zip(found, [expected[0], expected[1], expected[1], expected[2], expected[3]]):
        assert len(got) == 1
        np.testing.assert_allclose(got.boxes, want.boxes, atol=2.0)
        np.testing.assert_allclose(got.landmarks, want.landmarks, atol=2.0)
