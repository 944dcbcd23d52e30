"""--resume refuses an output judged at another threshold or scored at another precision.

Rows judged at 0.5 and at 0.7 in one file gave one score two verdicts; bf16 scores (~1e-2
from fp32's) were ranked with fp32 ones by `dfscan eval --from-jsonl`.
"""
from __future__ import annotations

import json

import pytest
from conftest import DATA

from scanner.cli import EXIT_OK, EXIT_USAGE
from scanner.cli import main as dfscan

FAST = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]
CLIPS = [str(DATA / "d1.mp4"), str(DATA / "d2.mp4")]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_at_another_threshold_is_refused(tmp_path, capsys, suffix):
    out = tmp_path / f"o{suffix}"
    assert dfscan(["scan", CLIPS[0], "--out", str(out), *FAST, "--threshold", "0.5"]) == EXIT_OK
    before = out.read_bytes()
    assert dfscan(["scan", *CLIPS, "--out", str(out), "--resume", *FAST, "--threshold", "0.7"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "threshold 0.5" in err and "0.7" in err and out.read_bytes() == before
    assert dfscan(["scan", *CLIPS, "--out", str(out), "--resume", *FAST, "--threshold", "0.5"]) == EXIT_OK


def test_resume_without_threshold_keeps_the_detectors_own(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert dfscan(["scan", CLIPS[0], "--out", str(out), *FAST]) == EXIT_OK
    own = json.loads(out.read_text())["threshold"]
    assert dfscan(["scan", *CLIPS, "--out", str(out), "--resume", *FAST]) == EXIT_OK
    assert [json.loads(line)["threshold"] for line in out.read_text().splitlines()] == [own, own]
    other = "0.9" if own != 0.9 else "0.1"
    assert dfscan(["scan", *CLIPS, "--out", str(out), "--resume", *FAST, "--threshold", other]) == EXIT_USAGE


def test_resume_at_another_precision_is_refused(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert dfscan(["scan", CLIPS[0], "--out", str(out), *FAST]) == EXIT_OK
    assert json.loads(out.read_text())["precision"] == "fp32"
    assert dfscan(["scan", *CLIPS, "--out", str(out), "--resume", *FAST, "--precision", "bf16"]) == EXIT_USAGE
    assert "precision fp32" in capsys.readouterr().err
