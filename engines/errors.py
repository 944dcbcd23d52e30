"""Typed errors raised by the engines package.

Every error a user can trigger derives from :class:`DfscanError`, so callers can
catch one type; the subclasses say which stage failed.
"""


class DfscanError(Exception):
    """Base class of all dfscan errors."""


class RegistryError(DfscanError, KeyError):
    """Unknown detector name, or a name registered twice."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class WeightsError(DfscanError):
    """A weights/checkpoint file is missing, unsafe, or does not match the model."""


class EngineError(DfscanError):
    """An inference engine could not be built, loaded or run."""


class EngineUnavailable(EngineError):
    """The backend's optional dependency is not installed (message says what to install)."""


class ParityError(EngineError):
    """A compiled engine disagrees with eager fp32 PyTorch beyond the allowed tolerance."""


class DetectorOutputError(EngineError):
    """A detector gave another number of scores than it was given face crops."""
