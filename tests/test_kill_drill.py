"""Kill and full-disk drill: finished rows are neither lost nor wrong, the scan ends as documented.

Findings of a drill on real footage (tests/data clips, the tiny test detector, 2 frames):
each case failed before its fix.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import DATA, ROOT
from scanner.cli import EXIT_OK, EXIT_OUTPUT
from scanner.outlock import OutputLocks

FAST = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]
CLIP = str(DATA / "d1.mp4")


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_output_lock_is_taken_when_the_disk_is_full(tmp_path, monkeypatch):
    """Writing our pid into the lock file failed with ENOSPC, which sent the lock round its
    retry loop forever: a scan into a full disk hung instead of exiting 4."""
    out = tmp_path / "r.jsonl"
    real_write = os.write

    def full_disk_write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk_write)
    locks, done = OutputLocks(), threading.Event()

    def take():
        locks.acquire([str(out)])
        done.set()

    threading.Thread(target=take, daemon=True).start()
    try:
        assert done.wait(5), "taking the output lock on a full disk never returned"
        assert [p.name for p, _ in locks._held] == [".r.jsonl.lock"]  # held, just without a pid
    finally:
        monkeypatch.undo()  # a looping thread (the bug) then gets its pid written and ends
        done.wait(5)
        locks.release()


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_scan_into_a_disk_full_from_the_start_exits_4_then_resumes(tmp_path):
    """End to end on a real full file system: exit 4 with one line (it hung), then
    ``--resume`` once there is room writes the row once."""
    with _tmpfs(tmp_path / "mnt", "8k") as mnt:
        pad = mnt / "pad"
        with contextlib.suppress(OSError), open(pad, "wb") as f:
            f.write(b"\0" * 65536)  # fills it: ENOSPC once the tmpfs is full
        out = mnt / "r.jsonl"
        r = _cli("scan", CLIP, "--out", str(out), *FAST, timeout=30)
        assert r.returncode == EXIT_OUTPUT, r.stderr
        assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
        assert not out.exists() or out.read_bytes() == b""  # no torn row
        pad.unlink()
        r = _cli("scan", CLIP, "--out", str(out), "--resume", *FAST)
        assert r.returncode == EXIT_OK, r.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [row["path"] for row in rows] == [CLIP]


def test_report_rendered_from_a_failed_secondary_jsonl_says_it_is_incomplete(tmp_path, monkeypatch, capsys):
    """``--out r.csv --out r.jsonl --out r.html`` with r.jsonl filling its disk: the scan goes
    on (r.csv holds every row) but the report, rendered from r.jsonl, showed its first rows as
    the whole scan ("1 videos" of 3), no note. It now says it is incomplete, and so does the
    error line."""
    from scanner.cli import main
    from scanner.durable import DurableFile

    csv_out, jsonl, html = tmp_path / "r.csv", tmp_path / "r.jsonl", tmp_path / "r.html"
    real_append, rows = DurableFile.append, []

    def append(self, text):
        if self.path == jsonl:
            if rows:  # the disk fills after the first row
                raise OSError(errno.ENOSPC, "No space left on device")
            rows.append(text)
        return real_append(self, text)

    monkeypatch.setattr(DurableFile, "append", append)
    clips = [str(DATA / n) for n in ("d1.mp4", "d2.mp4", "d18.mp4")]
    code = main(["scan", *clips, "--out", str(csv_out), "--out", str(jsonl), "--out", str(html), *FAST])
    err = capsys.readouterr().err
    assert code == EXIT_OUTPUT
    assert len(jsonl.read_text().splitlines()) == 1 and len(csv_out.read_text().splitlines()) == 4
    assert f"the report {html} rendered from it is incomplete" in err
    report = html.read_text()
    assert "dfscan report (1 videos)" in report and f"incomplete: {jsonl}" in report


@pytest.mark.parametrize("room_to_rewrite", [True, False])
def test_report_whose_thumbnails_do_not_fit_says_so(tmp_path, monkeypatch, capsys, room_to_rewrite):
    """The report with thumbnails filling the disk after the quick one fitted: the quick one
    stayed (right) but its note said "rendering them was interrupted" and the error line that
    the report "failed to close". Both now say it is written without thumbnails, why, and
    how to add them; with no room to rewrite the quick one, its note stays true (either cause)."""
    import scanner.report.scan_report as sr
    from scanner.cli import main

    real_write = sr.write_report

    def write_report(src, out, opts, meta):
        if opts.thumbnails or (not room_to_rewrite and "could not be written (" in meta["notes"][-1]):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(src, out, opts, meta)

    monkeypatch.setattr(sr, "write_report", write_report)
    jsonl, html = tmp_path / "r.jsonl", tmp_path / "r.html"
    assert main(["scan", CLIP, "--out", str(jsonl), "--out", str(html), *FAST]) == EXIT_OUTPUT
    err, report = capsys.readouterr().err, html.read_text()
    todo = f"free space, then run `dfscan report {jsonl} --out {html}` to add them"
    assert (f"html output {html} is written without thumbnails: the report with thumbnails could not "
            f"be written (No space left on device); {todo}") in err and "failed to close" not in err
    assert "dfscan report (1 videos)" in report and "<img " not in report
    assert "interrupted" not in report if room_to_rewrite else "not finished (interrupted, or it could not" in report
    assert ("could not be written (No space left on device); this one is the same without them; "
            f"{todo}" in report) == room_to_rewrite
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_whose_thumbnails_fill_a_real_disk_says_so(tmp_path):
    """As above on a tmpfs the quick report fits and the full one does not; then the command
    the note gives, once there is room, adds the thumbnails."""
    with _tmpfs(tmp_path / "mnt", "48k") as mnt:  # quick ~3-4 pages, full ~7, locks 2, JSONL 1
        jsonl, html = mnt / "r.jsonl", mnt / "r.html"
        clips = [CLIP, str(DATA / "d2.mp4")]
        r = _cli("scan", *clips, "--out", str(jsonl), "--out", str(html), *FAST)
        assert r.returncode == EXIT_OUTPUT, r.stderr
        assert f"html output {html} is written without thumbnails" in r.stderr, r.stderr
        assert "(No space left on device); free space, then run `dfscan report" in r.stderr
        report = html.read_text()
        assert "dfscan report (2 videos)" in report and "<img " not in report
        assert "could not be written (No space left on device); this one is the same without them" in report
        assert sorted(p.name for p in mnt.iterdir()) == ["r.html", "r.jsonl"]  # no temp file left
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)
        r = _cli("report", str(jsonl), "--out", str(html))
        assert r.returncode == EXIT_OK, r.stderr
        assert "<img " in html.read_text()


KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from engines.files import replacing
from scanner.report.render import _write_atomic

def die():
    yield "<html>half a report"
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "json":
    with replacing(sys.argv[2]) as tmp:
        tmp.write_text('{"auc": 0.')
        os.kill(os.getpid(), signal.SIGKILL)
_write_atomic(Path(sys.argv[2]), die)
"""


