"""Batch-scan drill: unusual but real inputs that gave a wrong answer, lost a row or used
unbounded resources without an error."""
from __future__ import annotations

import numpy as np

from scanner.video_index import VideoIndex, choose_targets


def _index(pts: list[int], time_base: float) -> VideoIndex:
    p = np.asarray(pts, np.int64)
    return VideoIndex(pts=p, keyframe=np.ones(len(p), bool), truncated=False, time_base=time_base,
                      start=int(p[0]), width=64, height=64, codec="mpeg4", presentation=p)


def test_fps_sampling_of_a_video_whose_last_pts_is_absurd_stays_bounded():
    # Three packets, the last stamped 10^12 s on (a crafted or broken MKV: 10^15 at 1/1000):
    # --fps made np.arange of 10^12 times before the 10,000-frame cap was checked, an
    # "internal: MemoryError (7.28 TiB)" row; 10^9 s allocated gigabytes (an OOM kill).
    ix = _index([0, 1, 10**15], 1e-3)
    targets = choose_targets(ix, None, 1.0)
    assert targets == [0, 1, 10**15]
    # Below the cap the times are those of before (one every 1/fps s).
    short = _index(list(range(0, 10_001, 40)), 1e-3)  # 10 s at 25 fps
    assert len(choose_targets(short, None, 2.0)) == 21


def test_list_file_names_starting_with_a_hash_or_blank_are_files(tmp_path):
    # `ls > list.txt` beside "#shorts.mp4" (a hashtag title) and " intro.mp4": the first
    # line was taken for a comment (no row at all), the second stripped to "intro.mp4",
    # another video, scanned in its place without a word.
    from scanner.sources import expand_inputs

    for n in ("#shorts.mp4", " intro.mp4", "intro.mp4", "tail.mp4\t"):
        (tmp_path / n).write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("#shorts.mp4\n intro.mp4\ntail.mp4\t\n# a comment\n  \n #old.mp4\n", encoding="utf-8")
    assert expand_inputs([str(lst)]) == [tmp_path / n for n in ("#shorts.mp4", " intro.mp4", "tail.mp4\t")]
    # Blanks a hand-written list adds around a name that has none are still list syntax.
    lst.write_text("  intro.mp4  \r\n", encoding="utf-8")
    assert expand_inputs([str(lst)]) == [tmp_path / "intro.mp4"]


def test_a_folder_that_cannot_be_listed_is_an_input_not_skipped(tmp_path, monkeypatch):
    # A subfolder without read permission (another user's, mode 000): os.walk skipped it
    # silently, so its videos had no row and the scan exited 0. (Simulated: root reads it.)
    import os

    from scanner.sources import expand_inputs

    (tmp_path / "locked").mkdir()
    for n in ("a.mp4", "locked/b.mp4", "z.mp4"):
        (tmp_path / n).write_bytes(b"x")
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert expand_inputs([str(tmp_path)]) == [tmp_path / "a.mp4", tmp_path / "z.mp4", tmp_path / "locked"]


def test_resume_into_a_csv_torn_inside_its_header(tmp_path):
    # Killed while the header went out: --resume cut the torn record (the whole file) and
    # then refused the now empty file for having "other CSV columns" (exit 2).
    from scanner.output import CsvSink
    from scanner.resume import prepare_resume

    out = tmp_path / "r.csv"
    out.write_bytes(b"path,verdict,sco")
    state = prepare_resume(out, {"detector": "test_tiny"})
    assert state.done == set() and out.read_bytes() == b""
    sink = CsvSink(out, append=True)  # the resumed scan then starts the file afresh
    sink.close()
    assert out.read_text().startswith("path,verdict,score,")


