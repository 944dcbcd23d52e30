"""One sink stack, one error type, one set of config names for batch and live (issue 11, item 5)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import scanner.config
import scanner.output
from scanner.durable import DurableFile
from scanner.live import sinks as live_sinks
from scanner.live.config import ConfigError as LiveConfigError
from scanner.live.config import parse_config


def _strict(line: str) -> dict:
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=no_constants)


def test_live_jsonl_sink_is_the_batch_writer(tmp_path, monkeypatch):
    """NaN as null and one fsync per event, exactly as in batch scans."""
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    sink = live_sinks.JsonlSink(tmp_path / "live.jsonl").start()
    sink.emit({"stream": "s1", "score": float("nan"), "faces": [{"score": float("inf")}]})
    sink.stop()
    (line,) = (tmp_path / "live.jsonl").read_text().splitlines()
    event = _strict(line)
    assert event["score"] is None and event["faces"][0]["score"] is None
    assert sink.delivered == 1 and len(synced) >= 1


def test_live_event_file_and_batch_outputs_share_the_writer_and_only_live_follows_rotation(tmp_path):
    """The live JSONL sink writes through the batch writer (one class: fsync, torn-row cut, errors);
    only it reopens a moved file: a batch output holds a lock on the file it opened and keeps
    writing into it (a deleted one is an error, see test_output_deleted_during_scan_is_noticed)."""
    live = live_sinks.JsonlSink(tmp_path / "live.jsonl")
    assert isinstance(live._w._file, DurableFile) and live._w._file.reopen_on_rotate
    live.close()
    outs = [scanner.output.JsonlSink(tmp_path / "o.jsonl"), scanner.output.CsvSink(tmp_path / "o.csv")]
    for sink in outs:
        assert isinstance(sink._file, DurableFile) and not sink._file.reopen_on_rotate
        sink.write({"path": "a.mp4", "verdict": "real"})
        moved = sink.path.with_name(sink.path.name + ".1")
        sink.path.rename(moved)
        sink.write({"path": "b.mp4", "verdict": "fake"})
        sink.close()
        assert not sink.path.exists()
        assert "b.mp4" in moved.read_text()


def test_live_stdout_sink_writes_valid_json(capsys):
    sink = live_sinks.StdoutSink().start()
    sink.emit({"score": float("nan")})
    sink.stop()
    assert _strict(capsys.readouterr().out.strip())["score"] is None


def test_one_error_type_for_outputs_and_config(tmp_path):
    assert live_sinks.SinkError is scanner.output.OutputError
    assert LiveConfigError is scanner.config.ConfigError
    ro = tmp_path / "f"
    ro.write_text("a file, not a folder")
    with pytest.raises(scanner.output.OutputError):
        live_sinks.JsonlSink(ro / "x.jsonl")


def test_live_config_uses_the_batch_names(caplog):
    cfg = parse_config({"faces": {"det_max_side": 320, "face_prob": 0.8}, "model": {"batch_size": 16}})
    assert (cfg.faces.det_max_side, cfg.faces.face_prob, cfg.model.batch_size) == (320, 0.8, 16)
    assert set(scanner.config.ScanConfig.model_fields) >= {"det_max_side", "face_prob", "batch_size",
                                                           "min_face", "max_faces"}
    assert set(type(cfg.faces).model_fields) <= set(scanner.config.ScanConfig.model_fields)
    with caplog.at_level(logging.WARNING):
        old = parse_config({"faces": {"max_side": 320, "min_prob": 0.8}, "model": {"max_crops": 16}})
    assert old == cfg  # old live names still work...
    assert "max_side is deprecated: it is now det_max_side" in caplog.text  # ...with a warning
    with pytest.raises(scanner.config.ConfigError, match="old name of det_max_side"):
        parse_config({"faces": {"max_side": 320, "det_max_side": 640}})


def test_one_cache_resolver(monkeypatch, tmp_path):
    from engines.cache import cache_root, default_cache_dir
    from scanner.cli import build_parser

    monkeypatch.delenv("DFSCAN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "dfscan" and default_cache_dir() == tmp_path / "dfscan" / "engines"
    args = build_parser("separability").parse_args(["separability", "labels.csv", "--detector", "x"])
    assert args.cache == str(tmp_path / "dfscan" / "features")


def test_one_metrics_module():
    """Batch and live metrics are defined in scanner.metrics (live re-exports them)."""
    import scanner.live.metrics
    import scanner.metrics

    assert scanner.live.metrics.LiveMetrics is scanner.metrics.LiveMetrics
    src = Path(scanner.live.metrics.__file__).read_text()
    assert "Counter(" not in src and "Gauge(" not in src and "Histogram(" not in src
