"""Expected checkpoint keys and shapes of the ADM variants (committed manifests).

``python -m engines.detectors.adm.manifest`` rewrites
``engines/manifests/adm_{resnet34,efficientnet_b3,efficientnet_b4}.json``. Each
file lists, in state-dict order, the ``network`` keys a CADDM checkpoint of
that backbone must hold (``keys``) and the unused ImageNet classifier keys it
may also hold (``optional``). The model is built on the meta device, so no
weights are allocated. Tests compare the model against the committed files, so
an accidental change of a name or shape fails loudly.
"""
from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import torch

from .backbones import EfficientNetBackbone, ResNetBackbone
from .module import ADMDetector

VARIANTS = {
    "adm_resnet34": ("resnet34", ResNetBackbone, 512),
    "adm_efficientnet_b3": ("efficientnet-b3", lambda: EfficientNetBackbone("efficientnet-b3"), 1536),
    "adm_efficientnet_b4": ("efficientnet-b4", lambda: EfficientNetBackbone("efficientnet-b4"), 1792),
}


def model_keys(name: str) -> list[list]:
    """``[[key, [shape...]], ...]`` of the variant's state dict, built on the meta device."""
    _, factory, _ = VARIANTS[name]
    with torch.device("meta"):
        model = ADMDetector(factory)
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def build_manifest(name: str) -> dict:
    backbone, _, channels = VARIANTS[name]
    head = "base_model.fc." if backbone == "resnet34" else "base_model._fc."
    return {
        "detector": name,
        "backbone": backbone,
        "source": "megvii-research/CADDM backbones/caddm.py (CADDM(2, backbone)), checkpoint['network']",
        "keys": model_keys(name),
        "optional": [[head + "weight", [1000, channels]], [head + "bias", [1000]]],
    }


def manifest_path(name: str) -> Path:
    return Path(str(resources.files("engines") / "manifests" / f"{name}.json"))


def load_manifest(name: str) -> dict:
    return json.loads(manifest_path(name).read_text())


def _dumps(manifest: dict) -> str:
    """JSON with one ``[key, shape]`` entry per line (readable diffs)."""
    lines = ["{"]
    for field, value in manifest.items():
        if isinstance(value, list):
            rows = ",\n".join("  " + json.dumps(r) for r in value)
            lines.append(f' {json.dumps(field)}: [\n{rows}\n ],')
        else:
            lines.append(f" {json.dumps(field)}: {json.dumps(value)},")
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join(lines) + "\n}\n"


def main(argv=None) -> int:
    for name in VARIANTS:
        path = manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dumps(build_manifest(name)))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
