"""Self-blended fakes: labels, groups, landmarks and the blended-region boxes."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from scanner.research import synth
from scanner.faces import Faces
from scanner.research.labelled import read_labelled

LM = np.array([[100, 110], [156, 110], [128, 140], [106, 170], [150, 170]], np.float32)


def _texture(seed=0, size=256):
    rng = np.random.default_rng(seed)
    return rng.integers(40, 200, (size, size, 3)).astype(np.uint8)


@pytest.mark.parametrize("mode", ["global", "partial"])
@pytest.mark.parametrize("seed", range(4))
def test_self_blend_changes_only_inside_box(mode, seed):
    img = _texture(seed)
    fake, (x0, y0, x1, y1), ratio = synth.self_blend(img, LM, mode, np.random.default_rng(seed))
    assert fake.shape == img.shape and fake.dtype == np.uint8 and ratio in synth.BLEND_RATIOS
    assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(fake[outside], img[outside])
    diff = np.abs(fake.astype(int) - img.astype(int)).sum(-1)
    changed = np.argwhere(diff > 0)
    # the box is tight: changed pixels touch each of its edges
    assert (changed[:, 1].min(), changed[:, 1].max() + 1) == (x0, x1)
    assert (changed[:, 0].min(), changed[:, 0].max() + 1) == (y0, y1)
    assert diff[y0:y1, x0:x1].mean() > 2
    if mode == "global":  # the whole face is blended: every landmark lies in the box
        assert np.all((LM >= [x0, y0]) & (LM < [x1, y1]))


def test_partial_window_is_smaller_than_face():
    img = _texture()
    areas = {}
    for mode in ("global", "partial"):
        boxes = [synth.self_blend(img, LM, mode, np.random.default_rng(s))[1] for s in range(6)]
        areas[mode] = np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes])
    assert areas["partial"] < 0.8 * areas["global"]


def test_face_outline_covers_landmarks():
    import cv2

    hull = synth.face_outline(LM).astype(np.float32)
    for p in LM:
        assert cv2.pointPolygonTest(hull, (float(p[0]), float(p[1])), False) >= 0
    w = hull[:, 0].max() - hull[:, 0].min()
    assert 1.2 * 56 < w < 2.5 * 56  # wider than the eyes, not the whole image


class _StubDetector:
    """Stands in for MTCNN: one face at a known place in every frame."""

    def __init__(self, **kw):
        pass

    def detect(self, frames):
        box = np.array([[60, 50, 196, 220]], np.float32)
        return [Faces(box, np.ones(1, np.float32), LM[None].copy()) for _ in frames]


def _three_stills(tmp_path, monkeypatch) -> tuple:
    """(src, out) folders: three textured stills, faces found by the stub detector."""
    monkeypatch.setattr("scanner.faces.FaceDetector", _StubDetector)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_texture(i)).save(src / f"p{i}.png")
    return src, tmp_path / "out"


def test_synth_groups_one_persons_files_together(tmp_path, monkeypatch):
    """Groups are people as `dfscan train` splits them: by source file, a MEAD actor's clips
    fell on both sides of a `probe fit` split (and flattered its held-out numbers)."""
    src, out = _three_stills(tmp_path, monkeypatch)
    for old, new in (("p0", "M030_front_happy_level1_001"), ("p1", "M030_front_sad_level2_003")):
        (src / f"{old}.png").rename(src / f"{new}.png")
    res = synth.synthesize([str(src)], out, synth.SynthConfig(size=128, context=1.5, seed=3))
    assert res["sources"] == 3
    groups = {r["path"].split("/")[1][:4]: r["group"] for r in csv.DictReader(open(out / "manifest.csv"))}
    assert groups["M030"] == "mead:M030" and groups["p2_f"] == "src:p2"
    assert len(set(groups.values())) == 2


def test_synthesize_writes_labelled_manifest(tmp_path, monkeypatch):
    src, out = _three_stills(tmp_path, monkeypatch)
    res = synth.synthesize([str(src)], out, synth.SynthConfig(size=128, context=1.5, seed=3))
    assert res == {"faces": 3, "rows": 6, "sources": 3, "skipped": []}
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["label"] for r in rows] == ["real", "fake"] * 3
    assert {r["blend"].split(":")[0] for r in rows[1::2]} == {"global", "partial"}
    for real, fake in zip(rows[::2], rows[1::2]):
        assert real["group"] == fake["group"] and real["landmarks"] == fake["landmarks"]
        assert real["subset"] == fake["subset"] == "sbi-" + fake["blend"].split(":")[0]
        a = np.asarray(Image.open(out / real["path"])).astype(int)
        b = np.asarray(Image.open(out / fake["path"])).astype(int)
        x0, y0, x1, y1 = map(int, fake["box"].split())
        outside = np.ones(a.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert a.shape == (128, 128, 3) and np.array_equal(a[outside], b[outside])
        assert np.abs(a - b)[y0:y1, x0:x1].sum() > 0
    items = read_labelled(out)  # the folder's manifest.csv is used
    assert [it.label for it in items] == [0, 1] * 3
    lm = items[0].landmarks
    # landmarks follow the chip: centre of box -> centre of the chip, scale 128 / (1.5 * 170)
    s = 128 / (1.5 * 170)
    assert np.allclose(lm, (LM - [128, 135]) * s + 64, atol=0.01)


def test_synth_of_a_non_utf8_file_name(tmp_path):
    """cv2.imwrite crashed the process (SIGSEGV) on a chip named after a source whose file name
    is not UTF-8 (Latin-1 bytes); the manifest could not hold that name either."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(_texture()).save(src / os.fsdecode(b"caf\xe9.png"), format="PNG")
    code = ("import sys, numpy as np, scanner.faces; from scanner.faces import Faces; "
            "from scanner.research import synth\n"
            "class Stub:\n    def __init__(self, **kw): pass\n"
            "    def detect(self, frames): return [Faces(np.array([[60, 50, 196, 220]], np.float32), "
            f"np.ones(1, np.float32), np.array({LM.tolist()}, np.float32)[None]) for _ in frames]\n"
            "scanner.faces.FaceDetector = Stub\n"
            "print(synth.synthesize([sys.argv[1]], sys.argv[2], synth.SynthConfig(size=128))['faces'])")
    r = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "out")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "1", (r.returncode, r.stderr[-500:])
    items = read_labelled(tmp_path / "out")
    assert [it.label for it in items] == [0, 1] and all(it.path.is_file() for it in items)
    assert os.fsencode(items[0].path.name).startswith(b"caf\xe9_")


def test_an_interrupted_synth_keeps_a_manifest_of_the_pairs_it_wrote(tmp_path, monkeypatch):
    """The manifest was written only at the end: Ctrl-C after hours left chips without one,
    or, in a folder used before, the older run's manifest naming chips since overwritten."""
    src, out = _three_stills(tmp_path, monkeypatch)
    synth.synthesize([str(src)], out, synth.SynthConfig(size=64, seed=1))  # an earlier run there
    faces = synth._faces

    def interrupted_at_the_third(path, cfg, detector):
        if path.name == "p2.png":
            raise KeyboardInterrupt
        return faces(path, cfg, detector)

    monkeypatch.setattr(synth, "_faces", interrupted_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        synth.synthesize([str(src)], out, synth.SynthConfig(size=128, seed=3))
    items = read_labelled(out)
    assert [(it.path.parent.name, it.path.name.split("_")[0]) for it in items] == \
        [("real", "p0"), ("fake", "p0"), ("real", "p1"), ("fake", "p1")]
    assert all(Image.open(it.path).size == (128, 128) for it in items)  # this run's chips