def test_file_names_in_stderr_warnings_and_errors_are_terminal_safe(tmp_path):
    # stdout was escaped (test_terminal_names), stderr was not: a warning naming a file (the
    # frames a damaged video lost, a torn output cut by --resume) and a 'dfscan: error:'
    # line printed the name's ESC/BEL raw.
    import os
    import subprocess
    import sys

    from conftest import ROOT

    empty = tmp_path / "e\x1b]0;pwned\x07"
    empty.mkdir()
    (tmp_path / "z.mp4").write_bytes(b"")
    torn = tmp_path / "o\x1b[31m.jsonl"
    # Killed mid-row: --resume cuts it with a warning naming the file, then refuses the file
    # (another detector's rows) before any model loads.
    torn.write_bytes(b'{"path": "/v.mp4", "detector": "meso4_df", "verdict": "real"}\n{"pa')
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    for args, said in (([str(empty), "--out", str(tmp_path / "r.jsonl")], "no video files found"),
                       ([str(tmp_path / "z.mp4"), "--out", str(torn), "--resume"], "cut a torn last row")):
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", *args, "--detector", "test_tiny",
                            "--workers", "1", "--frames", "1"],
                           cwd=ROOT, capture_output=True, timeout=120, env=env)
        err = r.stderr.decode("utf-8")
        assert said in err and "\x1b" not in err and "\x07" not in err, err
        assert "\\x1b" in err


def test_retry_errors_keeps_a_csv_record_with_extra_fields(tmp_path):
    # A record with more fields than the header (hand-edited, or two writers interleaved on
    # a file system without locks) made --retry-errors' rewrite a ValueError traceback.
    from scanner.output import open_sink
    from scanner.resume import prepare_resume

    out = tmp_path / "r.csv"
    sink = open_sink(out)
    ok = {"path": str(tmp_path / "a.mp4"), "verdict": "real", "score": 0.1}
    sink.write(ok)
    sink.write({"path": str(tmp_path / "e\r.mp4"), "verdict": "error", "error": {"kind": "not_found"}})
    sink.close()
    lines = out.read_bytes().decode().split("\n")
    foreign = lines[1] + ',extra,"x ""y"""'
    out.write_bytes("\n".join([lines[0], foreign, *lines[1:]]).encode())
    state = prepare_resume(out, retry_errors=True)
    state.drop_retried()
    assert out.read_bytes().decode() == "\n".join([lines[0], foreign, lines[1], ""])


def test_a_pattern_or_folder_naming_no_video_is_reported(tmp_path, capsys):
    # `dfscan scan 'clips/*.MP4' other.mp4` with clips/ holding .mp4 only (a case slip), or an
    # empty folder next to others: the scan went on without a word of the input that named
    # nothing (a missing file gets a not_found row; a pattern has no file to give one).
    from conftest import DATA
    from scanner.cli import EXIT_OK, main
    from scanner.sources import expand_inputs

    (tmp_path / "clips").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "clips" / "a.mp4").symlink_to(DATA / "d1.mp4")
    items = [str(tmp_path / "clips" / "*.MP4"), str(tmp_path / "empty"), str(tmp_path / "clips")]
    unmatched: list[str] = []
    assert expand_inputs(items, unmatched=unmatched) == [tmp_path / "clips" / "a.mp4"]
    assert unmatched == items[:2]
    out = tmp_path / "r.jsonl"
    assert main(["scan", *items, "--out", str(out), "--detector", "test_tiny", "--frames", "1",
                 "--workers", "1", "--no-progress"]) == EXIT_OK
    said = capsys.readouterr().out
    assert f"{items[0]}: no video file found there" in said and f"{items[1]}: no video" in said


def _deny(monkeypatch, folder, search=True):
    """``folder`` as a user other than root sees it at mode 000 (root reads anything): it
    cannot be listed nor read, and with ``search`` no name inside it can be looked up
    either (``search=False``: mode 111, names inside still reachable)."""
    import os

    top = os.path.abspath(folder)
    real = {n: getattr(os, n) for n in ("scandir", "stat", "lstat", "access")}

    def under(path, strictly):
        if isinstance(path, int):
            return False
        p = os.path.abspath(os.fspath(path))
        return p.startswith(top + os.sep) or (not strictly and p == top)

    def denying(name, strictly):
        def call(path=".", *a, **k):
            if under(path, strictly):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real[name](path, *a, **k)
        return call

    monkeypatch.setattr(os, "scandir", denying("scandir", False))
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: not under(p, False) and real["access"](p, m, *a, **k))
    if search:
        monkeypatch.setattr(os, "stat", denying("stat", True))
        monkeypatch.setattr(os, "lstat", denying("lstat", True))


