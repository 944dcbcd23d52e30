"""The pixels dfscan's training caches are built from must not move unnoticed.

The shipped detectors' cards rebuild their weights bit for bit from face caches made by
the scan's own decoding (scanner/decode.py, scanner/picture.py, scanner/colour.py). A change
there that alters the decoded pictures of the training footage (a colour rule, a resize, a
deinterlace) silently breaks that reproduction and shifts what the detectors see at scan
time. These digests were taken with the code whose caches built the shipped weights
(re-checked after the colour changes of 2026-12-02: every training clip decoded to
identical bytes); they hold for the PyAV/FFmpeg build they name, and another build skips.
"""
from __future__ import annotations

import hashlib

import av
import pytest

from conftest import SHARED
from scanner.decode import FrameSampler

PYAV = "18.1.0"
DIGESTS = {  # first 16 hex of SHA-256 over 2 sampled frames' image and detector copy (320 px)
    "train_real/grid_lipnet/bbaf2n.mpg": "750cb91b1c394b60",  # MPEG-1 PS, untagged SD
    "train_real/mead_dreamtalk/M030_front_angry_level3_001.mp4": "1fc2b7e40607b03e",
    "train_real/vox_fomm/08.mp4": "6fb2cea137dd3809",
    "portrait/d12.mp4": "f86650e3cc7651eb",  # tagged BT.601 (matrix and primaries)
    "portrait/d13.mp4": "32c456f4112a1c11",  # tagged BT.709, 720x1280 (HD by the untagged rule)
}


@pytest.mark.skipif(av.__version__ != PYAV, reason=f"digests recorded with PyAV {PYAV}")
@pytest.mark.parametrize("clip", sorted(DIGESTS))
def test_training_footage_decodes_to_the_recorded_pixels(clip):
    path = SHARED / "media" / clip
    if not path.is_file():
        pytest.skip(f"{path} is not here (../shared/media)")
    h = hashlib.sha256()
    for f in FrameSampler(path, frames=2, det_max_side=320):
        h.update(f.image.tobytes())
        h.update(b"" if f.small is None else f.small.tobytes())
    assert h.hexdigest()[:16] == DIGESTS[clip], (
        "decoded training pixels changed: the face caches, and with them the shipped weights' "
        "reproduction (engines/weights/*.card.md), no longer match")
