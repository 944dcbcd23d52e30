"""Built-in detectors; importing this package registers them."""
from . import tiny  # noqa: F401
