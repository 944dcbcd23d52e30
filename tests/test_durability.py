"""Nothing lost, nothing confusing: output failures, resume, signals (issue 11, items 1-3).

Scans use the tiny test detector on the real clips of tests/data (2 frames each),
so each ``dfscan scan`` here takes seconds.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, ROOT
from scanner.cli import EXIT_INPUT_ERROR, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE, main
from scanner.output import CsvSink, JsonlSink, OutputError, SinkSet

FAST = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]
CLIPS = [str(DATA / n) for n in ("d1.mp4", "d2.mp4", "d18.mp4")]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse


def _cli(*args: str, timeout: float = 300, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*prefix, sys.executable, "-m", "scanner.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# -- item 1: output failures stop the scan --------------------------------------------------

def test_disk_full_stops_the_scan_with_exit_4(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.symlink_to("/dev/full")  # every write fails with ENOSPC
    code = main(["scan", *CLIPS, "--out", str(out), *FAST])
    cap = capsys.readouterr()
    assert code == EXIT_OUTPUT
    err = [line for line in cap.err.splitlines() if line.startswith("dfscan: error")]
    assert len(err) == 1 and "No space left on device" in err[0] and str(out) in err[0]
    assert "Traceback" not in cap.err
    # It stopped at the first row: the other clips were never reported as scanned.
    assert sum(c in cap.out for c in CLIPS) <= 1


def _no_dac_override() -> tuple[str, ...]:
    """Root ignores folder permissions; drop that capability so a 0555 folder is read-only."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot make a folder read-only for us")
    caps = "-dac_override,-dac_read_search"
    return ("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}")


