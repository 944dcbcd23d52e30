"""Detector registry with ``create_detector`` factory (timm style).

Factories are registered by name; ``test_*`` detectors are tiny, randomly but
deterministically initialised models registered exactly like real ones, so
every engine and pipeline path can be tested in seconds.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import torch

from .detector import Detector
from .errors import RegistryError, WeightsError

Factory = Callable[..., Detector]


@dataclass(frozen=True)
class DetectorEntry:
    name: str
    factory: Factory
    description: str
    default_weights: str | None  # file name under engines/weights/, or None
    needs_weights: bool  # True: refuse to run without a user-supplied file
    weights_hint: str  # where such weights come from (shown when missing)
    shortcut: bool = False  # a shortcut baseline for evaluations, not a detector (never a default)


_REGISTRY: dict[str, DetectorEntry] = {}


def register_detector(
    name: str,
    *,
    description: str = "",
    default_weights: str | None = None,
    needs_weights: bool = False,
    weights_hint: str = "",
    shortcut: bool = False,
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(**kwargs) -> Detector`` under ``name``."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise RegistryError(f"detector {name!r} is already registered")
        _REGISTRY[name] = DetectorEntry(
            name, factory, description, default_weights, needs_weights, weights_hint, shortcut
        )
        return factory

    return deco


def _load_builtin() -> None:
    # Importing the modules runs their @register_detector decorators.
    from . import detectors  # noqa: F401


def list_detectors(pattern: str | None = None) -> list[str]:
    _load_builtin()
    names = sorted(_REGISTRY)
    if pattern:
        import fnmatch

        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def detector_entry(name: str) -> DetectorEntry:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise RegistryError(f"unknown detector {name!r}; known: {known}") from None


def packaged_weights(filename: str) -> Path:
    """Path of a weights file shipped inside the ``engines`` package."""
    return Path(str(resources.files("engines") / "weights" / filename))


def file_hash(path: str | Path, n: int | None = 16) -> str:
    """First ``n`` hex digits (all with ``None``) of the file's SHA-256, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n] if n else h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends
        raise WeightsError(
            f"{path}: refused to load (only tensors/dicts are accepted, weights_only=True): {e}"
        ) from e
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def create_detector(
    name: str,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    **kwargs,
) -> Detector:
    """Build a registered detector in eval mode on ``device``.

    ``weights``: a file (or directory, for detectors that take one) overriding the
    packaged default. Detectors registered with ``needs_weights`` refuse to run
    without one rather than silently using random weights.
    """
    entry = detector_entry(name)
    if weights is None and entry.default_weights:
        weights = packaged_weights(entry.default_weights)
    if weights is None and entry.needs_weights:
        raise WeightsError(
            f"detector {name!r} needs a weights file: pass --weights PATH. {entry.weights_hint}".strip()
        )
    model = entry.factory(weights=weights, **kwargs)
    model.name = name
    if weights is not None:
        p = Path(weights)
        model.weights_source = str(p)
        if p.is_file():
            model.weights_hash = file_hash(p)
    return model.eval().to(device)
