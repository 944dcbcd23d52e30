"""Batch results audit 3: what --resume keeps must still describe the file at that path,
and a report of a scan that stopped early must say so. Real scans of the bundled clips."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

from conftest import DATA
from scanner.cli import EXIT_OK, EXIT_OUTPUT, main

FAST = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]


def _rows(out: Path) -> dict[str, list[dict]]:
    """Rows of a JSONL or CSV output by file name (a list: a duplicate shows as two)."""
    if out.suffix == ".csv":
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(Path(r["path"]).name, []).append(r)
    return by


def _src(tmp_path: Path, clips: dict[str, str]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, clip in clips.items():  # copies: the tests change them, never the bundled clips
        shutil.copyfile(DATA / clip, src / name)
    return src


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_rescans_an_input_replaced_since_its_row(tmp_path, caplog):
    # x.mp4 scanned, then replaced by another video under the same name: --resume kept the
    # old row (another file's size, hash and verdict) as x.mp4's answer, without a word.
    src = _src(tmp_path, {"x.mp4": "d1.mp4", "y.mp4": "d2.mp4"})
    outs = [tmp_path / "o.jsonl", tmp_path / "o.csv"]
    args = ["scan", str(src), *(a for o in outs for a in ("--out", str(o))), *FAST]
    assert main(args) == EXIT_OK
    shutil.copyfile(DATA / "d18.mp4", src / "x.mp4")
    os.link(src / "y.mp4", tmp_path / "y_again.mp4")  # a new hard link (ctime moves) is no change
    caplog.clear()
    assert main([*args, "--resume"]) == EXIT_OK
    assert "1 input(s) changed since their row was written" in caplog.text
    assert f"{src / 'x.mp4'}: its size is {(DATA / 'd18.mp4').stat().st_size} bytes" in caplog.text
    for o in outs:  # one row per input in every output, x's of the file there now
        rows = _rows(o)
        assert sorted(rows) == ["x.mp4", "y.mp4"] and all(len(v) == 1 for v in rows.values()), o
        assert rows["x.mp4"][0]["sha256"] == _sha(DATA / "d18.mp4"), o
        assert rows["y.mp4"][0]["sha256"] == _sha(DATA / "d2.mp4"), o
    caplog.clear()
    assert main([*args, "--resume"]) == EXIT_OK  # nothing changed now: nothing rescanned
    assert "changed since" not in caplog.text and len(_rows(outs[0])) == 2


def test_resume_rescans_an_input_rewritten_in_place_at_the_same_size(tmp_path, caplog):
    # Bytes rewritten in place (an edited clip of the same size): only the modification
    # time says so, and it is later than the output's last row.
    src = _src(tmp_path, {"x.mp4": "d1.mp4"})
    out = tmp_path / "o.jsonl"
    args = ["scan", str(src), "--out", str(out), *FAST]
    assert main(args) == EXIT_OK
    old = _rows(out)["x.mp4"][0]
    data = bytearray((src / "x.mp4").read_bytes())
    data[-100:] = bytes(100)  # same size, other bytes
    (src / "x.mp4").write_bytes(bytes(data))
    before = (src / "x.mp4").stat().st_mtime_ns - 1_000_000_000  # whatever the clock's tick:
    os.utime(out, ns=(before, before))  # the output's last row was written before the edit
    caplog.clear()
    main([*args, "--resume"])
    assert "modified after the output's last row was written" in caplog.text
    rows = _rows(out)["x.mp4"]
    assert len(rows) == 1 and rows[0]["sha256"] == _sha(src / "x.mp4") != old["sha256"]


def test_resume_keeps_the_row_of_an_unchanged_input_copied_with_its_times(tmp_path, caplog):
    # A modification time from before the output's last row, same size: no rescan.
    src = _src(tmp_path, {"x.mp4": "d1.mp4"})
    out = tmp_path / "o.jsonl"
    args = ["scan", str(src), "--out", str(out), *FAST]
    assert main(args) == EXIT_OK
    st = (src / "x.mp4").stat()
    shutil.copy2(src / "x.mp4", tmp_path / "tmp.mp4")
    os.replace(tmp_path / "tmp.mp4", src / "x.mp4")  # the same bytes, times kept (cp -p)
    assert (src / "x.mp4").stat().st_mtime_ns == st.st_mtime_ns
    caplog.clear()
    assert main([*args, "--resume"]) == EXIT_OK
    assert "changed since" not in caplog.text and len(_rows(out)["x.mp4"]) == 1


def _notes(html: Path) -> str:
    return " ".join(html.read_text().split())


def test_report_of_an_interrupted_scan_says_how_many_inputs_it_lacks(tmp_path, monkeypatch):
    # SIGTERM after the first row: the report showed "1 videos" as the whole scan of 4.
    import scanner.output

    src = _src(tmp_path, {f"v{i}.mp4": "d1.mp4" for i in range(4)})
    out, html = tmp_path / "o.jsonl", tmp_path / "o.html"
    write = scanner.output.JsonlSink.write

    def write_then_term(self, row):
        write(self, row)
        os.kill(os.getpid(), signal.SIGTERM)  # the graceful stop: no new video starts

    monkeypatch.setattr(scanner.output.JsonlSink, "write", write_then_term)
    assert main(["scan", str(src), "--out", str(out), "--out", str(html), *FAST]) == 128 + signal.SIGTERM
    n = len(out.read_text().splitlines())
    assert n < 4
    assert f"incomplete: the scan stopped before {4 - n} of its inputs were scanned" in _notes(html)
    monkeypatch.undo()
    assert main(["scan", str(src), "--out", str(out), "--out", str(html), "--resume", *FAST]) == EXIT_OK
    assert "incomplete" not in _notes(html) and len(out.read_text().splitlines()) == 4


def test_report_of_a_scan_whose_primary_failed_says_it_is_incomplete(tmp_path, monkeypatch):
    import errno

    import scanner.output

    src = _src(tmp_path, {f"v{i}.mp4": "d2.mp4" for i in range(3)})
    out, html = tmp_path / "o.jsonl", tmp_path / "o.html"
    append, calls = scanner.output.DurableFile.append, []

    def full_after_one(self, text):
        calls.append(self.path)
        if self.path == out and len([c for c in calls if c == out]) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        append(self, text)

    monkeypatch.setattr(scanner.output.DurableFile, "append", full_after_one)
    assert main(["scan", str(src), "--out", str(out), "--out", str(html), *FAST]) == EXIT_OUTPUT
    assert len(out.read_text().splitlines()) == 1
    assert "incomplete: the scan stopped before 2 of its inputs were scanned" in _notes(html)


def test_retry_errors_rewrite_keeps_lines_it_cannot_read(tmp_path):
    """The atomic rewrite that drops retried rows also dropped every line that was not JSON
    (a note someone appended, a line another tool wrote): lost without a word."""
    from scanner.resume import prepare_resume

    out = tmp_path / "r.jsonl"
    rows = [{"path": str(tmp_path / "a.mp4"), "verdict": "error", "error": {"kind": "not_found"}},
            {"path": str(tmp_path / "b.mp4"), "verdict": "real", "score": 0.1}]
    out.write_text(json.dumps(rows[0]) + "\n" + "# checked by hand, 2026-12-01\n" + json.dumps(rows[1]) + "\n")
    state = prepare_resume(out, retry_errors=True)
    state.drop_retried()
    lines = out.read_text().splitlines()
    assert lines == ["# checked by hand, 2026-12-01", json.dumps(rows[1])]
