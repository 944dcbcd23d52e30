"""Aggregation rules, sink isolation and resume bookkeeping."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import DATA
from scanner import metrics
from scanner.aggregate import decide, frame_score, video_score
from scanner.output import JsonlSink, Sink, SinkSet, done_paths, open_sink, render_html
from scanner.sources import expand_inputs


def test_frame_score_modes():
    s, a = np.array([0.2, 0.9, 0.4]), np.array([100.0, 10.0, 400.0])
    assert frame_score(s, a, "max") == 0.9
    assert frame_score(s, a, "mean") == pytest.approx(0.5)
    assert frame_score(s, a, "largest") == 0.4
    assert frame_score(np.array([]), np.array([]), "max") is None


def test_video_score_modes():
    s = [0.1, 0.2, 0.9, 0.8, 0.3]
    assert video_score(s, "mean") == pytest.approx(0.46)
    assert video_score(s, "median") == pytest.approx(0.3)
    assert video_score(s, "max") == 0.9
    assert video_score(s, "topk", topk=2) == pytest.approx(0.85)


def test_verdicts():
    assert decide([0.9, 0.8, None, 0.7], 0.5, "mean", 5, 3).verdict == "fake"
    assert decide([0.1, 0.2, 0.3], 0.5, "mean", 5, 3).verdict == "real"
    v = decide([0.9, None, None, None], 0.5, "mean", 5, 3)
    assert v.verdict == "no_face" and v.score is None and v.frames_with_faces == 1
    # A 2-frame clip can still be judged: the face-frame requirement is capped.
    assert decide([0.9, 0.9], 0.5, "mean", 5, 3).verdict == "fake"


class Broken(Sink):
    name = "broken"

    def write(self, row):
        raise OSError("disk full")


def test_failing_secondary_sink_is_isolated_and_reported(tmp_path):
    good = JsonlSink(tmp_path / "a.jsonl")
    before = metrics.SINK_FAILURES.labels(sink="broken")._value.get()
    written = metrics.SINK_EVENTS.labels(sink=good.name)._value.get()
    sinks = SinkSet([good, Broken()])  # the first sink is the primary output
    for i in range(3):
        sinks.write({"path": f"v{i}.mp4", "verdict": "real"})
    sinks.close()
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 3
    assert metrics.SINK_FAILURES.labels(sink="broken")._value.get() == before + 1
    assert metrics.SINK_EVENTS.labels(sink=good.name)._value.get() == written + 3
    assert len(sinks.failures) == 1 and "disk full" in sinks.failures[0]


def test_failing_primary_sink_stops_the_scan(tmp_path):
    from scanner.output import OutputError

    sinks = SinkSet([Broken(), JsonlSink(tmp_path / "a.jsonl")])
    with pytest.raises(OutputError, match="disk full"):
        sinks.write({"path": "v.mp4", "verdict": "real"})
    sinks.close()


def test_done_paths_tolerates_torn_last_line(tmp_path):
    p = tmp_path / "o.jsonl"
    p.write_text(json.dumps({"path": "a.mp4"}) + "\n" + '{"path": "b.m')
    assert done_paths(p) == {os.path.realpath("a.mp4")}  # inputs compare by resolved path
    c = open_sink(tmp_path / "o.csv")
    c.write({"path": "x.mp4", "verdict": "real", "timings": {"total": 1.0}})
    c.close()
    assert done_paths(tmp_path / "o.csv") == {os.path.realpath("x.mp4")}


def test_html_escapes_paths():
    html = render_html([{"path": "<script>.mp4", "verdict": "fake", "score": 0.9, "frames_with_faces": 1,
                         "faces": 1, "detector": "d", "error": None, "total_s": 1.0}])
    assert "<script>.mp4" not in html and "&lt;script&gt;.mp4" in html


def test_list_file_with_bom_crlf_and_a_latin1_name(tmp_path):
    """A BOM became part of the first listed path (a present file reported not_found) and a
    non-UTF-8 file name was a UnicodeDecodeError traceback."""
    latin = tmp_path / "caf\udce9.mp4"  # the file name b"caf\xe9.mp4", as os.fsdecode gives it
    for p in (tmp_path / "a.mp4", latin):
        p.write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"\xef\xbb\xbfa.mp4\r\n\r\n# note\r\ncaf\xe9.mp4\r\n")
    assert expand_inputs([str(lst)]) == [tmp_path / "a.mp4", latin]


@pytest.mark.parametrize("ext", [".jsonl", ".csv"])
def test_non_utf8_file_name_is_written_and_resumed(tmp_path, ext):
    """A folder holding a non-UTF-8 file name stopped the whole scan (exit 4: 'surrogates
    not allowed' writing the primary output); the name must round-trip for --resume, and
    the report must render it."""
    from scanner.resume import input_key, prepare_resume
    from scanner.report import ReportOptions, write_report

    name = str(tmp_path / "caf\udce9.mp4")  # b"caf\xe9.mp4" as os.fsdecode gives it
    out = tmp_path / f"r{ext}"
    sink = open_sink(str(out))
    sink.write({"path": name, "verdict": "error", "score": None, "error": {"kind": "not_found", "message": name}})
    sink.close()
    assert input_key(name) in prepare_resume(out, retry_errors=True).retry
    if ext == ".jsonl":
        assert json.loads(out.read_text())["path"] == name
        write_report(out, tmp_path / "r.html", ReportOptions(thumbnails=False))
        assert "caf\\udce9.mp4" in (tmp_path / "r.html").read_text()


def test_retry_errors_keeps_a_foreign_line(tmp_path):
    """A JSON line that is not an object (or has a null path) made --retry-errors' rewrite
    a traceback; such lines are kept as they are, the error row is dropped."""
    from scanner.resume import prepare_resume

    out = tmp_path / "r.jsonl"
    err = {"path": str(tmp_path / "e.mp4"), "verdict": "error", "error": {"kind": "internal"}}
    foreign = '[1, 2]\n{"path": null, "verdict": "error"}\n{"path": 5, "verdict": "real"}\n'
    out.write_text(foreign + json.dumps(err) + "\n")
    state = prepare_resume(out, retry_errors=True)  # a non-string path was a TypeError traceback
    state.drop_retried()
    assert out.read_text() == foreign


def test_expand_inputs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.mp4", "a/b/y.MKV", "a/b/z.txt", "w.webm"):
        (tmp_path / name).write_bytes(b"0")
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nw.webm\nmissing.mp4\n")
    got = expand_inputs([str(tmp_path / "a"), str(lst), str(tmp_path / "a" / "*.mp4")])
    names = [p.name for p in got]
    assert names == ["x.mp4", "y.MKV", "w.webm", "missing.mp4"]  # de-duplicated, missing kept


def test_a_video_under_two_names_is_one_input_under_the_first(tmp_path, capsys):
    # A folder given together with a symlink to it (or a symlinked file beside its target)
    # was two inputs: the video was scanned twice and made two rows, while --resume
    # (resolved paths) took them for one.
    import shutil

    from scanner.cli import EXIT_OK, main

    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(DATA / "d1.mp4", real / "d1.mp4")
    (tmp_path / "link").symlink_to(real)
    (real / "latest.mp4").symlink_to(real / "d1.mp4")
    aliases: list = []
    got = expand_inputs([str(real), str(tmp_path / "link")], aliases)
    assert got == [real / "d1.mp4"]
    assert sorted(a.name for a, _ in aliases) == ["d1.mp4", "latest.mp4", "latest.mp4"]
    out = tmp_path / "o.jsonl"
    args = ["scan", str(real), str(tmp_path / "link"), "--out", str(out), "--detector", "test_tiny",
            "--frames", "2", "--no-progress", "--workers", "1"]
    assert main(args) == EXIT_OK
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(real / "d1.mp4")]
    assert "3 input(s) name a file listed before" in capsys.readouterr().out


def test_non_finite_values_never_lose_a_row(tmp_path):
    sink = JsonlSink(tmp_path / "o.jsonl")
    sink.write({"path": "a.mp4", "score": float("nan"), "frames_detail": [{"box": [1.0, float("inf")]}]})
    sink.close()
    row = json.loads((tmp_path / "o.jsonl").read_text())
    assert row["path"] == "a.mp4" and row["score"] is None and row["frames_detail"][0]["box"] == [1.0, None]


def test_resume_refuses_a_secondary_csv_with_older_columns(tmp_path, capsys):
    """--resume checked the primary's CSV header only: a secondary CSV written by an older
    version got rows of the new columns under its old header (values under wrong names)."""
    import csv

    from conftest import DATA
    from scanner.cli import EXIT_OK, EXIT_USAGE, main
    from scanner.output import CSV_COLUMNS

    jl, cs = tmp_path / "r.jsonl", tmp_path / "r.csv"
    common = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1",
              "--out", str(jl), "--out", str(cs)]
    assert main(["scan", str(DATA / "d1.mp4"), *common]) == EXIT_OK
    with open(cs, newline="") as f:  # as an older version wrote it: without orientation_deg
        rows = [{k: v for k, v in r.items() if k != "orientation_deg"} for r in csv.DictReader(f)]
    old = [c for c in CSV_COLUMNS if c != "orientation_deg"]
    with open(cs, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    before = cs.read_bytes()
    capsys.readouterr()
    # Refused while resume reads the outputs (1b7b3d5), as the primary's columns are: exit 2.
    assert main(["scan", str(DATA / "d1.mp4"), str(DATA / "d2.mp4"), *common, "--resume"]) == EXIT_USAGE
    assert "has other CSV columns" in capsys.readouterr().err
    assert cs.read_bytes() == before


def test_csv_name_with_carriage_return_is_one_record(tmp_path):
    """A file name holding \\r went out unquoted (the csv module quotes only the line
    terminator's characters): every CSV reader split the row there and --resume re-scanned
    the video on each run; --retry-errors' rewrite did the same to a kept row."""
    import csv

    from scanner.resume import input_key, prepare_resume

    names = [f"/v/a\rb{i}.mp4" for i in range(2)] + ['/v/q"\r\n.mp4']
    out = tmp_path / "r.csv"
    sink = open_sink(str(out))
    sink.write({"path": names[0], "verdict": "real", "score": 0.1})
    sink.write({"path": names[1], "verdict": "error", "error": {"kind": "not_found", "message": f"x\r{names[1]}"}})
    sink.write({"path": names[2], "verdict": "real", "score": 0.2})
    sink.close()

    def read():
        with open(out, newline="") as f:
            return [(r["path"], r["verdict"]) for r in csv.DictReader(f)]
    assert read() == [(names[0], "real"), (names[1], "error"), (names[2], "real")]
    state = prepare_resume(out, retry_errors=True)
    assert state.done == {input_key(names[0]), input_key(names[2])} and state.retry == {input_key(names[1])}
    state.drop_retried()
    assert read() == [(names[0], "real"), (names[2], "real")]
    assert out.read_bytes().count(b"\r\n") == 1  # records end in \n; \r\n only inside the quoted name


def test_list_file_name_with_a_unicode_line_separator(tmp_path):
    """str.splitlines cut a listed name at U+2028/U+0085/\\x1c: two not_found rows, the
    video never scanned (such names come back from a scan's JSONL, which keeps them raw)."""
    names = ["a\u2028b.mp4", "c\x85d.mp4", "e\x1cf.mp4", "g\u2029h.mp4"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("\r\n".join(names) + "\r\n", encoding="utf-8")
    assert expand_inputs([str(lst)]) == [tmp_path / n for n in names]
    cr = tmp_path / "cr.txt"  # classic Mac line ends still separate names
    cr.write_bytes(b"a.mp4\rb.mp4\r")
    assert expand_inputs([str(cr)]) == [tmp_path / "a.mp4", tmp_path / "b.mp4"]


def test_csv_named_with_a_lone_html_stays_primary():
    # `--out a.csv --out r.html`: the report's implied r.jsonl took the primary's place,
    # although the README says the first .jsonl/.csv named is primary (--resume reads it).
    from scanner.output import order_outputs

    assert order_outputs(["a.csv", "r.html"]) == ["a.csv", "r.html", "r.jsonl"]
    assert order_outputs(["r.html", "a.csv"]) == ["a.csv", "r.html", "r.jsonl"]
    assert order_outputs(["r.html"]) == ["r.jsonl", "r.html"]
    assert order_outputs(["r.html", "x.jsonl"]) == ["x.jsonl", "r.html"]
