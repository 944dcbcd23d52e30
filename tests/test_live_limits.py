"""Limits of ``dfscan serve``/``watch`` settings that used to pass unchecked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scanner.live.config import ConfigError, parse_config
from scanner.live.rolling import StreamVerdicts, VerdictSettings


@pytest.mark.parametrize("section,key", [("verdict", "window_s"), ("verdict", "track_max_age_s"),
                                         ("verdict", "emit_interval_s"), ("defaults", "stall_s")])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_infinite_or_nan_settings_refused(section, key, value):
    with pytest.raises(ConfigError, match=f"{section}.{key}: .*finite"):
        parse_config({section: {key: value}})


def test_verdict_window_and_track_age_bounded():
    """``window_s: .inf`` (or ``watch --window inf``) was accepted: every sample and every face
    track of a stream was then kept for the life of the service."""
    for key in ("window_s", "track_max_age_s"):
        with pytest.raises(ConfigError, match=f"verdict.{key}: .*less than or equal to 3600"):
            parse_config({"verdict": {key: 1e9}})
    v = StreamVerdicts("s", VerdictSettings(**parse_config({"verdict": {"window_s": 3600}}).verdict.resolved(0.5)))
    for t in range(100):  # a new face every sample: tracks end after track_max_age_s
        v.update(float(t * 10), np.array([[t * 50, 0, t * 50 + 10, 10]], np.float32), np.array([0.5]))
    assert len(v.tracks) <= 2


def test_watch_target_errors_one_line_without_the_url():
    """A bad name or an over-long URL printed pydantic's multi-line error, which quotes the input:
    the URL with its password."""
    from scanner.live.watch import parse_targets

    # The last: a URL without its scheme, cut at the query's '=' into name 'u:hunter2-pw@h/x?ch'.
    for target in ("bad/name=rtsp://u:hunter2-pw@h/x", "cam=rtsp://u:hunter2-pw@h/" + "x" * 5000,
                   "u:hunter2-pw@h:554/x?ch=1"):
        with pytest.raises(ConfigError) as e:
            parse_targets([target])
        assert "\n" not in str(e.value) and "hunter2" not in str(e.value) and "stream 1" in str(e.value)


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf"])
def test_watch_duration_must_be_positive(value, capsys):
    """``--duration nan`` ran forever (no time is >= nan); -1 stopped at once with exit 0."""
    import argparse

    from scanner.live.cli import add_watch_parser

    parser = argparse.ArgumentParser(prog="dfscan")
    add_watch_parser(parser.add_subparsers())
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["watch", "rtsp://h/x", "--duration", value])
    assert e.value.code == 2 and "--duration" in capsys.readouterr().err


@pytest.mark.parametrize("port", [99999, -1])
def test_serve_port_override_validated(port, tmp_path, capsys):
    """``dfscan serve --port 99999`` loaded the models, then died in bind() with an OverflowError
    traceback: --host/--port skipped the config's validation."""
    import argparse

    from scanner.live.cli import serve_main

    cfg = tmp_path / "serve.yaml"
    cfg.write_text("model: {detector: test_tiny}\napi: {port: 0}\n")
    args = argparse.Namespace(config=str(cfg), host=None, port=port, log_level="WARNING")
    assert serve_main(args) == 2
    err = capsys.readouterr().err
    # The one error line every dfscan command prints (it was 'dfscan serve: invalid config: ...').
    assert "api.port" in err and err.startswith("dfscan: error: serve: invalid config:")


def test_serve_overrides_keep_the_config(tmp_path):
    from scanner.live.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "serve.yaml")
    again = parse_config({**cfg.model_dump(), "api": {**cfg.api.model_dump(), "port": 9999}})
    assert again.api.port == 9999 and again.model_dump(exclude={"api"}) == cfg.model_dump(exclude={"api"})


