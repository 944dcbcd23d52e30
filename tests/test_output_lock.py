"""Two scans into one output: the second is refused at once instead of duplicating every row."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import DATA, ROOT
from scanner.cli import EXIT_OK, EXIT_OUTPUT, main
from scanner.output import OutputError

FAST = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]
CLIP = str(DATA / "d1.mp4")


def test_second_scan_into_the_same_output_is_refused(tmp_path, capsys):
    out, report = tmp_path / "o.jsonl", tmp_path / "o.html"
    holder = subprocess.Popen(  # another scan holding the output (its lock, as a scan takes it)
        [sys.executable, "-c", "import sys, time; from scanner.outlock import OutputLocks\n"
         f"OutputLocks().acquire([{str(out)!r}]); print('locked', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["scan", CLIP, "--out", str(out), "--out", str(report), "--resume", *FAST])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == EXIT_OUTPUT
    assert f"cannot write {out}: another dfscan scan (pid {holder.pid}) is writing it" in err
    assert not out.exists() and not report.exists()  # nothing read, scanned or appended
    # The holder was killed: its lock file stays but no longer locks; the next scan takes it
    # over and removes it when done.
    assert (tmp_path / ".o.jsonl.lock").exists()
    assert main(["scan", CLIP, "--out", str(out), "--resume", *FAST]) == EXIT_OK
    assert len(out.read_text().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]


def test_two_scans_started_together_write_each_row_once(tmp_path):
    out = tmp_path / "o.jsonl"
    clips = [str(p) for p in sorted(DATA.glob("*.mp4"))]
    cmd = [sys.executable, "-m", "scanner.cli", "scan", *clips, "--out", str(out), "--resume", *FAST]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    lines = out.read_text().splitlines()
    # Before: both scanned every clip and appended (each row twice, both exit 0).
    assert len(lines) == len(clips), lines
    assert codes in ([EXIT_OK, EXIT_OK], [EXIT_OK, EXIT_OUTPUT]), results


def test_an_output_reached_through_a_symlink_shares_the_lock(tmp_path):
    # The lock sat beside the name given, so a scan writing real.jsonl and another writing
    # it through link.jsonl each took a lock of their own and both appended.
    from scanner.outlock import OutputLocks

    real, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    real.write_text("")
    link.symlink_to(real)
    with OutputLocks() as held:
        held.acquire([str(real)])
        with pytest.raises(OutputError, match="another dfscan scan"):
            OutputLocks().acquire([str(link)])


def test_one_output_under_two_hard_link_names_is_given_twice(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("")
    os.link(a, b)
    assert main(["scan", CLIP, "--out", str(a), "--out", str(b), "--resume", *FAST]) == EXIT_OUTPUT
    assert f"--out {b} is given twice" in capsys.readouterr().err


def test_a_scan_through_a_second_hard_link_name_is_refused(tmp_path, capsys):
    # Each name had a lock file of its own, so a scan writing b.jsonl (another name of
    # a.jsonl) ran beside the scan of a.jsonl and both appended to the one file.
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("")
    os.link(a, b)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from scanner.outlock import OutputLocks\n"
         f"OutputLocks().acquire([{str(a)!r}]); print('locked', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["scan", CLIP, "--out", str(b), "--resume", *FAST])
    finally:
        holder.kill()
        holder.wait()
    assert code == EXIT_OUTPUT
    assert "another dfscan scan is writing this file under another name" in capsys.readouterr().err
    assert a.read_text() == ""
    assert main(["scan", CLIP, "--out", str(b), "--resume", *FAST]) == EXIT_OK  # free again
    assert len(a.read_text().splitlines()) == 1


def test_an_output_created_by_the_scan_is_locked_under_every_name(tmp_path):
    from scanner.outlock import OutputLocks

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with OutputLocks() as held:
        held.acquire([str(a)])  # not there yet: only its lock file
        a.write_text("")  # the sink creates it
        held.acquire_files([str(a)])
        os.link(a, b)
        with OutputLocks() as other, pytest.raises(OutputError, match="under another name"):
            other.acquire([str(b)])
    with OutputLocks() as again:  # released on exit
        again.acquire([str(b)])
