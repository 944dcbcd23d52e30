"""--resume / --retry-errors keep one row per input in *every* JSONL/CSV output, not only the
primary: rows go to the primary first, so a kill between two writes left a secondary a row
short, and --retry-errors removed error rows from the primary only."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from conftest import DATA
from scanner.cli import EXIT_INPUT_ERROR, EXIT_OK, main

FAST = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]


def _paths(out: Path) -> list[str]:
    if out.suffix == ".csv":
        with open(out, newline="") as f:
            return sorted(r["path"] for r in csv.DictReader(f))
    return sorted(json.loads(line)["path"] for line in out.read_text().splitlines())


def _inputs(tmp_path: Path, names=("a.mp4", "b.mp4", "c.mp4")) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for n in names:
        os.link(DATA / "d1.mp4", src / n)
    return src


def test_retry_errors_rewrites_every_output(tmp_path):
    src = _inputs(tmp_path, ("a.mp4",))
    (src / "bad.mp4").write_bytes(b"not a video")
    outs = [tmp_path / "o.jsonl", tmp_path / "o.csv", tmp_path / "copy.jsonl"]
    args = ["scan", str(src), *(x for o in outs for x in ("--out", str(o))), *FAST]
    assert main(args) == EXIT_INPUT_ERROR
    assert main([*args, "--retry-errors"]) == EXIT_INPUT_ERROR  # still not a video
    want = sorted(str(src / n) for n in ("a.mp4", "bad.mp4"))
    for o in outs:  # the secondaries kept the old error row next to the new one
        assert _paths(o) == want, o


def test_resume_fills_secondaries_a_kill_left_a_row_short(tmp_path):
    src = _inputs(tmp_path)
    prim, sec_csv, sec_jsonl = tmp_path / "o.jsonl", tmp_path / "o.csv", tmp_path / "copy.jsonl"
    args = ["scan", str(src), "--out", str(prim), "--out", str(sec_csv), "--out", str(sec_jsonl), *FAST]
    assert main(args) == EXIT_OK
    # Killed after the last row reached the primary, before the secondaries got it (and the
    # JSONL copy was also one row behind): what a SIGKILL between two sink writes leaves.
    lines = sec_csv.read_text().splitlines(keepends=True)
    sec_csv.write_text("".join(lines[:-1]))
    lines = sec_jsonl.read_text().splitlines(keepends=True)
    sec_jsonl.write_text("".join(lines[:-2]))
    assert main([*args, "--resume"]) == EXIT_OK
    want = sorted(str(p) for p in src.iterdir())
    for o in (prim, sec_csv, sec_jsonl):  # every output whole, the primary not duplicated
        assert _paths(o) == want, o


def test_resume_with_a_new_secondary_rescans_nothing(tmp_path):
    src = _inputs(tmp_path)
    prim, new = tmp_path / "o.jsonl", tmp_path / "new.csv"
    assert main(["scan", str(src), "--out", str(prim), *FAST]) == EXIT_OK
    before = prim.read_bytes()
    assert main(["scan", str(src), "--out", str(prim), "--out", str(new), "--resume", *FAST]) == EXIT_OK
    assert prim.read_bytes() == before and _paths(new) == []  # an output added now gets new rows only


def test_retry_errors_through_a_symlink_rewrites_the_file_it_points_to(tmp_path):
    # --retry-errors rewrote the output with os.replace onto the name given: a symlink
    # (latest.jsonl -> runs/1/r.jsonl) became a file of its own, so the retried rows went
    # there and the file it pointed to kept the old error rows for good.
    src = _inputs(tmp_path, ("a.mp4",))
    (src / "late.mp4").write_bytes(b"still being copied")
    (tmp_path / "runs").mkdir()
    real, link = tmp_path / "runs" / "r.jsonl", tmp_path / "latest.jsonl"
    link.symlink_to(real)
    args = ["scan", str(src), "--out", str(link), *FAST]
    assert main(args) == EXIT_INPUT_ERROR
    (src / "late.mp4").unlink()
    os.link(DATA / "d1.mp4", src / "late.mp4")  # the copy finished
    assert main([*args, "--retry-errors"]) == EXIT_OK
    assert link.is_symlink() and os.path.realpath(link) == str(real)
    rows = [json.loads(line) for line in real.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in src.iterdir())
    assert all(r["verdict"] != "error" for r in rows)


def test_retry_errors_on_a_full_disk_is_an_output_error_and_leaves_no_copy(tmp_path, monkeypatch):
    # The rewrite without the error rows failing (disk full) was an OSError traceback (exit 1,
    # 'an input failed') that left the partial o.jsonl.resume-tmp beside the output.
    import errno

    from scanner.cli import EXIT_OUTPUT

    src = _inputs(tmp_path, ("a.mp4",))
    (src / "bad.mp4").write_bytes(b"not a video")
    out = tmp_path / "o.jsonl"
    args = ["scan", str(src), "--out", str(out), *FAST]
    assert main(args) == EXIT_INPUT_ERROR
    before = out.read_bytes()
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".resume-tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main([*args, "--retry-errors"]) == EXIT_OUTPUT
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["o.jsonl", "src"]


def test_resume_into_a_read_only_output_is_an_output_error(tmp_path, monkeypatch):
    # Repairing a torn tail opens each output read-write: a read-only secondary (now read by
    # --resume too) was a PermissionError traceback instead of the sink's 'cannot write' (exit 4).
    import builtins
    import errno

    import scanner.resume
    from scanner.cli import EXIT_OUTPUT

    src = _inputs(tmp_path, ("a.mp4",))
    prim, sec = tmp_path / "o.jsonl", tmp_path / "ro.csv"
    args = ["scan", str(src), "--out", str(prim), "--out", str(sec), *FAST]
    assert main(args) == EXIT_OK

    def read_only(file, mode="r", *a, **k):  # as for a non-root user after chmod a-w (tests run as root)
        if os.fspath(file) == str(sec) and any(c in mode for c in "+wa"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return builtins.open(file, mode, *a, **k)

    monkeypatch.setattr(scanner.resume, "open", read_only, raising=False)
    assert main([*args, "--resume"]) == EXIT_OUTPUT


def test_resume_warns_that_a_new_report_gets_only_this_runs_rows(tmp_path, capsys):
    # `--out a.csv` killed, then `--resume --out a.csv --out r.html`: the report is rendered
    # from the new r.jsonl, which gets this run's rows only, and said '0 videos' with exit 0.
    src = _inputs(tmp_path)
    prim, html = tmp_path / "a.csv", tmp_path / "r.html"
    assert main(["scan", str(src), "--out", str(prim), *FAST]) == EXIT_OK
    capsys.readouterr()
    assert main(["scan", str(src), "--out", str(prim), "--out", str(html), "--resume", *FAST]) == EXIT_OK
    out = " ".join(capsys.readouterr().out.split())
    assert f"{tmp_path / 'r.jsonl'} is new" in out and f"the report {html}" in out
    assert "not the 3 already in" in out


def test_resumed_scan_exit_code_counts_the_rows_it_kept(tmp_path, capsys):
    """A resumed scan's exit code answers for every input named: a fake (with
    --fail-on-fake) or an error row kept from the run it resumes used to exit 0."""
    from scanner.cli import EXIT_FAKE

    src = _inputs(tmp_path, ("a.mp4", "b.mp4"))
    out = tmp_path / "o.jsonl"
    judged = ["scan", str(src / "a.mp4"), "--out", str(out), "--threshold", "0", "--fail-on-fake", *FAST]
    assert main(judged) == EXIT_FAKE  # every score reaches threshold 0: a is fake
    # resumed over both: a is skipped (its fake row kept), b is scanned
    both = ["scan", str(src), "--out", str(out), "--threshold", "0", "--resume", *FAST]
    assert main([*both, "--fail-on-fake"]) == EXIT_FAKE
    assert "(1 fake: counted in the exit code)" in capsys.readouterr().out
    assert main(both) == EXIT_OK  # without --fail-on-fake a fake is no failure
    (src / "bad.mp4").write_bytes(b"not a video")
    assert main(both) == EXIT_INPUT_ERROR
    assert main(both) == EXIT_INPUT_ERROR  # its error row kept: still an input that failed
    assert main([*both, "--retry-errors"]) == EXIT_INPUT_ERROR  # retried, still not a video
    (src / "bad.mp4").unlink()
    assert main(both) == EXIT_OK  # an input not named now does not count
