"""Identity groups of research sets: one person never on both sides of a split."""
from __future__ import annotations

import csv

from PIL import Image

from scanner.research import synth
from scanner.research.labelled import read_labelled
from test_synth import _StubDetector, _texture


def _groups(folder) -> dict[str, str]:
    """path -> group of a real/ + fake/ folder read without a manifest."""
    return {it.path.relative_to(folder).as_posix(): it.group for it in read_labelled(folder)}


def _touch(root, *names) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")


def test_synth_identity_folder_puts_one_folders_clips_in_one_group(tmp_path, monkeypatch):
    """--identity folder: the two stills of alice/ share a group; by name they were two."""
    monkeypatch.setattr("scanner.faces.FaceDetector", _StubDetector)
    for i, rel in enumerate(("alice/a.png", "alice/b.png", "bob/c.png")):
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_texture(i)).save(tmp_path / "src" / rel)
    by = {}
    for mode in ("name", "folder"):
        out = tmp_path / mode
        synth.synthesize([str(tmp_path / "src")], out, synth.SynthConfig(size=128, context=1.5, identity=mode))
        rows = list(csv.DictReader(open(out / "manifest.csv", encoding="utf-8")))
        by[mode] = {r["path"].split("/")[1][:1]: r["group"] for r in rows}
    assert len(set(by["name"].values())) == 3
    assert by["folder"]["a"] == by["folder"]["b"] != by["folder"]["c"]


def test_synth_cli_takes_trains_identity_option():
    import argparse

    from scanner.research.commands import add_synth_parser

    sub = argparse.ArgumentParser().add_subparsers()
    p = add_synth_parser(sub)
    assert p.parse_args(["x", "--out", "o"]).identity == "name"
    assert p.parse_args(["x", "--out", "o", "--identity", "folder"]).identity == "folder"


def test_folder_fake_joins_the_real_its_name_extends(tmp_path):
    _touch(tmp_path, "real/a.mp4", "real/a_b.mp4", "real/c.mp4", "fake/a_blend.png",
           "fake/a_b_x.png", "fake/c.mp4", "fake/z.png")
    g = _groups(tmp_path)
    assert g["fake/a_blend.png"] == g["real/a.mp4"]
    assert g["fake/a_b_x.png"] == g["real/a_b.mp4"] != g["real/a.mp4"]  # the longest real name
    assert g["fake/c.mp4"] == g["real/c.mp4"]
    assert g["fake/z.png"] not in {g[k] for k in g if k.startswith("real/")}


def test_folder_of_synth_chips_groups_by_source(tmp_path):
    """synth's naming without its manifest: one source's chips and their fakes are one group."""
    _touch(tmp_path, "real/clip_f00000_00000.png", "real/clip_f00008_00001.png",
           "real/other_f00000_00002.png", "fake/clip_f00000_00000_global.png",
           "fake/clip_f00008_00001_partial.png", "fake/other_f00000_00002_global.png")
    g = _groups(tmp_path)
    clip = {v for k, v in g.items() if "clip" in k}
    other = {v for k, v in g.items() if "other" in k}
    assert len(clip) == 1 and len(other) == 1 and clip != other


def test_folder_matching_stays_in_one_sub_folder(tmp_path):
    _touch(tmp_path, "real/x/a.mp4", "real/y/a.mp4", "fake/x/a_1.mp4")
    g = _groups(tmp_path)
    assert g["fake/x/a_1.mp4"] == g["real/x/a.mp4"] != g["real/y/a.mp4"]
