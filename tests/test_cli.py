"""Friendly CLI (issue 11, item 7): one line and a documented exit code, never a traceback."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import DATA, ROOT
from scanner.cli import EXIT_OK, EXIT_USAGE, build_parser, main

FAST = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu(capsys):
    assert main(["scan", str(DATA / "d1.mp4"), "--device", "cuda", *FAST]) == EXIT_USAGE
    assert "no CUDA GPU is available" in _one_error_line(capsys.readouterr().err)


def test_auto_engine_names_its_choice(tmp_path, capsys):
    # fp16 on CPU under the default engine said "onnxruntime engine: fp16 needs a CUDA
    # device" to a user who never chose onnxruntime; the ready line said "engine eager" for
    # --engine eager-cl.
    out = str(tmp_path / "r.jsonl")
    assert main(["scan", str(DATA / "d1.mp4"), "--detector", "test_tiny", "--precision", "fp16",
                 "--no-progress", "--out", out]) == EXIT_USAGE
    assert "engine auto (here onnxruntime): onnxruntime engine: fp16 needs a CUDA device" in \
        _one_error_line(capsys.readouterr().err)
    assert main(["scan", str(DATA / "d1.mp4"), *FAST, "--engine", "eager-cl", "--out", out]) == EXIT_OK
    assert "engine eager-cl fp32" in capsys.readouterr().out


def test_busy_metrics_port(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["scan", str(DATA / "d1.mp4"), "--metrics-port", str(port), *FAST]) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line and "in use" in line


def test_empty_input_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no video here")
    assert main(["scan", str(tmp_path), *FAST]) == EXIT_USAGE
    assert f"no video files found in {tmp_path}" in _one_error_line(capsys.readouterr().err)


def test_piped_output_is_one_line_per_video(tmp_path):
    deep = tmp_path / ("a_rather_long_folder_name_for_archived_footage_" * 2) / "2024-06-01"
    deep.mkdir(parents=True)
    clips = []
    for name in ("d1.mp4", "d2.mp4"):
        os.link(DATA / name, deep / f"camera_{name}")
        clips.append(str(deep / f"camera_{name}"))
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", *clips, *FAST[:-3]], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == EXIT_OK, r.stderr
    for c in clips:  # the whole path, with the verdict, on one line (not wrapped at 80 columns)
        assert any(c in ln and ln.split()[0] in ("real", "fake", "no_face") for ln in r.stdout.splitlines())
    assert "\x1b[" not in r.stdout  # no colour codes in a pipe
    assert "no face" in r.stdout and "faces/s" in r.stdout  # summary headers not clipped to 80 columns


def test_progress_shows_current_file_and_eta(tmp_path):
    from rich.console import Console

    from scanner.config import ScanConfig
    from scanner.output import SinkSet
    from scanner.pipeline import build_context
    from scanner.run import Tally, _scan_all

    cfg = ScanConfig(detector="test_tiny", frames=2, workers=1, hash=False)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200)
    tally = Tally()
    _scan_all([DATA / "d1.mp4", DATA / "d2.mp4"], build_context(cfg), cfg, SinkSet([]), tally, console, True)
    shown = buf.getvalue()
    assert tally.videos == 2 and "ETA" in shown and "d2.mp4" in shown


def test_eval_defaults_to_the_scan_detector(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{DATA / 'd1.mp4'},real\n{DATA / 'd2.mp4'},fake\n")
    out = tmp_path / "eval.json"
    assert main(["eval", str(labels), "--frames", "2", "--workers", "1", "--out", str(out), "--quiet"]) == 0
    assert "meso4_df" in json.dumps(json.loads(out.read_text()))


def test_watch_accepts_out_like_scan():
    p = build_parser("watch")
    assert p.parse_args(["watch", "rtsp://cam/1", "--out", "v.jsonl"]).jsonl == "v.jsonl"
    assert p.parse_args(["watch", "rtsp://cam/1", "--jsonl", "v.jsonl"]).jsonl == "v.jsonl"


def test_bench_pipeline_prints_a_table_with_the_scan_engine(tmp_path, capsys):
    from scanner.config import ScanConfig

    code = main(["bench", "--pipeline", str(DATA / "d1.mp4"), "--detectors", "test_tiny", "--out", str(tmp_path),
                 "--name", "p"])
    assert code == 0
    out = capsys.readouterr().out
    assert "videos/s" in out and "test_tiny" in out and not out.lstrip().startswith("{")
    (res,) = json.loads((tmp_path / "p.json").read_text())["results"]
    from engines.backends import resolve_engine_name

    # the engine that ran ('auto' names none), beside the one asked for
    assert res["engine_requested"] == ScanConfig().engine
    assert res["engine"] == resolve_engine_name(ScanConfig().engine, "cpu") != "auto"


def test_bench_default_detectors_all_run_without_a_weights_file():
    # `dfscan bench` with no --detectors crashed on the first ADM detector (it needs
    # the user's CADDM checkpoint); the default is every detector that ships weights.
    from engines.registry import create_detector, detector_entry
    from scanner.cli_engines import _default_detectors

    names = _default_detectors()
    assert "meso4_df" in names and "effnet_lite0_sbi" in names
    assert not any(n.startswith(("adm_", "effnet_lite2", "probe", "test_")) for n in names)
    for n in names:
        assert create_detector(n).weights_hash != "random-init", n
        assert detector_entry(n).default_weights


def test_a_listing_into_a_closed_pipe_is_one_line_not_a_traceback():
    # `dfscan detectors | head -1` ended in a BrokenPipeError traceback (exit 1).
    p = subprocess.Popen([sys.executable, "-m", "scanner.cli", "detectors"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader left before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "standard output was closed" in err


def test_a_whole_config_check_is_said_plainly(capsys, tmp_path):
    # A check of the whole config printed pydantic's wording: "(root): Value error, out ... must end".
    assert main(["scan", str(DATA / "d1.mp4"), "--out", str(tmp_path / "r.txt")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("dfscan: error: invalid configuration in command line: out ")
    assert "(root)" not in err and "Value error" not in err


def test_default_workers_are_at_most_one_per_input(tmp_path, capsys, monkeypatch):
    # An idle worker still took its share of the cores (threads = cores / workers): one
    # video alone ran its face detection and detector on 1 thread of 2.
    from scanner import pipeline, warmstart

    for mod in (pipeline, warmstart):  # the CPUs a scan may use (scanner.cpus)
        monkeypatch.setattr(mod, "usable_cpus", lambda: 4)
    threads = torch.get_num_threads()
    args = ["--detector", "test_tiny", "--frames", "2", "--no-progress"]
    try:
        for inputs, extra, workers, want_threads in ((["d1.mp4"], [], 1, 4), (["d1.mp4", "d2.mp4"], [], 2, 2),
                                                     (["d1.mp4"], ["--workers", "2"], 2, 2)):
            out = str(tmp_path / f"{len(inputs)}{len(extra)}.jsonl")
            assert main(["scan", *[str(DATA / n) for n in inputs], *args, *extra, "--out", out]) == EXIT_OK
            assert f"{workers} worker(s)" in capsys.readouterr().out
            assert torch.get_num_threads() == want_threads
            assert sum(1 for _ in open(out)) == len(inputs)
    finally:
        torch.set_num_threads(threads)