@pytest.mark.parametrize("error", ["cannot fetch http://[fe80::1]:8080/x.m3u8", "/srv/cam[/b].ts: no video stream"])
def test_watch_table_shows_errors_verbatim(error):
    """The table read each error as Rich markup: an IPv6 host vanished, '[/b]' raised MarkupError."""
    from rich.console import Console

    from scanner.live.watch import stream_table

    row = dict(name="s1", state="backoff", fps=0.0, frames_sampled=0, frames_dropped=0, reconnects=1,
               faces=0, score=None, verdict="unknown", last_error=error)
    console = Console(width=300, record=True)
    console.print(stream_table([row]))
    assert error[:48] in console.export_text()


def test_window_that_can_never_hold_min_samples_refused():
    """sample_fps 0.1 with the default 10 s window holds at most 2 sampled frames, fewer than
    min_samples 3: every verdict of the stream stayed 'unknown' for good, a deepfake included,
    without a word. Refused in the config and for a stream added through the API."""
    from types import SimpleNamespace

    from scanner.live.config import StreamConfig
    from scanner.live.service import LiveService

    with pytest.raises(ConfigError, match=r"defaults: at sample_fps 0.1 .* at most 2 sampled frame\(s\), fewer than verdict.min_samples 3"):
        parse_config({"defaults": {"sample_fps": 0.1}})
    with pytest.raises(ConfigError, match="stream 'cam': at sample_fps 0.05"):
        parse_config({"streams": [{"name": "cam", "url": "rtsp://h/x", "sample_fps": 0.05}]})
    for ok in ({"defaults": {"sample_fps": 0.1}, "verdict": {"window_s": 20}},  # 3 samples fit
               {"defaults": {"sample_fps": 0.1}, "verdict": {"min_samples": 2}},
               {"defaults": {"sample_fps": 0}}):  # 0: every frame
        parse_config(ok)
    svc = LiveService(parse_config({}))
    svc.workers = [SimpleNamespace(sources=[])]  # never reached: refused before any source starts
    with pytest.raises(ConfigError, match="stream 'slow': at sample_fps 0.1"):
        svc.add_stream(StreamConfig(name="slow", url="rtsp://h/x", sample_fps=0.1))
    assert not svc._streams


def _long_row() -> dict:
    return dict(name="lobby-camera-north-entrance-4k", state="connecting", fps=12.5, frames_sampled=123456,
                frames_dropped=7890, reconnects=3, faces=42, score=0.876, verdict="uncertain",
                last_error="connection refused by rtsp://cam.local:554/stream1 after 3 tries")


def test_watch_into_a_pipe_prints_the_whole_table(monkeypatch):
    """Piped (`dfscan watch ... | tee`), Rich took 80 columns: the stream name ended in "…" and
    the fps/sampled/dropped/reconn./faces/score columns were squeezed to nothing."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from scanner.live import watch

    class Service:  # LiveService's face, without streams or models
        def __init__(self, cfg):
            self.sinks = SimpleNamespace(sinks=[])
            self.verdict_settings = SimpleNamespace(real_below=0.4, fake_above=0.6)

        start = stop = lambda self: None
        describe = lambda self: [_long_row()]  # noqa: E731

    monkeypatch.setattr(watch, "LiveService", Service)
    buf = io.StringIO()
    console = Console(file=buf, width=80)
    assert not console.is_terminal
    rows = watch.run_watch(parse_config({"api": {"enabled": False}, "streams": []}), duration_s=0.05,
                           refresh_s=0.01, console=console)
    assert rows == [_long_row()]
    lines = buf.getvalue().splitlines()
    row = next(line for line in lines if "lobby" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells == ["lobby-camera-north-entrance-4k", "connecting", "12.5", "123456", "7890", "3", "42",
                     "0.876", "uncertain", _long_row()["last_error"][:48]]
    header = next(line for line in lines if "stream" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "stream", "state", "fps", "sampled", "dropped", "reconn.", "faces", "score", "verdict", "last error"]


def test_watch_in_a_terminal_keeps_the_terminal_width():
    from rich.console import Console

    from scanner.live.watch import fitting, stream_table

    console = Console(width=80, force_terminal=True)
    assert fitting(console, stream_table([_long_row()])) is console
