"""Correct answers or a clear error (issue 9): regressions for silent wrong results."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import DATA, SAMPLES
from scanner.cli import main as dfscan


# -- 1. eval pairs scores with labels by path, whatever the completion order ------------

def test_eval_with_workers_pairs_each_score_with_its_own_video(tmp_path):
    """Two workers, a long clip listed first and an instantly failing file next: rows
    come back out of order, yet every eval score must be the one `dfscan scan` gives
    that same video."""
    vids = tmp_path / "v"
    vids.mkdir()
    shutil.copy(SAMPLES / "d7.mp4", vids / "long.mp4")      # long clip: finishes last
    (vids / "broken.mp4").write_bytes(b"not a video\n" * 40)  # fails at once
    for name in ("d1.mp4", "d2.mp4", "d18.mp4"):
        shutil.copy(DATA / name, vids / name)
    order = ["long.mp4", "broken.mp4", "d1.mp4", "d2.mp4", "d18.mp4"]
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(
        f"v/{n},{k % 2}\n" for k, n in enumerate(order)))
    opts = ["--detector", "test_tiny", "--engine", "eager", "--frames", "6", "--workers", "2"]
    assert dfscan(["eval", str(tmp_path / "m.csv"), *opts, "--out", str(tmp_path / "ev.json"),
                   "--quiet"]) == 0
    assert dfscan(["scan", *[str(vids / n) for n in order], *opts, "--out", str(tmp_path / "s.jsonl"),
                   "--no-progress"]) == 1  # broken.mp4 is an error row
    scan = {json.loads(x)["path"]: json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()}
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert [r["label"] for r in ev["scores"]] == [k % 2 for k in range(len(order))]
    for r in ev["scores"]:
        expected = scan[r["path"]]["score"]
        if expected is None:
            assert r["score"] is None, r["path"]
        else:
            assert r["score"] == pytest.approx(expected, abs=1e-6), r["path"]
    got = [r["score"] for r in ev["scores"] if r["score"] is not None]
    assert len(got) == 4 and len({round(x, 6) for x in got}) == 4  # distinct: a swap would show
    assert ev["video_verdicts"]["error"] == 1
