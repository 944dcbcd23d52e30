"""Reading CADDM checkpoints safely and loading them strictly.

The authors' ``train.py::save_checkpoint`` writes, with ``torch.save``, a dict
``{'network': state_dict, 'opt_state': {...}, 'epoch': int}`` (the released
``resnet34.pkl`` / ``efficientnet-b3.pkl`` / ``efficientnet-b4.pkl`` are such
zip files despite the extension). Keys are those of ``CADDM`` without the
``module.`` prefix of ``nn.DataParallel``; files saved from a DataParallel
model carry it, so a uniform ``module.`` prefix is stripped.

Only ``torch.load(weights_only=True)`` (or safetensors) is used, so a file
holding pickled code is refused. The network keys must match the model
exactly, except that the backbone's unused ImageNet classifier
(``base_model.fc.*`` / ``base_model._fc.*``) may be present and is dropped,
and BatchNorm ``num_batches_tracked`` counters (unused in eval) may be absent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ...errors import WeightsError
from ...registry import StateDict, read_weights_file

# ImageNet heads of the backbones, present in CADDM checkpoints, unused.
OPTIONAL_PREFIXES = ("base_model.fc.", "base_model._fc.")
TOP_LEVEL_KEYS = ("network", "opt_state", "epoch")
_MAX_LISTED = 8


def _listing(keys) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def read_checkpoint(path: str | Path) -> StateDict:
    """Return the network state dict of a CADDM checkpoint file.

    Accepts ``{'network': sd[, 'opt_state': ..., 'epoch': ...]}`` or a bare
    state dict (``.safetensors`` or torch file). Raises :class:`WeightsError`
    for a missing/unsafe/unrecognised file or non-tensor entries.
    """
    obj, digest = read_weights_file(path, "only tensors, dicts and plain numbers are accepted")
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    if "network" in obj:
        extra = set(obj) - set(TOP_LEVEL_KEYS)
        if extra:
            raise WeightsError(f"{path}: unexpected top-level entries {_listing(map(str, extra))}; "
                               f"a CADDM checkpoint holds {', '.join(TOP_LEVEL_KEYS)}")
        obj = obj["network"]
        if not isinstance(obj, Mapping):
            raise WeightsError(f"{path}: 'network' is a {type(obj).__name__}, expected a state dict")
    bad = [str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise WeightsError(f"{path}: entries that are not named tensors: {_listing(bad)}")
    sd = StateDict(obj)
    sd.sha256 = digest
    return sd


def strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a ``module.`` prefix carried by every key (DataParallel); mixed prefixes are an error."""
    prefixed = [k.startswith("module.") for k in sd]
    if sd and all(prefixed):
        return {k[len("module."):]: v for k, v in sd.items()}
    if any(prefixed):
        raise WeightsError("checkpoint mixes keys with and without the 'module.' prefix")
    return dict(sd)


def _check_keys(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}"
             for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {_listing(wrong)}")
    if problems:
        raise WeightsError(f"{source} does not match {getattr(model, 'name', type(model).__name__)} "
                           f"(wrong variant or not a CADDM checkpoint?): " + "; ".join(problems))


def load_checkpoint_into(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> list[str]:
    """Load a CADDM state dict into ``model`` strictly; returns the dropped optional keys.

    Values are copied into the model's existing tensors (dtype/device of the
    model are kept). Raises :class:`WeightsError` listing missing, unexpected
    or mis-shaped keys.
    """
    sd = strip_module_prefix(sd)
    dropped = [k for k in sd if k.startswith(OPTIONAL_PREFIXES)]
    sd = {k: v for k, v in sd.items() if k not in dropped}
    _check_keys(model, sd, source)
    # Counters absent from very old files: fill with zeros (unused in eval).
    for k, v in model.state_dict().items():
        if k not in sd:
            sd[k] = torch.zeros_like(v, device="cpu")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{source}: loading failed: {e}") from e
    return dropped
