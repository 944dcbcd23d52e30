"""ADM (CADDM) detector: checkpoint compatibility, shapes, anchors, box mapping.

Real architectures are only built on the meta device (keys/shapes) except one
ResNet-34 load; forward passes use the tiny ``test_adm`` model.
"""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from engines.detectors.adm import BACKBONES, build_adm
from engines.detectors.adm.anchors import (ADM_PRIORS, decode, decode_to_crop_xyxy,
                                           detect_boxes, prior_boxes)
from engines.detectors.adm.boxes import map_boxes_to_frame
from engines.detectors.adm.checkpoint import read_checkpoint
from engines.detectors.adm.manifest import VARIANTS, load_manifest, model_keys
from engines.detectors.adm.module import ADMDetector
from engines.detectors.adm.template import CADDM_TEMPLATE_224, similarity_to_template
from engines.errors import WeightsError
from engines.registry import create_detector

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return create_detector("test_adm")


def _save(path, sd, prefix="", extra=None, **top):
    net = {prefix + k: v for k, v in sd.items()}
    net.update(extra or {})
    torch.save({"network": net, **top}, path)
    return path


# ----------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_manifest_matches_model(name):
    man = load_manifest(name)
    assert man["keys"] == model_keys(name)
    keys = dict((k, tuple(s)) for k, s in man["keys"])
    c = VARIANTS[name][2]
    # Facts read off the original code, independent of this implementation.
    assert keys["fc.weight"] == (2, c)
    assert keys["adm.adm_extra_layers.0.0.conv1.weight"] == (c, c, 1, 1)
    assert keys["adm.adm_extra_layers.1.0.downsample.0.weight"] == (c, c, 3, 3)
    assert keys["adm.adm_extra_layers.3.conv2.weight"] == (c, c, 1, 1)
    assert keys["adm.multi_scale_detection_module.ms_dets.0.weight"] == (8, c, 3, 3)
    assert keys["adm.multi_scale_detection_module.ms_cls.3.weight"] == (4, c, 1, 1)
    assert "adm.adm_extra_layers.3.conv1.bias" in keys and "adm.adm_extra_layers.3.bn1.weight" not in keys
    assert [k for k, _ in man["optional"]][0].endswith("fc.weight")


