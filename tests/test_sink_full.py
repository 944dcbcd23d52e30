"""A primary output that fills up mid-row ends on a row boundary (no torn row left behind).

The disk is "full" through RLIMIT_FSIZE in a child process: the write that crosses the
limit is short, the next one fails (EFBIG), as a full file system does (ENOSPC).
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from conftest import ROOT

CHILD = r"""
import resource, signal, sys
from scanner.output import OutputError, SinkSet, open_sink
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error instead of a kill at the limit
sinks = SinkSet([open_sink(sys.argv[1])])
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    for i in range(100):
        sinks.write({"path": f"/v/clip{i}.mp4", "verdict": "real", "score": 0.25, "pad": "x" * 200})
except OutputError as e:
    print("stopped:", e)
sinks.close()
"""


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_full_disk_leaves_no_torn_row(tmp_path, suffix):
    out = tmp_path / f"o{suffix}"
    done = subprocess.run([sys.executable, "-c", CHILD, str(out), "1000"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert "stopped:" in done.stdout, done.stdout + done.stderr
    text = out.read_text()
    assert text.endswith("\n")  # the row that did not fit was cut off again
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    assert rows and [r["path"] for r in rows] == [f"/v/clip{i}.mp4" for i in range(len(rows))]
