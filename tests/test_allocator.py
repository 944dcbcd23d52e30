"""scanner.allocator: with it, glibc serves a large block from the heap and keeps it
after free (without it every block over 32 MiB is a fresh mmap, unmapped on free,
and faulted in and zeroed by the kernel again on the next use)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

# mallinfo2 (glibc >= 2.33): hblkhd = bytes in mmapped blocks, fordblks = free bytes kept in the heap.
PROBE = """
import ctypes, json, sys
import numpy as np
if sys.argv[1] == "tuned":
    from scanner.allocator import keep_freed_memory
    assert keep_freed_memory()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
a = np.ones(64 << 20, np.uint8)
live = mallinfo2().hblkhd
del a
print(json.dumps({"mmapped_while_live": live, "kept_after_free": mallinfo2().fordblks}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_a_freed_large_block_stays_in_the_heap():
    block = 64 << 20
    default, tuned = _probe("default"), _probe("tuned")
    assert default["mmapped_while_live"] >= block and default["kept_after_free"] < block
    assert tuned["mmapped_while_live"] < block and tuned["kept_after_free"] >= block