def test_backbone_layouts_match_reference_numbers():
    r34 = dict((k, tuple(s)) for k, s in load_manifest("adm_resnet34")["keys"])
    assert r34["base_model.conv1.weight"] == (64, 3, 7, 7)
    assert r34["base_model.layer3.5.conv2.weight"] == (256, 256, 3, 3)
    assert r34["base_model.layer4.0.downsample.0.weight"] == (512, 256, 1, 1)
    # EfficientNet-B3/B4 stems, heads, block counts and SE widths.
    for name, stem, head, blocks, last in (("adm_efficientnet_b3", 40, 1536, 26, 384),
                                           ("adm_efficientnet_b4", 48, 1792, 32, 448)):
        keys = dict((k, tuple(s)) for k, s in load_manifest(name)["keys"])
        assert keys["base_model._conv_stem.weight"] == (stem, 3, 3, 3)
        assert keys["base_model._conv_head.weight"] == (head, last, 1, 1)
        n = 1 + max(int(k.split(".")[2]) for k in keys if k.startswith("base_model._blocks."))
        assert n == blocks
        assert "base_model._blocks.0._expand_conv.weight" not in keys  # expand ratio 1
        assert keys[f"base_model._blocks.{n - 1}._se_reduce.weight"] == (last // 4, last * 6, 1, 1)


def test_efficientnet_tf_same_padding_and_eps():
    bb = BACKBONES["efficientnet-b4"]
    with torch.device("meta"):
        m = bb()
    assert m._conv_stem.pad == (0, 1, 0, 1)  # stride 2, k3: the extra pixel goes right/bottom
    k5s2 = [b._depthwise_conv for b in m._blocks if b._depthwise_conv.stride == (2, 2)
            and b._depthwise_conv.kernel_size == (5, 5)]
    assert k5s2 and all(c.pad == (1, 2, 1, 2) for c in k5s2)
    assert all(b._bn1.eps == 1e-3 for b in m._blocks) and m._bn0.eps == 1e-3


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("prefix", ["", "module."])
def test_strict_load_original_format(tmp_path, tiny, prefix):
    sd = tiny.state_dict()
    imagenet = {prefix + "base_model.fc.weight": torch.randn(1000, 32),
                prefix + "base_model.fc.bias": torch.randn(1000)}
    path = _save(tmp_path / "epoch_3.pkl", sd, prefix, imagenet,
                 opt_state={"param_groups": [{"lr": 1e-3}], "state": {}}, epoch=3)
    loaded = create_detector("test_adm", weights=path)
    assert sorted(loaded.dropped_keys) == ["base_model.fc.bias", "base_model.fc.weight"]
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x = tiny.spec.example_input(2)
    with torch.no_grad():
        for a, b in zip(loaded(x), tiny(x)):
            assert torch.equal(a, b)


def test_resnet34_loads_checkpoint(tmp_path):
    src = build_adm("resnet34", random_init=True)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["base_model.layer1.0.bn1.running_var"].fill_(2.0)
    path = _save(tmp_path / "resnet34.pkl", sd, "module.", epoch=199)
    det = create_detector("adm_resnet34", weights=path)
    assert det.name == "adm_resnet34" and len(det.weights_hash) == 16
    assert torch.equal(det.state_dict()["base_model.layer1.0.bn1.running_var"], sd["base_model.layer1.0.bn1.running_var"])
    assert torch.equal(det.state_dict()["adm.adm_extra_layers.3.downsample.weight"],
                       sd["adm.adm_extra_layers.3.downsample.weight"])


@pytest.mark.parametrize("change, message", [
    ("unknown", "unexpected keys"),
    ("missing", "missing keys"),
    ("shape", "shape mismatches"),
])
def test_refuses_mismatched_keys(tmp_path, tiny, change, message):
    sd = dict(tiny.state_dict())
    if change == "unknown":
        sd["adm.extra_head.weight"] = torch.zeros(3)
    elif change == "missing":
        del sd["adm.multi_scale_detection_module.ms_cls.2.bias"]
    else:
        sd["fc.weight"] = torch.zeros(3, 32)
    path = _save(tmp_path / "bad.pkl", sd)
    with pytest.raises(WeightsError, match=message):
        create_detector("test_adm", weights=path)


class _Payload:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("unpickled!",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_refuses_pickled_objects(tmp_path, tiny):
    path = tmp_path / "evil.pkl"
    torch.save({"network": tiny.state_dict(), "epoch": _Payload()}, path)
    with pytest.raises(WeightsError, match="weights_only=True.*Unsupported global.*print"):
        create_detector("test_adm", weights=path)
    path2 = tmp_path / "plain.pkl"
    with open(path2, "wb") as f:
        pickle.dump({"network": {}}, f)
    with pytest.raises(WeightsError, match="refused"):
        read_checkpoint(path2)


def test_refuses_non_tensor_entries_and_mixed_prefix(tmp_path, tiny):
    sd = dict(tiny.state_dict())
    with pytest.raises(WeightsError, match="not named tensors"):
        read_checkpoint(_save(tmp_path / "a.pkl", {**sd, "fc.note": 3}))
    with pytest.raises(WeightsError, match="unexpected top-level"):
        read_checkpoint(_save(tmp_path / "b.pkl", sd, scheduler={"x": 1}))
    mixed = {("module." + k if i % 2 else k): v for i, (k, v) in enumerate(sd.items())}
    with pytest.raises(WeightsError, match="mixes"):
        create_detector("test_adm", weights=_save(tmp_path / "c.pkl", mixed))
    with pytest.raises(WeightsError, match="not found"):
        create_detector("test_adm", weights=tmp_path / "nope.pkl")


def test_missing_weights_message():
    with pytest.raises(WeightsError) as e:
        create_detector("adm_resnet34")
    msg = str(e.value)
    assert "--weights PATH" in msg and "resnet34.pkl" in msg and "megvii-research/CADDM" in msg
    with pytest.raises(WeightsError, match="efficientnet-b4.pkl"):
        build_adm("efficientnet-b4")


# ----------------------------------------------------------------------------- forward


def test_forward_shapes_and_input_contract(tiny):
    spec = tiny.spec
    assert (spec.size, spec.channel_order, spec.scale, spec.mean, spec.std) == (
        224, "BGR", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x = spec.example_input(3)
    with torch.no_grad():
        logits, loc, conf = tiny(x)
        # The network sees the crop in BGR order and raw 0..255 values.
        direct = tiny.network(x[:, [2, 1, 0]])
    assert logits.shape == (3, 2) and loc.shape == (3, 168, 4) and conf.shape == (3, 168, 2)
    assert torch.allclose(direct[0], logits)
    p = tiny.p_fake((logits, loc, conf))
    assert p.shape == (3,) and torch.allclose(p, torch.softmax(logits, -1)[:, 1])
    assert ((p > 0.01) & (p < 0.99)).all()  # calibrated test model does not saturate
    assert ADM_PRIORS.num_anchors == 168


def test_test_adm_is_deterministic(tiny):
    other = create_detector("test_adm")
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k


def test_extras_boxes(tiny):
    x = tiny.spec.example_input(2)
    with torch.no_grad():
        out = tiny(x)
    p = tiny.p_fake(out)
    tiny.score_threshold = 0.0
    try:
        ex = tiny.extras(out, p)
        assert len(ex) == 2
        for d in ex:
            boxes = np.array(d["artifact_boxes"])
            assert 1 <= len(boxes) <= tiny.top_k and boxes.shape[1] == 5
            assert (boxes[:, :4] >= 0).all() and (boxes[:, :4] <= 224).all()
            assert (boxes[:, 2] >= boxes[:, 0]).all() and (np.diff(boxes[:, 4]) <= 0).all()
        tiny.box_min_p_fake = 1.1  # no crop scores that high: no boxes
        assert all(d["artifact_boxes"] == [] for d in tiny.extras(out, p))
    finally:
        tiny.box_min_p_fake, tiny.score_threshold = 0.0, 0.5


# ----------------------------------------------------------------------------- anchors


def test_prior_boxes_layout():
    pri = prior_boxes()
    assert pri.shape == (168, 4)
    # First cell of the 7x7 map (step 32): centre 16 px, 40x80 and 80x40.
    assert torch.allclose(pri[0], torch.tensor([16, 16, 40, 80]) / 224)
    assert torch.allclose(pri[1], torch.tensor([16, 16, 80, 40]) / 224)
    # Second cell moves along the column (x) axis.
    assert torch.allclose(pri[2, :2], torch.tensor([48, 16]) / 224)
    # 5x5 map starts at index 98 with step 45; the last anchor is the whole crop.
    assert torch.allclose(pri[98], torch.tensor([22.5, 22.5, 80, 120]) / 224)
    assert torch.allclose(pri[-1], torch.tensor([0.5, 0.5, 1.0, 1.0]))


def test_decode_known_answers():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5]])
    loc = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, math.log(2) / 0.2, 0.0]]])
    got = decode(loc, priors)
    # Zero offsets give the anchor's corners.
    assert torch.allclose(got[0, 0], torch.tensor([0.4, 0.3, 0.6, 0.7]))
    # centre0 = 0.25 + 1 * 0.1 * 0.5, centre1 = 0.75 - 2 * 0.1 * 0.5, size0 doubled.
    assert torch.allclose(got[0, 1], torch.tensor([-0.2, 0.4, 0.8, 0.9]))
    # Authors' (y1, x1, y2, x2) -> crop (x1, y1, x2, y2) pixels, clipped to the crop.
    px = decode_to_crop_xyxy(loc, priors, 200)
    assert torch.allclose(px[0, 0], torch.tensor([60.0, 80.0, 140.0, 120.0]))
    assert torch.allclose(px[0, 1], torch.tensor([80.0, 0.0, 180.0, 160.0]))