def test_read_only_folder_is_one_line_and_exit_4(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = _cli("scan", CLIPS[0], "--out", str(ro / "out.jsonl"), *FAST, prefix=_no_dac_override())
    finally:
        ro.chmod(0o755)
    assert r.returncode == EXIT_OUTPUT, r.stderr
    assert "Traceback" not in r.stderr
    assert f"dfscan: error: cannot write {ro / 'out.jsonl'}: Permission denied" in r.stderr
    assert not (ro / "out.jsonl").exists()


def test_secondary_output_failure_is_reported_and_exit_4(tmp_path, capsys):
    out, report = tmp_path / "o.jsonl", tmp_path / "o.html"
    report.symlink_to("/dev/full")  # the HTML report cannot be written
    code = main(["scan", *CLIPS[:2], "--out", str(out), "--out", str(report), *FAST])
    assert code == EXIT_OUTPUT
    assert len(_rows(out)) == 2  # the primary output is complete
    assert "html output" in capsys.readouterr().err


def test_output_deleted_during_scan_is_noticed(tmp_path):
    d = tmp_path / "gone"
    sinks = SinkSet([JsonlSink(d / "o.jsonl")])
    sinks.write({"path": "a.mp4", "verdict": "real"})
    shutil.rmtree(d)  # writes would now go to an unlinked file and vanish
    with pytest.raises(OutputError, match="deleted"):
        sinks.write({"path": "b.mp4", "verdict": "real"})
    sinks.close()


# -- item 2: resume that cannot corrupt -----------------------------------------------------

def test_resume_cuts_a_torn_line_and_rescans_that_input(tmp_path):
    out = tmp_path / "o.jsonl"
    assert main(["scan", *CLIPS[:2], "--out", str(out), *FAST]) == EXIT_OK
    with open(out, "a") as f:  # killed mid-write of the third row
        f.write('{"path": "%s", "verdict": "re' % CLIPS[2])
    assert main(["scan", *CLIPS, "--out", str(out), "--resume", *FAST]) == EXIT_OK
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == sorted(CLIPS)


def test_resume_matches_relative_and_absolute_spellings(tmp_path, monkeypatch):
    out = tmp_path / "o.jsonl"
    monkeypatch.chdir(DATA)
    assert main(["scan", "d1.mp4", "--out", str(out), *FAST]) == EXIT_OK
    monkeypatch.chdir(tmp_path)
    assert main(["scan", str(DATA / "d1.mp4"), "../" + os.path.relpath(DATA / "d2.mp4", tmp_path.parent),
                 "--out", str(out), "--resume", *FAST]) == EXIT_OK
    paths = [r["path"] for r in _rows(out)]
    assert paths == [str(DATA / "d1.mp4"), str(DATA / "d2.mp4")]  # absolute, no duplicate


def test_retry_errors_rescans_error_rows_only(tmp_path):
    out, late = tmp_path / "o.jsonl", tmp_path / "late.mp4"
    assert main(["scan", CLIPS[0], str(late), "--out", str(out), *FAST]) == EXIT_INPUT_ERROR
    first = {r["path"]: r for r in _rows(out)}
    assert first[str(late)]["error"]["kind"] == "not_found"
    shutil.copy(CLIPS[1], late)  # the missing file arrived
    # plain --resume keeps the error row, and the exit code still says an input failed
    assert main(["scan", CLIPS[0], str(late), "--out", str(out), "--resume", *FAST]) == EXIT_INPUT_ERROR
    assert len(_rows(out)) == 2
    assert main(["scan", CLIPS[0], str(late), "--out", str(out), "--retry-errors", *FAST]) == EXIT_OK
    rows = {r["path"]: r for r in _rows(out)}
    assert len(_rows(out)) == 2 and rows[str(late)]["verdict"] != "error"
    assert rows[CLIPS[0]] == first[CLIPS[0]]  # the good row was not rescanned


@pytest.mark.parametrize("change, what", [(["--frames", "3"], "sampling"),
                                          (["--detector", "test_meso4"], "detector")])
def test_resume_refuses_another_detector_or_sampling(tmp_path, capsys, change, what):
    out = tmp_path / "o.jsonl"
    assert main(["scan", CLIPS[0], "--out", str(out), *FAST]) == EXIT_OK
    before = out.read_bytes()
    assert main(["scan", *CLIPS[:2], "--out", str(out), "--resume", *FAST, *change]) == EXIT_USAGE
    assert what in capsys.readouterr().err
    assert out.read_bytes() == before


def test_resume_refuses_other_weights(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert main(["scan", CLIPS[0], "--out", str(out), *FAST]) == EXIT_OK
    row = _rows(out)[0]
    out.write_text(json.dumps({**row, "weights_hash": "0123456789abcdef"}) + "\n")
    assert main(["scan", *CLIPS[:2], "--out", str(out), "--resume", *FAST]) == EXIT_USAGE
    assert "weights_hash 0123456789abcdef" in capsys.readouterr().err
    assert len(_rows(out)) == 1


def test_csv_rows_are_fsynced_and_resume_cuts_torn_csv(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    out = tmp_path / "o.csv"
    sink = CsvSink(out)
    n0 = len(synced)
    sink.write({"path": CLIPS[0], "verdict": "error", "error": {"kind": "x", "message": "two\nlines"}})
    assert len(synced) == n0 + 1  # one fsync per row, like JSONL
    sink.close()
    with open(out, "a") as f:
        f.write(CLIPS[1] + ",rea")  # torn second row
    monkeypatch.undo()
    # the kept row is an error (written by hand above): the exit code answers for it too
    assert main(["scan", *CLIPS[:2], "--out", str(out), "--resume", *FAST]) == EXIT_INPUT_ERROR
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == CLIPS[:2] and rows[1]["verdict"] not in ("", "error")


def test_csv_keeps_a_newline_in_a_file_name_and_resume_matches_it(tmp_path):
    """A file name with a newline was written with a space instead (another file's name), so
    --resume never matched it and appended a duplicate row on every run."""
    clip = tmp_path / "new\nline.mp4"
    shutil.copyfile(CLIPS[0], clip)
    out = tmp_path / "o.csv"
    for _ in range(2):
        assert main(["scan", str(clip), "--out", str(out), "--resume", *FAST]) == EXIT_OK
        rows = list(csv.DictReader(out.open(newline="")))
        assert [r["path"] for r in rows] == [str(clip)]


def test_resume_cuts_a_csv_record_torn_inside_a_quoted_newline(tmp_path):
    from scanner.resume import cut_torn_tail

    out = tmp_path / "o.csv"
    sink = CsvSink(out)
    sink.write({"path": "a\nb.mp4", "verdict": "real"})
    sink.close()
    whole = out.read_bytes()
    out.write_bytes(whole + b'"c\n')  # killed just after the newline inside a quoted name
    assert cut_torn_tail(out) == 3 and out.read_bytes() == whole
    assert cut_torn_tail(out) == 0  # a complete file is left alone
    assert [r["path"] for r in csv.DictReader(out.open(newline=""))] == ["a\nb.mp4"]


def test_out_given_twice_writes_both(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.csv"
    assert main(["scan", *CLIPS[:2], "--out", str(a), "--out", str(b), *FAST]) == EXIT_OK
    assert len(_rows(a)) == 2 and len(list(csv.DictReader(b.open()))) == 2


def test_same_out_twice_is_a_usage_error(tmp_path, capsys):
    a = tmp_path / "a.jsonl"
    assert main(["scan", CLIPS[0], "--out", str(a), "--out", str(a), *FAST]) == EXIT_OUTPUT
    assert "given twice" in capsys.readouterr().err


# -- item 4: bounded memory ----------------------------------------------------------------

def test_fps_sampling_is_bounded(tmp_path, monkeypatch):
    """--fps on a long video samples at most MAX_SAMPLED_FRAMES frames, spread over all of it."""
    from conftest import make_video
    from scanner import decode

    clip = make_video(tmp_path / "long.mp4", frames=100, fps=25)  # 4 s: 100 frames at --fps 25
    monkeypatch.setattr(decode, "MAX_SAMPLED_FRAMES", 10)
    sampler = decode.FrameSampler(clip, fps=25.0)
    got = [f.index for f in sampler]
    assert len(got) == 10 and got[0] == 0 and got[-1] >= 95  # thinned evenly, first to last
    assert len(list(decode.FrameSampler(clip, fps=2.0))) == 8  # under the cap: one every 0.5 s of 4 s


# -- item 3: signals ------------------------------------------------------------------------

def _copies(tmp_path: Path, n: int) -> Path:
    """``n`` distinct inputs (links to one real clip) in a list file."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        os.link(DATA / "d2.mp4", src / f"v{i:03d}.mp4")
    return src


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_keeps_finished_rows_and_writes_html(tmp_path, sig, code):
    src = _copies(tmp_path, 40)
    out, report = tmp_path / "o.jsonl", tmp_path / "o.html"
    args = [sys.executable, "-m", "scanner.cli", "scan", str(src), "--out", str(out), "--out", str(report),
            "--detector", "test_tiny", "--frames", "8", "--no-progress", "--workers", "2"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    rows = _rows(out)
    printed = set(re.findall(re.escape(str(src)) + r"/v\d+\.mp4", stdout))
    # Every video reported as finished is in the output, nothing else, and not all were scanned.
    assert {r["path"] for r in rows} == printed and 3 <= len(rows) < 40
    assert "rerun with --resume" in stderr and "Traceback" not in stderr
    assert report.exists() and report.stat().st_size > 0
    # --resume finishes the job with exactly one row per input.
    r = _cli("scan", str(src), "--out", str(out), "--resume", "--detector", "test_tiny", "--frames", "8",
             "--no-progress", "--workers", "2")
    assert r.returncode == EXIT_OK, r.stderr
    assert sorted(x["path"] for x in _rows(out)) == sorted(str(p) for p in src.iterdir())


def test_whole_file_writes_keep_the_old_file_when_writing_fails(tmp_path):
    from engines.files import replacing, write_json

    out = write_json({"auc": 0.9}, tmp_path / "sub" / "res.json")
    with pytest.raises(OSError):
        with replacing(out) as tmp:
            tmp.write_text('{"auc": 0.')  # half written, then the disk is full
            raise OSError(28, "No space left on device")
    assert json.loads(out.read_text()) == {"auc": 0.9}
    assert sorted(p.name for p in out.parent.iterdir()) == ["res.json"]  # no temporary left
    write_json({"auc": 0.8}, out)
    assert json.loads(out.read_text()) == {"auc": 0.8}