def _killed_mid_write(kind: str, out: Path) -> int:
    """The pid of a process SIGKILLed while replacing ``out`` (its temp file stays)."""
    p = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, kind, str(out)], cwd=ROOT, capture_output=True)
    assert p.returncode == -9, p.stderr
    return int(next(out.parent.glob(f".{out.name}.*.tmp")).name.split(".")[-2])


def test_temp_file_of_a_killed_replacement_is_removed_by_the_next_one(tmp_path):
    """A SIGKILL inside engines.files.replacing (JSON results, checkpoints) or while the HTML
    report was written left ``.NAME.PID.tmp`` beside it forever: each run's pid names a new
    one. The next replacement of that file removes it, once old, when that pid is gone; never
    another target's, another pattern's, a live process's or a recent one."""
    from engines.files import STALE_TEMP_S, write_json
    from scanner.report import ReportOptions, write_report

    out = tmp_path / "res.json"  # not written here: this process lists a folder once
    out.write_text('{"auc": 0.9}')
    dead, other_dead = _killed_mid_write("json", out), _killed_mid_write("json", tmp_path / "other.json")
    live = os.getppid()
    recent = out.with_name(f".res.json.{other_dead}.tmp")
    kept = [out.with_name(n) for n in (f".other.json.{other_dead}.tmp", f".res.json.{live}.tmp",
                                       ".res.json.tmp", f".res.json.{dead}.tmp.x")]
    old = time.time() - STALE_TEMP_S - 60
    for p in kept:
        p.touch()
    for p in [out.with_name(f".res.json.{dead}.tmp"), *kept]:
        os.utime(p, (old, old))
    recent.touch()  # a dead pid's, but recent: maybe a writer on another host sharing the folder
    write_json({"auc": 0.8}, out)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["res.json", recent.name, *(p.name for p in kept)])

    jsonl, html = tmp_path / "r" / "r.jsonl", tmp_path / "r" / "r.html"
    jsonl.parent.mkdir()
    jsonl.write_text(json.dumps({"path": "/x/a.mp4", "verdict": "real", "score": 0.1}) + "\n")
    stale = html.with_name(f".r.html.{_killed_mid_write('html', html)}.tmp")
    os.utime(stale, (old, old))
    write_report(jsonl, html, ReportOptions(thumbnails=False))
    assert sorted(p.name for p in html.parent.iterdir()) == ["r.html", "r.jsonl"]