def test_detect_boxes_nms_threshold_topk():
    priors = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.52, 0.5, 0.5, 0.5],
                           [0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]])
    loc = torch.zeros(2, 4, 4)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    conf = torch.zeros(2, 4, 2)
    conf[0, :, 1] = torch.tensor([logit(0.9), logit(0.8), logit(0.7), logit(0.3)])
    conf[1, :, 1] = torch.tensor([logit(0.2), logit(0.6), logit(0.1), logit(0.95)])
    out = detect_boxes(loc, conf, priors, 100, score_threshold=0.5, iou_threshold=0.45, top_k=5)
    # Crop 0: anchor 1 overlaps anchor 0 (IoU ~0.92) and is suppressed; anchor 3 is below 0.5.
    assert torch.allclose(out[0][:, 4], torch.tensor([0.9, 0.7]), atol=1e-6)
    assert torch.allclose(out[0][0, :4], torch.tensor([25.0, 25.0, 75.0, 75.0]))
    assert torch.allclose(out[0][1, :4], torch.tensor([15.0, 15.0, 25.0, 25.0]))
    # Crop 1 is independent of crop 0 (no cross-crop suppression); order by score.
    assert torch.allclose(out[1][:, 4], torch.tensor([0.95, 0.6]), atol=1e-6)
    assert torch.allclose(out[1][1, :4], torch.tensor([25.0, 27.0, 75.0, 77.0]))  # axes swapped
    assert len(detect_boxes(loc, conf, priors, 100, top_k=1)[0]) == 1
    none = detect_boxes(loc, conf, priors, 100, score_threshold=0.99)
    assert [tuple(t.shape) for t in none] == [(0, 5), (0, 5)]


