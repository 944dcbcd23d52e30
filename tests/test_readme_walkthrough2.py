"""README walk-through, part 2: "Scanning" flags, "Reports" and "Other commands" tried as a
new user would (install command 1 only), and what each did differently from the README.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from scanner.cli import main
from scanner.config import ConfigError

ROW = {"path": "/nowhere/old/clip.mp4", "size_bytes": 10, "sha256": "0" * 64, "verdict": "real",
       "score": 0.1, "threshold": 0.5, "frames": 1, "faces": 1, "detector": "test_tiny",
       "weights_hash": "x", "frames_detail": []}


def _results(tmp_path: Path) -> Path:
    p = tmp_path / "results.jsonl"
    p.write_text(json.dumps(ROW) + "\n")
    return p


def test_report_out_ending_in_slash_is_refused(tmp_path, capsys):
    # `dfscan report results.jsonl --out reports/` wrote a file named `reports` (no .html)
    # and exited 0; eval, probe fit, separability and watch refuse such a name.
    res = _results(tmp_path)
    assert main(["report", str(res), "--out", str(tmp_path / "reports") + "/"]) == 4
    assert "names a directory" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_report_explain_on_a_missing_gpu_is_refused(tmp_path, monkeypatch, capsys):
    # `dfscan report --explain gradcam --device cuda` without a GPU exited 0; the page said
    # "Grad-CAM skipped: Found no NVIDIA driver ...". scan, bench and engines build exit 2.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = _results(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(res), "--explain", "gradcam", "--device", "cuda", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("dfscan: error: device cuda: no CUDA GPU")
    assert not out.exists()


def test_report_device_name_is_checked(tmp_path, capsys):
    res = _results(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["report", str(res), "--explain", "gradcam", "--device", "gpu"])
    assert e.value.code == 2 and "must be cpu, cuda or cuda:N" in capsys.readouterr().err


def test_gradcam_skipped_is_said_on_the_terminal(caplog):
    # The reason Grad-CAM was skipped (weights that do not load, another hash) was only in
    # the page's header; the command printed "written" and exited 0.
    from scanner.report.gradcam import make_explainer
    from scanner.report.render import ReportOptions

    with caplog.at_level(logging.WARNING, logger="dfscan"):
        ex, note = make_explainer([ROW], ReportOptions(explain="gradcam", thumbnails=False))
    assert ex is None and note.startswith("Grad-CAM skipped")
    assert [r.getMessage() for r in caplog.records] == [note]


@pytest.mark.parametrize("root, where", [
    ("/nowhere/old=/moved", "video not found at /moved/clip.mp4"),
    ("/elsewhere=/moved", "video not found at /nowhere/old/clip.mp4 (not under /elsewhere"),
    ("/moved", "video not found under /moved"),
])
def test_video_root_old_new_names_where_it_looked(root, where):
    # `--video-root OLD=NEW` with the video missing said "video not found under OLD=NEW",
    # naming no folder; the remapped path is what is missing.
    from scanner.report.thumbnails import locate

    path, why, _ = locate(ROW, root, True)
    assert path is None and why.startswith(where) and "=" not in why.split("(")[0]


def test_url_with_a_local_namesake_says_how_to_scan_it(tmp_path, monkeypatch):
    # README: a local name that starts like a URL is given as ./name. The refusal spoke
    # only of live streams and downloads, although the file was there.
    from scanner.sources import expand_inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "http:" / "x").mkdir(parents=True)
    (tmp_path / "http:" / "x" / "a.mp4").write_bytes(b"\0" * 16)
    (tmp_path / "list.txt").write_text("http://x/a.mp4\n")
    for item in ("http://x/a.mp4", "list.txt"):
        with pytest.raises(ConfigError, match=r"put \./ before it"):
            expand_inputs([item])
    with pytest.raises(ConfigError) as e:
        expand_inputs(["http://y/a.mp4"])
    assert "./" not in str(e.value)
    assert expand_inputs(["./http://x/a.mp4"]) == [Path("http:/x/a.mp4")]


def test_scan_out_ending_in_a_slash_is_refused(tmp_path):
    """`dfscan scan --out r.jsonl/` wrote the file r.jsonl (exit 0); every other command refuses
    an output that names a directory."""
    from scanner.output import OutputError, open_sink

    with pytest.raises(OutputError, match="names a directory"):
        open_sink(f"{tmp_path}/r.jsonl/")
    assert not (tmp_path / "r.jsonl").exists()
