"""dfscan engines: detectors and the inference backends that run them.

This package never imports :mod:`scanner`. Its public names are resolved on
first use (PEP 562), so ``import engines.errors`` (the command line's parser
needs only the error types) does not import torch.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Detector": ".detector",
    "DfscanError": ".errors",
    "EngineError": ".errors",
    "ParityError": ".errors",
    "RegistryError": ".errors",
    "WeightsError": ".errors",
    "InputSpec": ".spec",
    "create_detector": ".registry",
    "detector_entry": ".registry",
    "list_detectors": ".registry",
    "register_detector": ".registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'engines' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