# ----------------------------------------------------------------------------- geometry


def test_map_boxes_scale_and_shift():
    m = torch.tensor([[2.0, 0.0, -10.0], [0.0, 2.0, -20.0]])  # frame -> crop
    boxes = torch.tensor([[0.0, 0.0, 224.0, 224.0], [10.0, 20.0, 30.0, 60.0]])
    plain = map_boxes_to_frame(boxes, m, pixel_edges=False)
    assert torch.allclose(plain, torch.tensor([[5.0, 10.0, 117.0, 122.0], [10.0, 20.0, 20.0, 40.0]]))
    edges = map_boxes_to_frame(boxes, m)  # (e - 0.5 - t) / s + 0.5
    assert torch.allclose(edges[0], torch.tensor([5.25, 10.25, 117.25, 122.25]))


def test_row_artifact_boxes_are_mapped_as_pixel_edges():
    # The ADM's boxes are crop pixel edges ((0, 0, 224, 224) = the whole crop) while the
    # alignment matrix maps pixel centres: mapped as if they were centres, every box in a
    # row sat 0.5 crop px (1.5 frame px at a 4x shrink) right of and below its pixels.
    from scanner.summary import FaceRec, _face_detail

    m = torch.tensor([[0.25, 0.0, 10.0], [0.0, 0.25, -20.0]])  # frame -> crop, 4x shrink
    boxes = [[0.0, 0.0, 224.0, 224.0, 0.9], [50.0, 60.0, 70.0, 100.0, 0.8]]
    rec = FaceRec(0, np.array([0, 0, 900, 900], np.float32), 0.99, m, score=0.9,
                  extras={"artifact_boxes": boxes})
    got = _face_detail(rec, 0.5)["artifact_boxes"]
    assert got[0] == [-41.5, 78.5, 854.5, 974.5, 0.9]  # (e - 0.5 - t) / s + 0.5
    want = map_boxes_to_frame(torch.tensor(boxes)[:, :4], m)
    assert np.allclose([b[:4] for b in got], want.numpy(), atol=0.051)


