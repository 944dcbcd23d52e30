"""The live side's event files through kills and full disks: nothing reported is lost.

`dfscan watch --out` stopped by SIGINT/SIGTERM exits 130/143 as a scan does, with every
event written; a restart appending to a file a kill left torn cuts the torn line first;
a sink on a full disk says so once (and once more when it works again), never stopping
the other sinks, and `watch` then exits 4 as a scan whose output failed.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, wait_for
from scanner.live.sinks import JsonlSink


def _lines(path) -> list[dict]:
    text = path.read_text()
    assert not text or text.endswith("\n"), text[-200:]  # no torn last line
    return [json.loads(line) for line in text.splitlines()]


def test_a_full_disk_sink_says_so_once_and_the_other_sinks_go_on(tmp_path, caplog):
    full, ok = tmp_path / "full.jsonl", tmp_path / "ok.jsonl"
    full.symlink_to("/dev/full")  # every write fails with ENOSPC
    sinks = [JsonlSink(full, name="events").start(), JsonlSink(ok, name="copy").start()]
    with caplog.at_level(logging.WARNING, logger="scanner.live.sinks"):
        for i in range(20):
            for s in sinks:
                s.emit({"stream": "s", "n": i})
        wait_for(lambda: sinks[0].failed == 20 and sinks[1].delivered == 20, 30, what="20 events each")
        failed = [r.getMessage() for r in caplog.records if "delivery failed" in r.getMessage()]
        assert len(failed) == 1 and "No space left on device" in failed[0] and str(full) in failed[0]

        full.unlink()  # room again: the path now names a writable file (the sink reopens it)
        full.write_text("")
        sinks[0].emit({"stream": "s", "n": 20})
        wait_for(lambda: sinks[0].delivered == 1, 30, what="the delivery after the disk had room")
        for s in sinks:
            s.stop()
    assert "delivering again; 20 event(s) failed meanwhile" in caplog.text
    assert [e["n"] for e in _lines(ok)] == list(range(20)) and [e["n"] for e in _lines(full)] == [20]


def test_a_restart_on_a_file_torn_by_a_kill_cuts_the_torn_line(tmp_path, caplog):
    out = tmp_path / "ev.jsonl"
    torn = '{"n": 2, "verd'  # SIGKILL mid-write
    out.write_text('{"n": 0}\n{"n": 1}\n' + torn)
    with caplog.at_level(logging.WARNING, logger="scanner.live.sinks"):
        sink = JsonlSink(out).start()
    sink.emit({"n": 3})
    sink.stop()
    assert [e["n"] for e in _lines(out)] == [0, 1, 3]  # not '{"n": 2, "verd{"n": 3}'
    assert f"cut {len(torn)} byte(s) of a torn last line" in caplog.text


def _watch(out, clip, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "scanner.cli", "watch", "--detector", "test_tiny", "--allow-files",
         "--window", "1", "--sample-fps", "4", "--out", str(out), *extra, f"cam={clip}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_watch_stopped_by_a_signal_exits_as_a_scan_and_keeps_every_event(tmp_path, real_clips, sig, code):
    out = tmp_path / "ev.jsonl"
    out.write_text('{"run": 0}\n{"run": 0, "tor')  # an earlier run killed mid-write
    proc = _watch(out, real_clips[0])
    try:
        wait_for(lambda: out.read_text().count("\n") >= 2 or proc.poll() is not None, 120, step=0.2,
                 what="watch to write an event")
        seen = out.read_text()
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    events = _lines(out)
    assert out.read_text().startswith(seen) and events[0] == {"run": 0} and len(events) >= 2
    assert all(e["event"] == "verdict" for e in events[1:])
    assert "interrupted; events already written to" in proc.stderr.read()


def test_watch_whose_out_disk_is_full_says_so_once_and_exits_4(tmp_path, real_clips):
    out = tmp_path / "ev.jsonl"
    out.symlink_to("/dev/full")  # every write fails with ENOSPC
    proc = _watch(out, real_clips[0], "--duration", "8")
    try:
        assert proc.wait(timeout=120) == 4  # as a scan whose output failed, not a clean 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read()
    assert err.count("No space left on device") == 1, err[-2000:]
    assert f"event(s) could not be written to {out}" in err


def test_watch_names_its_out_file_escaped_on_the_terminal(tmp_path, monkeypatch, capsys):
    """The exit-4 and interrupt lines printed --out raw, so a file name holding ESC sequences
    (a scripted name) could rewrite the terminal, where every other dfscan line escapes it."""
    import scanner.live.watch as watch
    from scanner.cli import build_parser

    def lossy(cfg, duration_s, signals, sink_stats):
        sink_stats.append({"failed": 2, "dropped": 0})
        signals.append(int(signal.SIGINT))

    monkeypatch.setattr(watch, "run_watch", lossy)
    out = tmp_path / "ev\x1b[2J.jsonl"
    args = build_parser().parse_args(["watch", "rtsp://127.0.0.1:1/x", "--out", str(out)])
    assert args.func(args) == 130
    err = capsys.readouterr().err
    assert "\x1b" not in err and "2 event(s) could not be written" in err and "ev\\x1b[2J.jsonl" in err
