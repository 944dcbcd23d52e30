"""Turn checkpoint files of self-supervised training runs into encoder state dicts.

Public SSL releases store the same torchvision ResNet-50 in many wrappers: a
plain state dict (Barlow Twins hub file, DINO, BYOL converted), a training
checkpoint whose ``state_dict`` holds the encoder under a prefix next to
momentum encoders, queues, projectors and predictors (MoCo v1/v2/v3,
solo-learn), or a converted TensorFlow model with its own layer names
(SimCLRv2). This module only *selects and renames* keys; nothing is ever
silently dropped except keys whose role is known (training-only heads and
classifier), and every other leftover key is an error listing the names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from ..registry import read_state_dict

# Training-only parts of SSL checkpoints, matched on the first name component
# (after an optional DataParallel ``module.``): they never belong to the frozen
# encoder, so dropping them cannot change the features.
AUX_KEY = re.compile(
    r"^(module\.)?(projector|projection|projection_head|predictor|online_predictor|"
    r"momentum_\w+|encoder_k|target_\w+|queue\w*|classifier|head|heads|bn)(\.|$)"
)


@dataclass(frozen=True)
class CheckpointFormat:
    """Where the encoder lives inside a checkpoint file.

    Attributes:
        containers: top-level keys that may hold the tensor dict, tried in order
            (``None`` = the file itself is the tensor dict).
        prefixes: name prefixes of the encoder's keys, tried in order.
        classifier: prefixes (after stripping) of the ImageNet classifier or
            projection MLP replacing it; dropped, as the probe brings its own.
        remap: optional function renaming encoder keys to torchvision names;
            returns ``None`` for a key it does not know (reported as unexpected).
    """

    containers: tuple = (None,)
    prefixes: tuple = ("",)
    classifier: tuple = ("fc.",)
    remap: object = None
    aux: bool = True  # drop SSL training heads (off for timm, whose ``head.*`` is the model's)


def read_checkpoint(path: str | Path) -> dict:
    """Load a ``.pth``/``.pt``/``.tar``/``.safetensors`` checkpoint without unpickling code
    (``torch.load(weights_only=True)``); nested dicts and metadata are kept."""
    return read_state_dict(path)


def _tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def select_encoder(raw: dict, fmt: CheckpointFormat, path: str = "") -> dict[str, torch.Tensor]:
    """Encoder tensors from a checkpoint, renamed to the model's names.

    Raises :class:`WeightsError` when no container/prefix matches or when keys
    outside the encoder are neither training heads nor classifier.
    """
    for container in fmt.containers:
        sd = raw if container is None else raw.get(container)
        if not _tensor_dict(sd):
            continue
        for prefix in fmt.prefixes:
            if any(k.startswith(prefix) and not (fmt.aux and AUX_KEY.match(k[len(prefix):])) for k in sd):
                return _strip(sd, prefix, fmt, path)
    where = ", ".join("<file>" if c is None else repr(c) for c in fmt.containers)
    pre = ", ".join(repr(p) for p in fmt.prefixes)
    raise WeightsError(f"{path}: no encoder tensors found in {where} with prefix {pre}; "
                       f"top-level keys: {sorted(raw)[:10]}")


def _strip(sd: dict, prefix: str, fmt: CheckpointFormat, path: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        if not key.startswith(prefix):
            # Momentum encoders, queues, predictors live beside the encoder.
            if not fmt.aux or not (AUX_KEY.match(key) or AUX_KEY.match(_after_module(key))):
                unknown.append(key)
            continue
        name = key[len(prefix):]
        if (fmt.aux and AUX_KEY.match(name)) or name.startswith(fmt.classifier):
            continue
        if fmt.remap is not None:
            new = fmt.remap(name)
            if new is None:
                unknown.append(key)
                continue
            if new.startswith(fmt.classifier):
                continue
            name = new
        out[name] = value
    if unknown:
        raise WeightsError(f"{path}: unexpected keys outside the encoder: {_short(unknown)}")
    return out


def _after_module(key: str) -> str:
    """``module.encoder_k.x`` -> ``encoder_k.x``: auxiliary parts of wrapped models."""
    parts = key.split(".")
    return ".".join(parts[1:]) if len(parts) > 1 else key


def _short(keys: list[str], n: int = 12) -> str:
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: str = "") -> None:
    """Load ``sd`` into ``model`` (whose classifier was already removed).

    Any missing key, unexpected key or shape mismatch is a :class:`WeightsError`
    listing the names, so a wrong file can never yield half-random features.
    """
    own = model.state_dict()
    bad_shape = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad_shape:
        raise WeightsError(f"{path}: shape mismatch: {_short(bad_shape)}")
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        msg = []
        if missing:
            msg.append(f"missing keys: {_short(missing)}")
        if unexpected:
            msg.append(f"unexpected keys: {_short(unexpected)}")
        raise WeightsError(f"{path}: " + "; ".join(msg))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # dtype problems surface here
        raise WeightsError(f"{path}: {e}") from e


# --- SimCLRv2 converted (Separius/SimCLRv2-Pytorch layout) -----------------
# The converter builds a TF-style ResNet: ``net.0`` is the stem
# (conv, BatchNormRelu(bn, relu), maxpool), ``net.1``..``net.4`` are stages with
# ``blocks.J`` bottlenecks whose ``net`` holds conv/BNReLU pairs in order and whose
# ``projection`` is (shortcut conv, BatchNormRelu). Only the 1x, no-selective-kernel
# variant has torchvision's exact structure.
_V2_PATTERNS = (
    (re.compile(r"net\.0\.0\.weight"), lambda m: "conv1.weight"),
    (re.compile(r"net\.0\.1\.0\.(\w+)"), lambda m: f"bn1.{m[1]}"),
    (re.compile(r"net\.([1-4])\.blocks\.(\d+)\.projection\.shortcut\.weight"),
     lambda m: f"layer{m[1]}.{m[2]}.downsample.0.weight"),
    (re.compile(r"net\.([1-4])\.blocks\.(\d+)\.projection\.bn\.0\.(\w+)"),
     lambda m: f"layer{m[1]}.{m[2]}.downsample.1.{m[3]}"),
    (re.compile(r"net\.([1-4])\.blocks\.(\d+)\.net\.([024])\.weight"),
     lambda m: f"layer{m[1]}.{m[2]}.conv{int(m[3]) // 2 + 1}.weight"),
    (re.compile(r"net\.([1-4])\.blocks\.(\d+)\.net\.([135])\.0\.(\w+)"),
     lambda m: f"layer{m[1]}.{m[2]}.bn{int(m[3]) // 2 + 1}.{m[4]}"),
    (re.compile(r"fc\.(weight|bias)"), lambda m: f"fc.{m[1]}"),
)


def simclrv2_to_torchvision(name: str) -> str | None:
    """SimCLRv2-PyTorch key -> torchvision ResNet key (``None`` if it has no match,
    e.g. selective-kernel layers of ``_sk1`` models)."""
    for pattern, build in _V2_PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            return build(m)
    return None
