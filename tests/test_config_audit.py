"""Settings that were taken and then silently not applied (config audit)."""
from __future__ import annotations

import numpy as np
import pytest

from scanner import faces as faces_mod
from scanner.cli import build_parser


def _fake_cascade(probs):
    """A stand-in for MTCNN's cascade: one 100-px face per probability, kept as O-Net keeps
    them (``score > thresholds[2]``)."""
    def detect(mtcnn, images, minsize, thresholds, **kw):
        kept = [p for p in probs if p > thresholds[2]]
        boxes = np.array([[10, 10, 110, 110, p] for p in kept], np.float32).reshape(-1, 5)
        return [(boxes, np.zeros((len(kept), 5, 2), np.float32))] * len(images)
    return detect


@pytest.mark.parametrize("face_prob, kept", [(0.5, [0.97, 0.6]), (0.9, [0.97]), (0.95, [0.97])])
def test_face_prob_below_onet_threshold_keeps_those_faces(monkeypatch, face_prob, kept):
    # face_prob 0.5 kept exactly the faces of 0.9: O-Net's fixed 0.9 cut ran first.
    det = faces_mod.FaceDetector(min_prob=face_prob)
    monkeypatch.setattr(faces_mod.mtcnn_cascade, "detect", _fake_cascade([0.97, 0.6]))
    found = det._detect_batch(np.zeros((1, 200, 200, 3), np.uint8), 1.0)[0]
    assert sorted(map(float, found.probs), reverse=True) == pytest.approx(kept)


def test_face_prob_default_keeps_the_dfdc_thresholds():
    assert faces_mod.FaceDetector().thresholds == (0.7, 0.8, 0.9)


def test_serve_refuses_an_unknown_log_level(capsys):
    parser = build_parser("serve")
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["serve", "--config", "x.yaml", "--log-level", "verbose"])
    assert e.value.code == 2 and "--log-level" in capsys.readouterr().err
    assert parser.parse_args(["serve", "--config", "x.yaml", "--log-level", "debug"]).log_level == "DEBUG"


def test_settings_a_scan_does_not_apply_are_said(tmp_path, caplog):
    """--ray dropped --workers to 1 per actor without a word, and ray_* settings without --ray
    were ignored silently."""
    import logging

    from scanner.config import build_config

    assert build_config(None, {}).unused() == []
    assert "workers 4 is not used with ray" in build_config(None, {"ray": "local", "workers": 4}).unused()[0]
    assert "not used without ray" in build_config(None, {"ray_actors": 3}).unused()[0]
    from scanner.cli import main
    from conftest import DATA

    with caplog.at_level(logging.WARNING, logger="dfscan"):
        assert main(["scan", str(DATA / "d1.mp4"), "--detector", "test_tiny", "--frames", "2", "--no-progress",
                     "--ray-actors", "2", "--out", str(tmp_path / "r.jsonl")]) == 0
    assert "not used without ray" in caplog.text


def test_eval_searches_images_with_the_scans_face_settings(tmp_path, monkeypatch):
    """eval scored images at det_max_side 960 and face_prob 0.9 whatever the flags said (the
    videos beside them followed the flags)."""
    import scanner.research.features as features
    from conftest import DATA
    from scanner.research.commands import main as research

    seen = []

    class Source(features.CropSource):
        def __init__(self, cfg):
            seen.append(cfg)
            super().__init__(cfg)

    monkeypatch.setattr(features, "CropSource", Source)
    labels = tmp_path / "m.csv"
    labels.write_text(f"path,label\n{DATA / 'multiface.jpg'},real\n{DATA / 'd1.mp4'},fake\n")
    assert research(["eval", str(labels), "--detector", "test_tiny", "--frames", "2", "--engine", "eager",
                     "--det-max-side", "480", "--quiet", "--out", str(tmp_path / "e.json")]) == 0
    assert seen and seen[0].max_side == 480 and seen[0].face_prob == 0.9
    assert Source(features.CropConfig(face_prob=0.5)).detector().min_prob == 0.5
