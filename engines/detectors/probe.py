"""Linear probe on a frozen backbone ("How Close Are Other Computer Vision Tasks
to Deepfake Detection?", Lu & Ebrahimi, IJCNN 2023): one linear layer on the
features of a self-supervised or face-recognition backbone.

A probe is a DIRECTORY::

    probe.safetensors   linear.weight (1, D) float32, linear.bias (1,) float32
    card.json           backbone source/arch/weights path + sha256 prefix,
                        feature dim, input spec (size, normalisation, template),
                        threshold on P(fake) at the held-out EER, training summary

The backbone file is not copied; it is found at the recorded path, or next to
the card under the same file name, and its hash must match the card's.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones import create_backbone
from ..detector import Detector
from ..errors import WeightsError
from ..registry import check_finite, read_state_dict, register_detector
from ..spec import InputSpec

CARD = "card.json"
WEIGHTS = "probe.safetensors"
FORMAT = "dfscan-probe/1"


class ProbeDetector(Detector):
    """Frozen backbone + ``nn.Linear(D, 1)``; output = logit of P(fake), shape ``(N,)``."""

    def __init__(self, backbone: nn.Module, spec: InputSpec, feature_dim: int, threshold: float = 0.5):
        super().__init__(replace(spec, output="logit of P(fake)"), threshold)
        self.backbone = backbone
        self.linear = nn.Linear(feature_dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: RGB [0, 255] ``(N, 3, S, S)`` -> ``float32 (N, D)``."""
        return self.backbone(self.normalize(x))

    def network(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.backbone(x)).squeeze(1)


def _find_backbone_file(probe_dir: Path, card: dict, override: str | Path | None) -> Path:
    recorded = Path(card["backbone"]["weights"])
    candidates = [Path(override)] if override else [recorded, probe_dir / recorded, probe_dir / recorded.name]
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise WeightsError(f"probe {probe_dir}: backbone weights not found (tried {tried}); "
                       "copy the file next to card.json or pass backbone_weights=")


def read_card(probe_dir: str | Path) -> dict:
    probe_dir = Path(probe_dir)
    try:
        card = json.loads((probe_dir / CARD).read_text())
    except FileNotFoundError as e:
        raise WeightsError(f"{probe_dir}: not a probe directory (no {CARD})") from e
    except json.JSONDecodeError as e:
        raise WeightsError(f"{probe_dir / CARD}: invalid JSON: {e}") from e
    if card.get("format") != FORMAT:
        raise WeightsError(f"{probe_dir / CARD}: format {card.get('format')!r}, expected {FORMAT!r}")
    return card


def load_probe(probe_dir: str | Path, backbone_weights: str | Path | None = None) -> ProbeDetector:
    """Build a :class:`ProbeDetector` from a probe directory (see module docstring)."""
    probe_dir = Path(probe_dir)
    if not probe_dir.is_dir():
        raise WeightsError(f"probe weights must be a directory with {CARD} and {WEIGHTS}: {probe_dir}")
    card = read_card(probe_dir)
    bb = card["backbone"]
    path = _find_backbone_file(probe_dir, card, backbone_weights)
    backbone, spec = create_backbone(bb["source"], path, bb["arch"], card["input"]["size"])
    # Checked on the bytes the backbone was built from: a hash of a separate read could be
    # of a file replaced in between, and the probe would run on a backbone never checked.
    digest = backbone.weights_sha256[:16]
    if digest != bb["weights_hash"]:
        raise WeightsError(f"backbone file {path} has hash {digest}, the probe was trained on {bb['weights_hash']}")
    if json.loads(json.dumps(spec.to_dict())) != card["input"]:
        raise WeightsError(f"{probe_dir}: backbone input spec {spec.to_dict()} differs from the card's {card['input']}")
    sd = read_state_dict(probe_dir / WEIGHTS)  # a truncated file is a WeightsError, not a traceback
    dim = backbone.feature_dim
    if set(sd) != {"linear.weight", "linear.bias"} or tuple(sd["linear.weight"].shape) != (1, dim):
        shapes = {k: tuple(v.shape) for k, v in sd.items()}
        raise WeightsError(f"{probe_dir / WEIGHTS}: expected linear.weight (1, {dim}) and linear.bias (1,), got {shapes}")
    model = ProbeDetector(backbone, spec, dim, float(card["threshold"]))
    model.linear.load_state_dict({"weight": sd["linear.weight"], "bias": sd["linear.bias"]})
    check_finite(model, probe_dir)
    # After the shape and NaN checks, which say more of a damaged file.
    if card.get("probe_weights_sha256", sd.sha256) != sd.sha256:  # cards before it carry none
        raise WeightsError(f"{probe_dir / WEIGHTS} is not the file {CARD} was written with (sha256 "
                           f"{sd.sha256[:16]}, card {str(card['probe_weights_sha256'])[:16]}): a probe fit "
                           "stopped between its two writes? fit it again")
    model.weights_hash = sd.sha256[:16] + "+" + digest  # of the bytes loaded, not a second read
    model.card = card
    return model


def save_probe(probe_dir: str | Path, backbone: nn.Module, spec: InputSpec, backbone_weights: str | Path,
               weight: torch.Tensor, bias: float, threshold: float, extra: dict[str, Any] | None = None) -> Path:
    """Write a probe directory for ``backbone`` (built by ``create_backbone``).

    ``weight``: ``(D,)`` float on raw backbone features; ``bias``: scalar;
    ``threshold``: P(fake) decision threshold (e.g. at the held-out EER).
    """
    from ..files import write_json, write_safetensors

    probe_dir = Path(probe_dir)
    probe_dir.mkdir(parents=True, exist_ok=True)
    info = backbone.info
    w = torch.as_tensor(weight, dtype=torch.float32).reshape(1, -1).contiguous()
    if w.shape[1] != info.feature_dim:
        raise WeightsError(f"probe weight has {w.shape[1]} features, backbone gives {info.feature_dim}")
    write_safetensors({"linear.weight": w, "linear.bias": torch.tensor([float(bias)], dtype=torch.float32)},
                      probe_dir / WEIGHTS)
    # The card names the weights it belongs to: a fit stopped between the two writes left new
    # weights under the old card (its threshold), and the pair loaded without a word.
    weights_sha256 = hashlib.sha256((probe_dir / WEIGHTS).read_bytes()).hexdigest()
    card = {
        "format": FORMAT,
        "backbone": {"source": info.source, "arch": info.arch, "feature_dim": info.feature_dim,
                     "normalisation": info.normalisation, "weights": str(Path(backbone_weights).resolve()),
                     "weights_hash": backbone.weights_sha256[:16]},  # of the bytes it was built from
        "input": spec.to_dict(),
        "threshold": float(threshold),
        "probe_weights_sha256": weights_sha256,
        **(extra or {}),
    }
    write_json(card, probe_dir / CARD)
    return probe_dir


@register_detector(
    "probe",
    description="linear probe on a frozen SSL / face-recognition backbone (directory from `dfscan probe fit`)",
    needs_weights=True,
    weights_hint="Train one with `dfscan probe fit`; pass the output DIRECTORY (card.json + probe.safetensors).",
)
def probe(weights=None, backbone_weights=None, **kw) -> Detector:
    if kw:
        raise WeightsError(f"probe detector takes no options {sorted(kw)}")
    return load_probe(weights, backbone_weights)
