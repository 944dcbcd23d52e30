"""What a new user following README.md met: commands that did something else than asked.

Found by walking README.md top to bottom in a fresh environment (install command 1 only).
"""
from __future__ import annotations

import pytest

from scanner.live.sinks import JsonlSink, SinkError
from scanner.output import OutputError, open_sink, writable
from scanner.report.render import _write_atomic


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".html"])
def test_out_under_a_file_says_the_folder_is_a_file(tmp_path, suffix):
    # `dfscan scan ... --out results.jsonl/x.jsonl` (and `dfscan report --out`): mkdir's EEXIST
    # came through as "cannot write results.jsonl/x.jsonl: File exists", as if the output
    # existed; the folder it goes into is a file.
    taken = tmp_path / "results.jsonl"
    taken.write_text("{}\n")
    with pytest.raises(OutputError) as e:
        open_sink(taken / f"x{suffix}")
    assert "Not a directory" in str(e.value) and "File exists" not in str(e.value)
    assert taken.read_text() == "{}\n"


def test_report_and_eval_out_under_a_file_say_the_folder_is_a_file(tmp_path):
    taken = tmp_path / "results.jsonl"
    taken.write_text("{}\n")
    with pytest.raises(NotADirectoryError):
        _write_atomic(taken / "x.html", lambda: iter(["<html></html>"]))
    with pytest.raises(Exception) as e:
        writable(taken / "eval.json")
    assert "Not a directory" in str(e.value) and "File exists" not in str(e.value)


def test_watch_out_naming_a_folder_is_refused(tmp_path, monkeypatch):
    # `dfscan watch URL --out events/` appended the verdict events to a file named `events`
    # (Path() drops the trailing "/") and exited 0; eval/probe/separability refuse such names.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SinkError, match="names a directory"):
        JsonlSink("events/")
    assert list(tmp_path.iterdir()) == []
