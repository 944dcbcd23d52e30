"""MTCNN's nets on ONNX Runtime: parity with facenet-pytorch's nets, same faces, cached export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA
from engines.errors import EngineError, EngineUnavailable
from scanner.decode import Frame
from scanner.faces import FaceDetector
from scanner.mtcnn_engine import OrtNet, exported_net, net_parity, resolve_face_engine
from scanner.region import same_faces

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    cache = tmp_path_factory.mktemp("mtcnn-cache")
    eager = FaceDetector(max_side=4096, min_face=30, max_faces=20)
    ort = FaceDetector(max_side=4096, min_face=30, max_faces=20)
    from scanner.mtcnn_engine import use_face_engine

    assert use_face_engine(ort.mtcnn, "onnxruntime", "cpu", cache) == "onnxruntime"
    return eager, ort, cache


def test_onnx_nets_match_facenet_nets(detectors):
    eager, ort, _ = detectors
    assert all(isinstance(getattr(ort.mtcnn, n), OrtNet) for n in ("pnet", "rnet", "onet"))
    diffs = net_parity(eager.mtcnn, ort.mtcnn)
    assert set(diffs) == {"pnet", "rnet", "onet"}
    assert max(diffs.values()) < 1e-4, diffs


def test_onnx_cascade_finds_the_same_faces_on_a_real_photo(detectors):
    eager, ort, _ = detectors
    img = np.asarray(Image.open(DATA / "multiface.jpg").convert("RGB"))
    a, b = eager.detect([Frame(0, 0.0, img)])[0], ort.detect([Frame(0, 0.0, img)])[0]
    assert len(a) >= 4 and same_faces(a, b, iou=0.95)
    assert np.allclose(a.probs, b.probs, atol=1e-3)
    assert np.abs(a.landmarks - b.landmarks).max() < 0.5  # pixels


def test_export_is_cached_and_a_corrupt_file_rebuilt(detectors):
    eager, _, cache = detectors
    path = exported_net(eager.mtcnn.rnet, "rnet", cache)
    assert exported_net(eager.mtcnn.rnet, "rnet", cache) == path
    stamp = path.stat().st_mtime_ns
    path.write_bytes(b"garbage")
    rebuilt = exported_net(eager.mtcnn.rnet, "rnet", cache)
    assert rebuilt.stat().st_size > 1000 and rebuilt.stat().st_mtime_ns != stamp
    OrtNet(rebuilt)  # loads


def test_face_engine_names():
    assert resolve_face_engine("auto", "cpu") == "eager"
    assert resolve_face_engine("onnxruntime", "cpu") == "onnxruntime"
    with pytest.raises(EngineUnavailable):
        resolve_face_engine("onnxruntime", "cuda")
    with pytest.raises(EngineError):
        resolve_face_engine("tensorflow", "cpu")


def test_export_key_follows_the_dfscan_version_and_export_code(detectors, monkeypatch, tmp_path):
    import engines.cache
    import scanner.mtcnn_engine as me

    eager, _, _ = detectors
    path = exported_net(eager.mtcnn.onet, "onet", tmp_path)
    monkeypatch.setattr(engines.cache, "dfscan_version", lambda: "9.9.9")  # an upgrade
    assert exported_net(eager.mtcnn.onet, "onet", tmp_path).parent != path.parent
    monkeypatch.undo()
    changed = tmp_path / "mtcnn_engine.py"  # the export code edited, same version
    changed.write_text(Path(me.__file__).read_text() + "\n# changed\n")
    monkeypatch.setattr(me, "__file__", str(changed))
    assert exported_net(eager.mtcnn.onet, "onet", tmp_path).parent != path.parent


def test_unwritable_cache_still_runs_the_onnx_nets(tmp_path):
    from scanner.mtcnn_engine import use_face_engine

    blocker = tmp_path / "file"
    blocker.write_text("")  # a cache folder below a file cannot be made, even as root
    ort = FaceDetector(max_side=4096, min_face=30, max_faces=20)
    # Was an error (the cache's OSError) that stopped the scan.
    assert use_face_engine(ort.mtcnn, "onnxruntime", "cpu", blocker / "cache") == "onnxruntime"
    img = np.asarray(Image.open(DATA / "multiface.jpg").convert("RGB"))
    assert len(ort.detect([Frame(0, 0.0, img)])[0]) >= 4


def test_export_key_follows_the_nets_code(detectors, monkeypatch, tmp_path):
    """The ONNX graph is traced from scanner/mtcnn_nets.py's forward: a fix there (same
    dfscan version, as an editable install keeps) kept serving the file the older code exported."""
    import scanner.mtcnn_nets as nets

    eager, _, _ = detectors
    path = exported_net(eager.mtcnn.rnet, "rnet", tmp_path)
    changed = tmp_path / "mtcnn_nets.py"
    changed.write_text(Path(nets.__file__).read_text() + "\n# _flat's order fixed\n")
    monkeypatch.setattr(nets, "__file__", str(changed))
    assert exported_net(eager.mtcnn.rnet, "rnet", tmp_path).parent != path.parent


def test_onnx_nets_that_differ_from_facenets_are_refused(tmp_path, monkeypatch):
    # The ONNX nets were loaded with no parity check (every detector engine has one): a
    # cached file that computes something else (edited, replaced with a valid checksum)
    # ran, and MTCNN found other faces with no error.
    import copy

    import torch

    from scanner import mtcnn_engine

    export = mtcnn_engine._export

    def wrong_export(net, name, path):
        if name == "onet":
            net = copy.deepcopy(net)
            with torch.no_grad():
                next(net.parameters()).mul_(-1)  # first conv's weights sign-flipped
        export(net, name, path)

    monkeypatch.setattr(mtcnn_engine, "_export", wrong_export)
    det = FaceDetector()
    nets = (det.mtcnn.pnet, det.mtcnn.rnet, det.mtcnn.onet)
    with pytest.raises(EngineError, match="onet .*differ|differ.*onet"):
        mtcnn_engine.use_face_engine(det.mtcnn, "onnxruntime", "cpu", tmp_path)
    assert (det.mtcnn.pnet, det.mtcnn.rnet, det.mtcnn.onet) == nets  # torch nets kept


def test_the_checked_bytes_run_not_the_file_by_name(detectors):
    """The cache checked the ONNX file's hash, then OrtNet opened the file again by name: a
    file swapped in between ran under the check of the one before (as detector engines)."""
    from scanner.mtcnn_engine import exported_model

    eager, _, cache = detectors
    art = exported_model(eager.mtcnn.rnet, "rnet", cache)
    art.path.write_bytes(b"not the checked model")
    net = OrtNet(art)
    x = torch.randn(3, 3, 24, 24)
    for a, b in zip(net(x), eager.mtcnn.rnet(x)):
        assert torch.allclose(a, b, atol=1e-4)
