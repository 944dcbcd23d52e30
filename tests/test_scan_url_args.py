"""``dfscan scan`` reads local files and folders: a URL among its inputs (or in a list file)
is refused before any work, exit 2, one line, credentials masked. It was taken as a path:
'http://h/x.mp4' became the row of '<cwd>/http:/h/x.mp4', error not_found."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA

HINT = "(for a live stream: dfscan watch URL; an archived file: download it first)"


def test_a_url_is_refused_in_one_line_before_the_model_loads(tmp_path):
    out = tmp_path / "r.jsonl"
    code = ("import sys, json\nfrom scanner.cli import main\n"
            f"rc = main(['scan', 'http://127.0.0.1:8765/d18.mp4', '--out', {str(out)!r}])\n"
            "print(json.dumps([rc, 'torch' in sys.modules]))")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [2, False]  # no model, not even torch
    assert r.stderr == ("dfscan: error: scan reads local files and folders, not URLs: "
                        f"http://127.0.0.1:8765/d18.mp4 {HINT}\n")
    assert not out.exists() and time.monotonic() - t0 < 60


@pytest.mark.parametrize("url, shown", [
    ("http://bob:hunter22@cam.local:8765/d18.mp4", "http://***@cam.local:8765/d18.mp4"),
    ("rtsp://admin:hunter22@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("https://cdn.example/v.mp4?token=hunter22&x=1", "https://cdn.example/v.mp4?token=***&x=1"),
    ("rtmp://ingest.example/live/hunter22", "rtmp://ingest.example/live/***"),
])
def test_the_refusal_never_shows_a_secret(tmp_path, capsys, url, shown):
    from scanner.cli import main

    out = tmp_path / "r.jsonl"
    # A local video first: every input is looked at before any is expanded or scanned.
    assert main(["scan", str(DATA / "d1.mp4"), url, "--out", str(out), "--no-progress"]) == 2
    cap = capsys.readouterr()
    assert "hunter22" not in cap.out + cap.err
    assert cap.err == f"dfscan: error: scan reads local files and folders, not URLs: {shown} {HINT}\n"
    assert not out.exists()


def test_a_url_in_a_list_file_is_refused_with_its_line(tmp_path, capsys):
    from scanner.cli import main

    lst = tmp_path / "inputs.txt"
    lst.write_text(f"{DATA / 'd1.mp4'}\n# http://commented.out/x.mp4\n  srt://h:9000?passphrase=hunter22\n")
    assert main(["scan", str(lst), "--out", str(tmp_path / "r.jsonl"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "hunter22" not in err and err.count("\n") == 1
    assert f"not URLs: srt://h:9000?passphrase=***, line 3 of {lst} {HINT}" in err


def test_a_file_url_is_refused_and_names_its_path(tmp_path, capsys):
    from scanner.cli import main

    assert main(["scan", "file:///clips/a%20b.mp4", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert capsys.readouterr().err == ("dfscan: error: scan reads local files and folders, not URLs: "
                                       "file:///clips/a%20b.mp4 (give the file's path itself: /clips/a b.mp4)\n")


def test_local_names_that_look_like_urls_are_paths(tmp_path, monkeypatch, capsys):
    from scanner.cli import main
    from scanner.live.urls import is_url
    from scanner.sources import expand_inputs

    # Only 'scheme://' opening the argument is a URL: not one slash, not a drive letter.
    assert is_url("http://h/x") and is_url("HTTPS://h") and is_url("s3://b/k")
    assert not any(map(is_url, ["http:", "http:/x.mp4", "./http://x", "C://clips/a.mp4", "a/http://b"]))
    shutil.copy(DATA / "d1.mp4", tmp_path / "http:")
    monkeypatch.chdir(tmp_path)
    assert expand_inputs([str(tmp_path)]) == [tmp_path / "http:"]  # found by its first bytes
    assert expand_inputs(["http:/x.mp4"]) == [Path("http:/x.mp4")]  # a missing path: its row says so
    out = tmp_path / "r.jsonl"
    assert main(["scan", "http:", "--frames", "2", "--no-progress", "--no-details", "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["path"] == str(tmp_path / "http:") and row["verdict"] != "error"
    capsys.readouterr()
