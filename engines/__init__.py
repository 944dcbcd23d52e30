"""dfscan engines: detectors and the inference backends that run them.

This package never imports :mod:`scanner`.
"""
from .detector import Detector
from .errors import DfscanError, EngineError, ParityError, RegistryError, WeightsError
from .registry import create_detector, detector_entry, list_detectors, register_detector
from .spec import InputSpec

__all__ = [
    "Detector",
    "DfscanError",
    "EngineError",
    "InputSpec",
    "ParityError",
    "RegistryError",
    "WeightsError",
    "create_detector",
    "detector_entry",
    "list_detectors",
    "register_detector",
]