def test_map_boxes_rotation_bounds_corners():
    a = math.radians(90)
    m = torch.tensor([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 100.0]])
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    got = map_boxes_to_frame(box, m, pixel_edges=False)[0]
    # crop (x, y) = (y_f, 100 - x_f)  =>  x_f = 100 - y, y_f = x
    assert torch.allclose(got, torch.tensor([40.0, 10.0, 80.0, 30.0]), atol=1e-5)


def test_map_boxes_inverts_opencv_warp():
    cv2 = pytest.importorskip("cv2")
    frame = np.zeros((480, 640), np.uint8)
    frame[200:260, 300:340] = 255  # rows 200..259, columns 300..339
    m = cv2.getRotationMatrix2D((320.0, 230.0), 0.0, 1.7)
    m[:, 2] += (112 - 320, 112 - 230)
    crop = cv2.warpAffine(frame, m, (224, 224), flags=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(crop > 127)
    crop_box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
    got = map_boxes_to_frame(crop_box, torch.from_numpy(m))[0]
    assert torch.allclose(got, torch.tensor([300.0, 200.0, 340.0, 260.0]), atol=1.0 / 1.7 + 1e-3)


def test_template_matches_original_geometry():
    t = np.array(CADDM_TEMPLATE_224)
    # Eye line at 224 / 2.42 by construction of get_mean_face; eyes 72 px apart.
    assert np.allclose(t[:2, 1], [224 / 2.42, 92.3834], atol=1e-3)
    assert np.allclose(t[:, 0], [75.7457, 147.7457, 111.6252, 81.9024, 141.8485], atol=1e-3)
    assert np.allclose(t[2:, 1], [144.5842, 186.0237, 185.4200], atol=1e-3)
    # The similarity fit recovers a known frame -> crop transform.
    a, s = math.radians(12), 0.6
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lm = (t - 5.0) @ np.linalg.inv(rot).T + [300, 200]
    m = similarity_to_template(lm)
    assert np.allclose(lm @ m[:, :2].T + m[:, 2], t, atol=1e-9)


def test_real_variants_build_lazily_on_meta():
    for variant in ("resnet34", "efficientnet-b3", "efficientnet-b4"):
        with torch.device("meta"):
            m = ADMDetector(BACKBONES[variant])
        assert m.spec.size == 224 and m.fc.out_features == 2


def test_scanner_alignment_matches_caddm_similarity():
    from scanner import align  # the project's own module: a broken import must fail
    rng = np.random.default_rng(3)
    t = np.array(CADDM_TEMPLATE_224)
    for _ in range(5):
        lm = t * rng.uniform(0.5, 3) + rng.uniform(0, 500, 2) + rng.normal(0, 4, (5, 2))
        ours = align.umeyama_similarity(torch.tensor(lm)[None], torch.tensor(t))[0].double().numpy()
        assert np.allclose(ours, similarity_to_template(lm), atol=1e-4)


@pytest.mark.slow
def test_real_clip_scan_reports_artifact_boxes():
    from pathlib import Path

    from scanner import pipeline

    from scanner.config import ScanConfig

    clip = Path(__file__).parent / "data" / "d1.mp4"
    assert clip.exists(), "real clip tests/data/d1.mp4 missing"
    cfg = ScanConfig(detector="test_adm", frames=3, batch_size=8, min_face_frames=1,
                     threshold=0.0, hash=False, progress=False)
    ctx = pipeline.build_context(cfg)
    row = pipeline.scan_video(clip, ctx)
    assert row["error"] is None and row["faces"] >= 3 and row["detector"] == "test_adm"
    faces = [f for fr in row["frames_detail"] for f in fr["faces"]]
    for f in faces:
        fx1, fy1, fx2, fy2 = f["box"]
        boxes = np.array(f["artifact_boxes"])
        assert boxes.shape[1] == 5 and len(boxes) <= 5
        # Frame boxes overlap the detected face (the crop is centred on it).
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        w, h = fx2 - fx1, fy2 - fy1
        assert ((cx > fx1 - w) & (cx < fx2 + w) & (cy > fy1 - h) & (cy < fy2 + h)).all()
