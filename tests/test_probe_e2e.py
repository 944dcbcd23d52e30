"""End to end on real clips: synth -> probe fit -> scan --detector probe -> eval / separability.

Real MTCNN on the bundled real clips; a small randomly initialised ResNet-18
(torchvision format, 64 px crops) stands in for an SSL backbone to stay fast.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from scanner.cli import main as dfscan

DATA = Path(__file__).resolve().parent / "data"
CLIPS = [DATA / "d1.mp4", DATA / "d2.mp4", DATA / "d18.mp4"]
pytestmark = pytest.mark.skipif(not all(p.is_file() for p in CLIPS), reason="tests/data clips missing")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    pytest.importorskip("facenet_pytorch")
    root = tmp_path_factory.mktemp("e2e")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / "r18.pth")
    inputs = [str(p) for p in CLIPS] + [str(DATA / "multiface.jpg")]
    assert dfscan(["synth", *inputs, "--out", str(root / "sbi"), "--frames", "4", "--size", "128"]) == 0
    assert dfscan(["probe", "fit", str(root / "sbi"), "--backbone", "torchvision", "--backbone-weights",
                   str(root / "r18.pth"), "--arch", "resnet18", "--size", "64", "--out", str(root / "probe"),
                   "--cache", str(root / "cache"), "--heldout", "0.25", "--quiet"]) == 0
    return root


def test_synth_on_real_clips(work):
    rows = (work / "sbi" / "manifest.csv").read_text().splitlines()[1:]
    assert len(rows) >= 2 * 10  # 3 clips x 4 frames + a photo, most with a face
    assert {r.split(",")[1] for r in rows} == {"real", "fake"}


def test_probe_card(work):
    card = json.loads((work / "probe" / "card.json").read_text())
    assert card["backbone"]["arch"] == "resnet18" and card["input"]["size"] == 64
    assert 0.0 <= card["threshold"] <= 1.0
    assert card["training"]["crops"]["train"] > 0 and card["training"]["crops"]["heldout"] > 0


def test_scan_with_probe(work):
    out = work / "scan.jsonl"
    assert dfscan(["scan", str(CLIPS[0]), str(CLIPS[1]), "--detector", "probe", "--weights", str(work / "probe"),
                   "--frames", "4", "--out", str(out), "--no-progress"]) in (0, 3)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["detector"] == "probe" and r["verdict"] in ("real", "fake")
        assert 0.0 <= r["score"] <= 1.0
    # eval reads the scan's rows
    (work / "clips.csv").write_text("path,label\n" + "".join(f"{p},real\n" for p in CLIPS[:2]))
    assert dfscan(["eval", str(work / "clips.csv"), "--from-jsonl", str(out), "--out", str(work / "ev1.json")]) == 0
    res = json.loads((work / "ev1.json").read_text())
    assert res["overall"]["n"] == 2 and res["overall"]["auc"] is None  # one class only


def test_eval_and_separability_on_chips(work):
    assert dfscan(["eval", str(work / "sbi"), "--detector", "probe", "--weights", str(work / "probe"),
                   "--out", str(work / "ev.json"), "--quiet"]) == 0
    res = json.loads((work / "ev.json").read_text())
    n = len((work / "sbi" / "manifest.csv").read_text().splitlines()) - 1
    assert res["overall"]["n"] + res["excluded"] == n and res["overall"]["auc"] is not None
    assert dfscan(["separability", str(work / "sbi"), "--detector", "probe", "--weights", str(work / "probe"),
                   "--out", str(work / "sep.json"), "--cache", "", "--quiet"]) == 0
    sep = json.loads((work / "sep.json").read_text())
    # (accuracy >= 0.5 always holds: cluster names are swapped below 0.5.) The reported
    # numbers must agree with each other and cover every chip with a face.
    assert sep["feature_dim"] == 512 and sep["n_fake"] + sep["n_real"] == sep["n"] > 0
    assert sep["n"] == res["overall"]["n"]  # the same chips eval scored
    assert sep["accuracy"] == pytest.approx((sep["tpr"] * sep["n_fake"] + sep["tnr"] * sep["n_real"]) / sep["n"])
    assert (work / "sep.png").is_file() and (work / "ev.png").is_file()
