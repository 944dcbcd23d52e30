"""dfscan synth at its smallest allowed --size (16): a face whose blend mask erodes to
nothing was a bare numpy ValueError traceback; now that face is skipped with a reason,
and no written fake is a pixel-for-pixel copy of its real chip."""
import csv

import numpy as np
import pytest
from PIL import Image

from engines.errors import DfscanError
from scanner.faces import Faces
from scanner.research import synth

LM = np.array([[6, 6], [10, 6], [8, 8], [6.5, 10.5], [9.5, 10.5]], np.float32)


def test_self_blend_empty_mask_is_dfscan_error():
    img = np.full((16, 16, 3), 100, np.uint8)
    with pytest.raises(DfscanError, match="mask is empty"):
        synth.self_blend(img, LM + 100, "global", np.random.default_rng(0))  # face off the chip


class _TinyFaces:
    """A 12 px face in a 200 px image (chip side 16 at --size 16)."""

    def __init__(self, **kw):
        pass

    def detect(self, frames):
        lm = (LM * 1.5 + 90)[None]
        return [Faces(np.array([[90, 90, 114, 114]], np.float32), np.ones(1, np.float32), lm) for _ in frames]


def test_synth_tiny_size_skips_faces_it_cannot_blend(tmp_path, monkeypatch):
    monkeypatch.setattr("scanner.faces.FaceDetector", _TinyFaces)
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray((rng.random((200, 200, 3)) * 255).astype(np.uint8)).save(src / f"p{i:02d}.png")
    out = tmp_path / "out"
    res = synth.synthesize([str(src)], out, synth.SynthConfig(size=16, mode="partial", seed=0))
    assert res["faces"] + len(res["skipped"]) == 12 and res["skipped"]  # some faces were too small
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    for real, fake in zip(rows[::2], rows[1::2]):
        a, b = (np.asarray(Image.open(out / r["path"])) for r in (real, fake))
        assert not np.array_equal(a, b)
