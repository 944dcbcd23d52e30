"""Audit of engines/: wrong answers given without an error (ADM boxes, Grad-CAM layers)."""
from __future__ import annotations

import pytest
import torch

from engines import create_detector, detector_entry, list_detectors
from engines.detectors.adm.anchors import ADM_PRIORS, detect_boxes, prior_boxes
from engines.explain import cam_module, gradcam
from engines.tv_ops import batched_nms


def test_batched_nms_groups_stay_apart_at_negative_coordinates():
    # Shifting group g by g * (max + 1) (torchvision's trick, which assumes x, y >= 0) put
    # group 1's box at negative coordinates right on top of group 0's box.
    boxes = torch.tensor([[130.0, 130.0, 250.0, 250.0], [-121.0, -121.0, -1.0, -1.0]])
    kept = batched_nms(boxes, torch.tensor([0.6, 0.9]), torch.tensor([0, 1]), 0.45)
    assert sorted(kept.tolist()) == [0, 1]


def test_adm_box_of_one_crop_is_not_suppressed_by_another_crops_box():
    """detect_boxes decodes unclipped boxes: crop 1's (far outside its crop, top-left)
    suppressed crop 0's artifact box, which vanished from crop 0's row."""
    priors = prior_boxes(ADM_PRIORS)
    a, size = 40, 224  # an anchor of the 7x7 map, away from the border
    loc = torch.zeros(2, len(priors), 4)
    conf = torch.zeros(2, len(priors), 2)
    conf[..., 0] = 10.0  # background everywhere ...
    conf[0, a] = torch.tensor([0.0, 2.0])  # ... but one artifact box per crop
    conf[1, a] = torch.tensor([0.0, 4.0])  # crop 1's scores higher
    box0 = detect_boxes(loc[:1], conf[:1], priors, size)[0]
    assert len(box0) == 1
    # Move crop 1's box by -(max + 1) px on both axes: entirely above-left of the crop.
    shift = -(float(box0[0, :4].max()) + 1) / size
    loc[1, a, :2] = shift / (ADM_PRIORS.variances[0] * priors[a, 2:])
    dets = detect_boxes(loc, conf, priors, size)
    assert len(dets[1]) == 1
    assert len(dets[0]) == 1 and torch.equal(dets[0], box0)  # as when scored alone


def _explainable() -> list[str]:
    """Registered detectors that build without a user's file and are not shortcut baselines."""
    names = []
    for n in list_detectors():
        e = detector_entry(n)
        if not e.needs_weights and not e.shortcut:
            names.append(n)
    return names


@pytest.mark.parametrize("name", _explainable())
def test_every_convolutional_detector_names_a_cam_layer_it_has(name):
    # README: "the layer is the detector's cam_layer, so any detector with a convolutional
    # map works"; the EfficientNet-Lite ones had none (binary) or a ResNet's "layer4" (ADM).
    d = create_detector(name)
    assert d.cam_layer, f"{name} has a convolutional map but no cam_layer"
    cam_module(d)  # a submodule of this detector
    if name.startswith("test_"):
        x = d.spec.example_input(2)
        res = gradcam(d, x)
        assert res.heatmap.shape == (2, d.spec.size, d.spec.size)
        assert torch.allclose(res.p_fake, d.p_fake(d(x)).detach())  # the scored output


def test_a_detector_without_weights_refuses_a_weights_file():
    # It ignored the file, yet rows carried the file's hash as the weights they were scored with.
    from engines import WeightsError
    from engines.registry import packaged_weights

    with pytest.raises(WeightsError, match="takes no weights"):
        create_detector("baseline_sharpness", weights=packaged_weights("meso4_df.safetensors"))
    assert create_detector("baseline_sharpness").weights_hash == "random-init"


def test_a_stored_parity_counted_at_another_threshold_is_checked_again(tmp_path):
    """The cache key does not hold the decision threshold (a probe's comes from its
    card.json): a parity whose verdict flips were counted at 0.5 was reused at 0.3."""
    from engines.backends import build_engine, engine_config

    det = create_detector("test_tiny")
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8), cache_dir=str(tmp_path))
    build_engine(det, cfg)
    again = build_engine(det, cfg)
    assert again.info.cache == "hit" and again.info.parity.get("cached")  # same threshold: reused
    det.threshold = 0.3
    moved = build_engine(det, cfg)
    assert moved.info.cache == "hit" and not moved.info.parity.get("cached")
    assert moved.info.parity["threshold"] == 0.3 and moved.info.parity["passed"]
