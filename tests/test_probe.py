"""Linear probe: fitting, group split, detector directory, feature cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torchvision

from engines.backbones import create_backbone, normalize
from engines.detectors.probe import load_probe, save_probe
from engines.errors import WeightsError
from engines.registry import create_detector
from scanner.research.probe import fit_probe, group_split

torch.set_num_threads(1)


def _blobs(seed=0, n_groups=40, per_group=5, d=16):
    """Per-group clusters of frames; class decided by the group; linearly separable
    (feature 0 is in [1.5, 2.5] for fakes, [-2.5, -1.5] for reals, others are noise)."""
    rng = np.random.default_rng(seed)
    y_g = np.arange(n_groups) % 2
    centres = rng.normal(size=(n_groups, d))
    centres[:, 0] = np.where(y_g == 1, 2.0, -2.0) + rng.uniform(-0.3, 0.3, n_groups)
    X = np.repeat(centres, per_group, 0) + 0.3 * rng.normal(size=(n_groups * per_group, d))
    X[:, 0] = np.clip(X[:, 0], np.repeat(np.where(y_g == 1, 1.5, -2.5), per_group),
                      np.repeat(np.where(y_g == 1, 2.5, -1.5), per_group))
    groups = np.repeat(np.array([f"v{i}" for i in range(n_groups)], object), per_group)
    return X, np.repeat(y_g, per_group), groups


def test_group_split_keeps_groups_apart():
    X, y, g = _blobs()
    tr, te = group_split(y, g, 0.3, 0)
    assert not set(g[tr]) & set(g[te])
    assert set(y[tr]) == set(y[te]) == {0, 1}
    assert len(tr) + len(te) == len(y)


def test_separable_features_give_perfect_probe():
    X, y, g = _blobs()
    fit = fit_probe(X, y, g)
    assert fit.heldout_frames["auc"] == 1.0 and fit.heldout_frames["eer"] == 0.0
    assert fit.heldout_videos["acc"] == 1.0
    # the folded weights reproduce the sklearn pipeline's decisions on raw features
    p = 1 / (1 + np.exp(-(X @ fit.weight + fit.bias)))
    assert np.mean((p >= 0.5) == y) > 0.98
    assert 0.0 <= fit.threshold <= 1.0
    assert {r["C"] for r in fit.selection} == {1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0}


def test_shuffled_labels_give_chance():
    X, y, g = _blobs(n_groups=200, per_group=2)
    rng = np.random.default_rng(1)
    y_g = rng.permutation(y[::2])  # labels independent of the features, still per group
    ys = np.repeat(y_g, 2)
    accs = [fit_probe(X, ys, g, seed=s).heldout_frames["auc"] for s in range(3)]
    assert 0.35 < float(np.mean(accs)) < 0.65


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bb") / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def _save(tmp_path, r18_file, thr=0.37):
    model, spec = create_backbone("torchvision", r18_file, "resnet18", size=64)
    w = torch.randn(512)
    save_probe(tmp_path / "probe", model, spec, r18_file, w, 0.25, thr, {"training": {"note": "test"}})
    return model, spec, w


def test_probe_directory_round_trip(tmp_path, r18_file):
    model, spec, w = _save(tmp_path, r18_file)
    det = create_detector("probe", tmp_path / "probe")
    assert det.threshold == pytest.approx(0.37) and det.spec.template == spec.template
    x = torch.rand(3, 3, 64, 64) * 255
    with torch.no_grad():
        ref = model(normalize(x, spec)) @ w + 0.25
        assert torch.allclose(det(x), ref, atol=1e-4)
        # Same backbone and weights; a few float32 ulps apart (features up to ~2.5), as the
        # normalisation's op order or oneDNN's kernel choice may differ: 1e-6 failed in CI.
        assert torch.allclose(det.embed(x), model(normalize(x, spec)), rtol=1e-5, atol=1e-5)
    assert det.p_fake(det(x)).shape == (3,)
    assert "+" in det.weights_hash
    card = json.loads((tmp_path / "probe" / "card.json").read_text())
    assert card["backbone"]["source"] == "torchvision" and card["backbone"]["feature_dim"] == 512


def test_probe_weights_hash_is_of_the_bytes_loaded(tmp_path, r18_file, monkeypatch):
    # As load_weights before f2b2212: the head's file was read to load it and read again to
    # hash it, so a probe rewritten in between put another probe's hash in every row.
    import hashlib
    import os

    import engines.detectors.probe as probe

    _save(tmp_path, r18_file)
    head = tmp_path / "probe" / probe.WEIGHTS
    loaded = hashlib.sha256(head.read_bytes()).hexdigest()[:16]
    _save(tmp_path / "other", r18_file)
    check = probe.check_finite

    def replace_after_load(model, source):  # between the load and the old second read
        check(model, source)
        os.replace(tmp_path / "other" / "probe" / probe.WEIGHTS, head)

    monkeypatch.setattr(probe, "check_finite", replace_after_load)
    det = create_detector("probe", tmp_path / "probe")
    assert det.weights_hash.split("+")[0] == loaded


def test_probe_weights_not_written_with_the_card_are_refused(tmp_path, r18_file, monkeypatch):
    """A fit stopped between its two writes (weights, then card) left new weights under the
    old card and its threshold: the pair loaded without a word. The card names its weights."""
    import engines.detectors.probe as probe

    _save(tmp_path, r18_file, thr=0.37)
    _save(tmp_path / "new", r18_file, thr=0.8)
    os.replace(tmp_path / "new" / "probe" / probe.WEIGHTS, tmp_path / "probe" / probe.WEIGHTS)
    with pytest.raises(WeightsError, match="not the file card.json was written with"):
        create_detector("probe", tmp_path / "probe")
    card = json.loads((tmp_path / "probe" / "card.json").read_text())
    del card["probe_weights_sha256"]  # a card written before the field: still loads
    (tmp_path / "probe" / "card.json").write_text(json.dumps(card))
    assert create_detector("probe", tmp_path / "probe").threshold == pytest.approx(0.37)


def test_probe_backbone_is_checked_on_the_bytes_it_is_built_from(tmp_path, r18_file, monkeypatch):
    # The backbone file was hashed by one read and built from another: a file replaced in
    # between ran unchecked under the probe (rows naming the probe, scores of another model).
    import os
    import shutil

    import engines.detectors.probe as probe

    mine = shutil.copy(r18_file, tmp_path / "r18.pth")
    _save(tmp_path, mine)
    torch.manual_seed(5)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "other.pth")
    build = probe.create_backbone

    def replaced_before_the_build(source, path, *args):
        os.replace(tmp_path / "other.pth", path)
        return build(source, path, *args)

    monkeypatch.setattr(probe, "create_backbone", replaced_before_the_build)
    with pytest.raises(WeightsError, match="hash"):
        create_detector("probe", tmp_path / "probe")


def test_probe_needs_directory_and_matching_backbone(tmp_path, r18_file):
    with pytest.raises(WeightsError, match="needs a weights file"):
        create_detector("probe")
    _save(tmp_path, r18_file)
    other = tmp_path / "other.pth"
    torch.manual_seed(5)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    with pytest.raises(WeightsError, match="hash"):
        load_probe(tmp_path / "probe", backbone_weights=other)
    with pytest.raises(WeightsError, match="directory"):
        create_detector("probe", r18_file)


def test_backbone_found_next_to_card(tmp_path, r18_file):
    _save(tmp_path, r18_file)
    card_path = tmp_path / "probe" / "card.json"
    card = json.loads(card_path.read_text())
    card["backbone"]["weights"] = "/nonexistent/elsewhere/r18.pth"
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="not found"):
        load_probe(tmp_path / "probe")
    (tmp_path / "probe" / "r18.pth").write_bytes(r18_file.read_bytes())
    assert load_probe(tmp_path / "probe").linear.weight.shape == (1, 512)


def _face_set(root, n=12, size=96):
    """Images with known landmarks: 'fake' ones carry a bright patch on the face."""
    from PIL import Image

    rng = np.random.default_rng(0)
    lm = np.array([[34, 40], [62, 40], [48, 55], [37, 70], [59, 70]], np.float32)
    rows = ["path,label,group,landmarks"]
    for i in range(n):
        img = rng.integers(60, 120, (size, size, 3)).astype(np.uint8)
        label = i % 2
        if label:
            img[35:75, 30:66] = 230
        Image.fromarray(img).save(root / f"f{i}.png")
        rows.append(f"f{i}.png,{label},g{i // 2 if label else i // 2 + 100},"
                    + " ".join(f"{v:.1f}" for v in lm.reshape(-1)))
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root / "m.csv"


def test_embed_items_cached_and_fit(tmp_path, r18_file):
    from scanner.research.features import CropSource, backbone_embedder, embed_items
    from scanner.research.labelled import read_labelled

    items = read_labelled(_face_set(tmp_path))
    emb, _ = backbone_embedder("torchvision", r18_file, "resnet18", 64)
    fs = embed_items(items, emb, CropSource(), tmp_path / "cache")
    assert fs.X.shape == (12, 512) and list(fs.y) == [i % 2 for i in range(12)]
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 12
    calls = []
    emb.fn, orig = (lambda x: calls.append(1) or orig(x)), emb.fn
    again = embed_items(items, emb, CropSource(), tmp_path / "cache")
    assert not calls and np.array_equal(again.X, fs.X)  # served from the cache
    fit = fit_probe(fs.X, fs.y, fs.groups, fs.item, test_size=0.5)
    assert fit.heldout_videos["auc"] == 1.0  # the bright patch is obvious even to a random ResNet


def test_penultimate_features_of_a_plain_detector():
    from scanner.research.features import detector_embedder

    emb, det = detector_embedder("test_tiny")
    x = torch.rand(4, 3, 64, 64) * 255
    feats = emb(x)
    with torch.no_grad():
        ref = det.body[:-1](det.normalize(x))  # everything before the final nn.Linear
    assert feats.shape == (4, 16) and np.allclose(feats, ref.numpy(), atol=1e-6)
