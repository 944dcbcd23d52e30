"""Detector registry with ``create_detector`` factory (timm style).

Factories are registered by name; ``test_*`` detectors are tiny, randomly but
deterministically initialised models registered exactly like real ones, so
every engine and pipeline path can be tested in seconds.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
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


def load_error_reason(e: Exception) -> str:
    """One informative line of a loader's error: torch's weights-only message spans many
    lines (and advises ``weights_only=False``, which would run the file's code)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:  # 'Unsupported operand 149', 'Trying to load unsupported GLOBAL posix.system ...'
        if "unsupported" in ln.lower():
            return ln
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


class StateDict(dict):
    """A state dict and ``sha256``, the hex digest of the very bytes it was read from."""

    sha256: str = ""


def _check_format(path: Path, head: bytes, size: int) -> None:
    """Refuse a file that cannot be weights from its first bytes, before reading it whole
    (a video given as ``--weights`` would be read into memory, gigabytes, only to fail)."""
    if path.suffix == ".safetensors":
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
        if 0 < n <= size - 8 and head[8:9] == b"{":
            return
        raise WeightsError(f"{path}: not a readable safetensors file: no safetensors header")
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # zip (torch.save) or pickle
        raise WeightsError(f"{path}: refused to load: not a torch weights file (neither a torch.save "
                           "zip archive nor a pickle)")


def read_weights_file(path: str | Path, what: str = "only tensors/dicts are accepted") -> tuple[object, str]:
    """The object stored in ``path`` (``.safetensors``, or a torch file read with
    ``weights_only=True``: never unpickling code) and the SHA-256 of its bytes.

    The file is read once: a hash taken by a second read could be that of a file replaced
    meanwhile (a training run writing the weights a scan loads), and rows would name
    weights other than those used. ``what`` goes into a refused torch file's message.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
        _check_format(path, head, os.fstat(f.fileno()).st_size)  # the file being read
        data = head + f.read()
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix == ".safetensors":
        from safetensors.torch import load

        try:  # an empty or truncated file raises SafetensorError (not an OSError)
            return load(data), digest
        except Exception as e:
            raise WeightsError(f"{path}: not a readable safetensors file: {load_error_reason(e)}") from e
    try:
        with warnings.catch_warnings():  # its pickle-protocol notice would precede our one-line error
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), digest
    except Exception as e:  # pickle.UnpicklingError and friends
        raise WeightsError(f"{path}: refused to load ({what}, weights_only=True): {load_error_reason(e)}") from e


def read_state_dict(path: str | Path) -> StateDict:
    """Read a state dict from ``.safetensors`` or a torch file (see :func:`read_weights_file`)."""
    obj, digest = read_weights_file(path)
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
    sd = StateDict(obj)
    sd.sha256 = digest
    return sd


def _mismatch(e: RuntimeError) -> str:
    """``load_state_dict``'s multi-line report (one line per problem, each listing every
    key) as one short line: errors are one line (README)."""
    parts = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
    return "; ".join(p if len(p) <= 200 else p[:200] + " ..." for p in parts[:3]) or str(e)


def load_weights(model: torch.nn.Module, weights: str | Path) -> None:
    """Load ``weights`` into ``model`` strictly; a file that does not fit, or whose values
    are NaN/inf (every score would be NaN), is a one-line :class:`WeightsError`."""
    sd = read_state_dict(weights)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:  # missing/unexpected keys or shape mismatch
        raise WeightsError(f"{weights}: does not fit {type(model).__name__}: {_mismatch(e)}") from e
    check_finite(model, weights)
    model.weights_hash = sd.sha256[:16]  # of the bytes loaded (see read_weights_file)


def check_finite(model: torch.nn.Module, source: str | Path) -> None:
    """:class:`WeightsError` naming the first tensor of ``model`` holding NaN/inf (loaded
    from ``source``): every score would be NaN, refused only later as a parity failure."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise WeightsError(f"{source}: tensor {name} holds NaN or infinite values")


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
        if p.is_file() and model.weights_hash == "random-init":  # a loader that did not set it
            model.weights_hash = file_hash(p)
    return model.eval().to(device)
