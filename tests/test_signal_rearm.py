"""A library that takes SIGTERM while the scan sets up (``ray.init`` installs
``sys.exit(15)``) must not change how a scan stops: exit 143, not 15."""
from __future__ import annotations

import os
import signal
import sys
import time
from types import SimpleNamespace

import pytest

from scanner.run import GracefulStop, Interrupted


def test_arm_takes_back_a_sigterm_handler_replaced_during_setup():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(signum))  # as ray.init does
        stop.arm(SimpleNamespace())  # a Ray context: no stop event, interrupt at once
        with pytest.raises(Interrupted) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert e.value.signum == signal.SIGTERM and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # the original handler, not Ray's


def _interrupt(*_a, **_kw):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command, says", [
    ("scan", "rows already written are kept"), ("eval", "nothing written"),
    ("probe", "embeddings already computed stay in --cache"), ("synth", "manifest.csv"),
    ("train", "last.pt"), ("detectors", None)])
def test_an_interrupted_command_says_what_it_keeps(command, says):
    """Ctrl-C said "rows already written are kept" for every command; eval, probe, bench,
    train and synth write no rows."""
    from scanner.cli import interrupted_note

    note = interrupted_note(SimpleNamespace(command=command))
    assert note == "dfscan: interrupted" if says is None else note.startswith("dfscan: interrupted; ")
    assert says is None or says in note
    assert command == "scan" or "rows" not in note


def test_an_interrupted_eval_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    from scanner.cli import main
    from scanner.research import evaluate

    monkeypatch.setattr(evaluate, "run_eval", _interrupt)
    assert main(["eval", str(tmp_path), "--out", str(tmp_path / "e.json")]) == 130
    assert capsys.readouterr().err == ("dfscan: interrupted; nothing written (the report and its plot are "
                                       "written once every video is scored)\n")


def test_an_interrupted_bench_leaves_its_json_marked_incomplete(tmp_path, monkeypatch, capsys):
    """Stopped while building engines, bench left an earlier run's file (complete: true) in place."""
    import json

    from engines import benchmark
    from scanner.cli import main

    (tmp_path / "b.json").write_text(json.dumps({"complete": True, "results": [{"old": 1}]}))
    monkeypatch.setattr(benchmark, "_build_all", _interrupt)
    assert main(["bench", "--detectors", "test_tiny", "--engines", "eager", "--out", str(tmp_path),
                 "--name", "b"]) == 130
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["complete"] is False and res["results"] == []
    assert capsys.readouterr().err.endswith(f"dfscan: interrupted; {tmp_path}/b.json holds what was measured "
                                            "so far, marked complete: false\n")

    # Before its first write (detectors loading) it said that of the earlier file too.
    earlier = (tmp_path / "b.json").read_text()
    monkeypatch.setattr(benchmark, "load_detectors", _interrupt)
    assert main(["bench", "--detectors", "test_tiny", "--engines", "eager", "--out", str(tmp_path),
                 "--name", "b"]) == 130
    assert capsys.readouterr().err.endswith(f"dfscan: interrupted; nothing written ({tmp_path}/b.json from "
                                            "before is left as it was)\n")
    assert (tmp_path / "b.json").read_text() == earlier
    from scanner import pipeline_bench

    monkeypatch.setattr(pipeline_bench, "benchmark_pipeline", _interrupt)
    assert main(["bench", "--pipeline", "v.mp4", "--detectors", "test_tiny", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.endswith("dfscan: interrupted; nothing written\n")


def test_a_signal_whose_interrupt_was_swallowed_during_setup_still_stops_the_scan():
    """A SIGTERM landing in a ``__del__`` during set-up: Python printed and dropped its
    Interrupted, and the scan ran every video before exiting 143."""
    import threading

    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        with pytest.raises(Interrupted):  # what Python's finaliser machinery swallows
            stop._handle(signal.SIGTERM, None)
        ctx = SimpleNamespace(stop=threading.Event())
        stop.arm(ctx)
        assert ctx.stop.is_set()  # the scan starts no video
        with pytest.raises(Interrupted):
            stop.arm(SimpleNamespace())  # a Ray context: interrupted at once
    assert signal.getsignal(signal.SIGTERM) is before
