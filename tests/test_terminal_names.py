"""File names reach the terminal as text, never as terminal control or an encoding crash."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import DATA, ROOT
from scanner.cli import EXIT_OK

FAST = ["--detector", "test_tiny", "--frames", "2", "--workers", "1"]


def test_control_and_non_utf8_names_are_escaped_on_stdout(tmp_path):
    # ESC ]0;... retitles a terminal; ESC [1K + CR-less rewrite could turn "fake" into "real".
    hostile = "clip\x1b]0;pwned\x07\x1b[2K\u202ereal.mp4"
    os.link(DATA / "d1.mp4", tmp_path / hostile)
    os.link(DATA / "d2.mp4", os.fsencode(tmp_path) + b"/bad\xff.mp4")
    out = tmp_path / "r.jsonl"
    # PYTHONIOENCODING=utf-8: a strict UTF-8 stdout, as under LANG=en_US.UTF-8
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", str(tmp_path), "--out", str(out), *FAST],
                       cwd=ROOT, capture_output=True, timeout=300,
                       env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    stdout = r.stdout.decode("utf-8")
    assert r.returncode == EXIT_OK, r.stderr.decode()
    assert "\x1b" not in stdout and "\x07" not in stdout and "\u202e" not in stdout
    assert "clip\\x1b]0;pwned\\x07\\x1b[2K\\u202ereal.mp4" in stdout
    assert "bad\\udcff.mp4" in stdout
    names = {os.path.basename(json.loads(ln)["path"]) for ln in out.read_text().splitlines()}
    assert names == {hostile, "bad\udcff.mp4"}  # the outputs keep the exact names


def test_closed_stdout_stops_like_an_interrupt(tmp_path):
    """`dfscan scan ... | head -2`: rich's SystemExit(1) ended the scan without a word, and
    exit 1 read as 'an input failed'; now exit 141 with one line, rows whole, resumable."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(6):
        os.link(DATA / "d1.mp4", clips / f"v{i:02d}.mp4")
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "scanner.cli", "scan", str(clips), "--out", str(out), *FAST]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while b"v00.mp4" not in p.stdout.readline():  # the first video's line, then the reader goes
        pass
    p.stdout.close()
    assert p.wait(timeout=300) == 141
    err = p.stderr.read().decode()
    assert "Traceback" not in err and "dfscan: error: standard output was closed (broken pipe)" in err
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]  # every row whole
    assert 1 <= len(rows) < 6
    r = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == EXIT_OK and len(out.read_text().splitlines()) == 6


def test_stdout_closed_after_the_last_row_keeps_the_scans_exit_code(tmp_path):
    """The reader leaves after the last row (`| head -n 3`), while the HTML report renders:
    the summary table went through a plain rich Console, whose broken-pipe SystemExit(1)
    made a finished, all-fine scan exit 1 ('an input failed') without a word."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        os.link(DATA / "d1.mp4", clips / f"v{i:02d}.mp4")
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "scanner.cli", "scan", str(clips), "--out", str(out),
           "--out", str(tmp_path / "r.html"), *FAST]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = 0
    while seen < 2:  # both videos' lines, then the reader goes (the report is still rendering)
        seen += b".mp4" in p.stdout.readline()
    p.stdout.close()
    assert p.wait(timeout=300) == EXIT_OK, p.stderr.read().decode()
    assert len(out.read_text().splitlines()) == 2


def test_report_out_with_a_non_utf8_name_prints_an_escape(tmp_path):
    # The report was written, then printing its path raised UnicodeEncodeError (traceback,
    # exit 1) on a strict UTF-8 stdout.
    src = tmp_path / "r.jsonl"
    src.write_text("")
    out = os.fsencode(tmp_path) + b"/rep\xff\x1b.html"
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "report", str(src), "--out", os.fsdecode(out)],
                       cwd=ROOT, capture_output=True, timeout=120, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert r.returncode == EXIT_OK, r.stderr.decode()
    assert os.path.exists(out)
    assert "rep\\udcff\\x1b.html: 0 videos" in r.stdout.decode("utf-8")