def test_a_named_file_in_a_folder_that_cannot_be_searched_or_an_unreadable_list_gets_a_row(tmp_path, monkeypatch):
    # `dfscan scan locked/clip.mp4 list.txt` with locked/ at mode 000 or list.txt at 600 (another
    # user's): Path.is_dir() / open() raised PermissionError and the whole scan was a traceback.
    import builtins

    from scanner.sources import expand_inputs

    (tmp_path / "locked").mkdir()
    for n in ("locked/clip.mp4", "a.mp4"):
        (tmp_path / n).write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4\n")
    _deny(monkeypatch, tmp_path / "locked")
    real_open = builtins.open

    def open_(file, *a, **k):
        if str(file) == str(lst):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", open_)
    assert expand_inputs([str(tmp_path / "locked" / "clip.mp4"), str(lst)]) == [tmp_path / "locked" / "clip.mp4", lst]


def _archive(root):
    for n in ("a1/clip.mp4", "b/clip.mp4", "locked/clip.mp4", "locked/deep/x.mp4", "top.mp4"):
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"x")


def test_a_pattern_makes_a_folder_it_cannot_list_an_input(tmp_path, monkeypatch):
    # `dfscan scan 'archive/**/*.mp4'` (or 'archive/*/clip.mp4') with archive/locked at mode
    # 000: glob skipped it without a word, its videos had no row and the scan exited 0, while
    # `dfscan scan archive/` gave it an error row. Now a pattern does as the folder does.
    from scanner.sources import expand_inputs

    _archive(tmp_path)
    _deny(monkeypatch, tmp_path / "locked")
    a1, b, locked, top = (tmp_path / n for n in ("a1/clip.mp4", "b/clip.mp4", "locked", "top.mp4"))
    cases = {"**/*.mp4": [a1, b, top, locked], "*/clip.mp4": [a1, b, locked], "*/deep/*.mp4": [locked],
             "locked/*.mp4": [locked], "a*/clip.mp4": [a1], "[ab]*/*.mp4": [a1, b], ".*/*.mp4": []}
    for pattern, want in cases.items():  # a folder no match could lie under is not looked at
        unmatched: list[str] = []
        assert expand_inputs([str(tmp_path / pattern)], unmatched=unmatched) == want, pattern
        assert unmatched == ([] if want else [str(tmp_path / pattern)]), pattern


def test_a_pattern_passing_through_a_folder_it_may_search_but_not_list_adds_no_row(tmp_path, monkeypatch):
    # Mode 111 (search without read): glob looks literal names up there and finds them, so
    # 'archive/*/clip.mp4' misses nothing and gets no error row; '**' finds locked/clip.mp4
    # too, but must list the folder for those below it (locked/deep/clip.mp4): a row.
    from scanner.sources import expand_inputs

    _archive(tmp_path)
    _deny(monkeypatch, tmp_path / "locked", search=False)
    clips = [tmp_path / n for n in ("a1/clip.mp4", "b/clip.mp4", "locked/clip.mp4")]
    assert expand_inputs([str(tmp_path / "*" / "clip.mp4")]) == clips
    assert expand_inputs([str(tmp_path / "*" / "deep" / "x.mp4")]) == [tmp_path / "locked/deep/x.mp4"]
    assert expand_inputs([str(tmp_path / "**" / "clip.mp4")]) == clips + [tmp_path / "locked"]


def test_scan_of_a_pattern_gives_a_folder_it_cannot_list_a_permission_row(tmp_path, monkeypatch):
    import json

    from conftest import DATA
    from scanner.cli import EXIT_INPUT_ERROR, main

    for n in ("a", "locked"):
        (tmp_path / n).mkdir()
        (tmp_path / n / "clip.mp4").symlink_to(DATA / "d1.mp4")
    _deny(monkeypatch, tmp_path / "locked")
    out = tmp_path / "r.jsonl"
    assert main(["scan", str(tmp_path / "*" / "clip.mp4"), "--out", str(out), "--detector", "test_tiny",
                 "--frames", "1", "--workers", "1", "--no-progress"]) == EXIT_INPUT_ERROR
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "locked")]
    assert rows[0]["verdict"] != "error" and rows[1]["error"]["kind"] == "permission"
