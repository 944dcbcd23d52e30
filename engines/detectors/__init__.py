"""Built-in detectors; importing this package registers them."""
from . import tiny  # noqa: F401
from . import probe  # noqa: F401
from . import mesonet  # noqa: F401
from . import adm  # noqa: F401
from . import effnet_lite  # noqa: F401
from . import baseline  # noqa: F401
