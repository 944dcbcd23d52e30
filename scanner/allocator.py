"""Keep freed memory inside the process (glibc malloc), so big tensors are not
page-faulted in again on every use.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and gives it back
on ``free``. A scan allocates such blocks over and over (a batch of 1080p frames as
float, MTCNN's R-Net activations for hundreds of candidates, a detector batch), and
each one is faulted in page by page and zeroed by the kernel, every time: on the
2-core VM these numbers come from, MTCNN's nets ran 1.5-2x faster with the blocks
kept (R-Net on 600 candidates 71 -> 34 ms, O-Net on 120 74 -> 42 ms, P-Net 33 -> 23 ms;
``bench/results/scan_cpu.json`` has the whole-scan effect).

The cost is that the process keeps its peak heap instead of returning it to the
system between videos; the peak itself is unchanged and still bounded by batch
sizes and queue lengths, not by the input (``bench/memory.py``).

Only the command line calls this (``scanner.cli.main``): importing dfscan as a
library changes no process-wide setting.
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_done = False


def keep_freed_memory() -> bool:
    """Tell glibc to serve large blocks from the heap and never trim it. Returns whether
    the setting took effect (False on other C libraries and platforms)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The process's own symbols include the C library's (find_library would run ldconfig).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("glibc malloc keeps freed memory: %s", _done)
    return _done
