"""How live results leave the service: a sink slower than the events, a failing webhook named
in the log without its secret, sinks that could not be told apart (or wrote one file twice).

The webhook receivers are real HTTP servers on 127.0.0.1 (tests/conftest.py's start_http).
"""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from conftest import start_http, stop_http, wait_for
from scanner.live.config import ConfigError, SinkConfig, parse_config
from scanner.live.metrics import LiveMetrics
from scanner.live.service import build_sink
from scanner.live.sinks import SinkError, WebhookSink

SECRET_PATH, SECRET_PW = "T0KEN-in-path-7731", "pw-secret-5512"


def _receiver(status: int, gate: threading.Event | None = None):
    """A webhook receiver answering ``status`` to every POST, once ``gate`` is set (if given)."""
    got: list[str | None] = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            if gate is not None:
                gate.wait(10)
            got.append(self.headers.get("Idempotency-Key"))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Hook, got


def _hook_url(port: int) -> str:
    return f"http://u:{SECRET_PW}@127.0.0.1:{port}/services/{SECRET_PATH}?token={SECRET_PATH}"


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "scanner.live.sinks"]


def test_a_sink_slower_than_the_events_says_so_in_the_log(caplog):
    """A full queue dropped its oldest events counted in the metric only: a webhook slower than
    the verdicts lost them with no word in the log. Now the first drop is logged, and how many
    went once the sink has caught up; the other events still arrive, newest last."""
    gate = threading.Event()
    handler, got = _receiver(204, gate)
    httpd, port = start_http(handler)
    m = LiveMetrics()
    sink = WebhookSink(_hook_url(port), timeout_s=10, retries=0, queue_size=2, metrics=m).start()
    try:
        with caplog.at_level(logging.WARNING, logger="scanner.live.sinks"):
            sink.emit({"id": "r-1", "alert": True})
            wait_for(lambda: sink._delivering, 5, "the first POST held by the receiver")
            for n in range(2, 7):
                sink.emit({"id": f"r-{n}", "alert": True})
            assert sink.dropped == 3
            full = [t for t in _messages(caplog) if "queue full" in t]
            assert len(full) == 1, _messages(caplog)  # once per overflow, not once per event
            assert "dfscan_sink_dropped_total" in full[0] and f"127.0.0.1:{port}" in full[0]
            gate.set()
            wait_for(lambda: sink.delivered == 3, 10, "the queued events delivered")
            wait_for(lambda: any("caught up" in t for t in _messages(caplog)), 5, "the catch-up logged")
        assert got == ["r-1", "r-5", "r-6"]
        assert any("3 event(s) dropped meanwhile" in t for t in _messages(caplog)), _messages(caplog)
        assert b'dfscan_sink_dropped_total{sink="webhook"} 3.0' in m.render()
        assert SECRET_PATH not in caplog.text and SECRET_PW not in caplog.text
    finally:
        gate.set()
        sink.stop(timeout=2)
        stop_http(httpd)


def test_a_failing_webhook_is_named_in_the_log_by_its_receiver_never_its_secret(caplog):
    """"sink webhook: delivery failed: HTTP 500" said nothing of which receiver was down (the
    README: a failing sink logs its first failure "with its target"). The log names its scheme,
    host and port now; never the path, query or password, where webhook secrets sit."""
    handler, got = _receiver(500)
    httpd, port = start_http(handler)
    sink = WebhookSink(_hook_url(port), timeout_s=5, retries=1, backoff_s=0.01).start()
    try:
        with caplog.at_level(logging.WARNING, logger="scanner.live.sinks"):
            sink.emit({"id": "r-1", "alert": True})
            wait_for(lambda: sink.failed == 1, 10, "the event failed")
        assert got == ["r-1", "r-1"]  # retried, one key
        failed = [t for t in _messages(caplog) if "delivery failed" in t]
        assert len(failed) == 1 and f"webhook (http://127.0.0.1:{port})" in failed[0], failed
        assert "HTTP 500" in failed[0]
        assert SECRET_PATH not in caplog.text and SECRET_PW not in caplog.text
    finally:
        sink.stop(timeout=2)
        stop_http(httpd)


def _sinks_config(sinks: list[dict]):
    return parse_config({"api": {"enabled": False}, "sinks": sinks})


@pytest.mark.parametrize("sinks", [
    [{"type": "webhook", "url": "http://127.0.0.1:9/a"}, {"type": "webhook", "url": "http://127.0.0.1:9/b"}],
    [{"type": "jsonl", "path": "a.jsonl", "name": "hook"}, {"type": "webhook", "url": "http://127.0.0.1:9/b",
                                                            "name": "hook"}],
])
def test_two_sinks_of_one_name_are_refused(sinks):
    """The name (the type when unset) is the sink's metric label and log name: two webhooks
    added their counts into one dfscan_sink_failures_total{sink="webhook"}, which could not say
    which receiver was down."""
    with pytest.raises(ConfigError, match="give each a distinct 'name'"):
        _sinks_config(sinks)
    named = [{**s, "name": f"s{i}"} for i, s in enumerate(sinks)]
    assert [s.name for s in _sinks_config(named).sinks] == ["s0", "s1"]


def test_two_jsonl_sinks_of_one_file_are_refused(tmp_path, monkeypatch):
    """Both appended every event to the same file: each one twice (a reader counting alerts
    counted double). The batch scanner refuses an --out given twice; so does the config now."""
    monkeypatch.chdir(tmp_path)
    same = [{"type": "jsonl", "path": "ev.jsonl", "name": "all"},
            {"type": "jsonl", "path": str(tmp_path / "sub" / ".." / "ev.jsonl"), "name": "alerts",
             "only_alerts": True}]
    with pytest.raises(ConfigError, match="ev.jsonl.*more than once"):
        _sinks_config(same)
    other = [same[0], {**same[1], "path": "alerts.jsonl"}]
    assert len(_sinks_config(other).sinks) == 2


def _webhook_config(url: str, env: str) -> SinkConfig:
    return SinkConfig(type="webhook", url=url, retries=0, timeout_s=5, headers_env={"Authorization": env})


def test_a_webhook_header_from_a_kubernetes_secret_file_is_sent_not_logged(monkeypatch, caplog):
    """A Secret made --from-file ends in a newline: every POST failed ("Illegal header value
    b'Bearer ...\\n'"), and that message put the token itself in the log. It is stripped now,
    as the API token is, and the event arrives with the header."""
    token = "Bearer hook-token-8841"
    monkeypatch.setenv("DFSCAN_TEST_HOOK_AUTH", token + "\n")
    seen: list[str | None] = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Authorization"))
            self.send_response(204)
            self.end_headers()

    httpd, port = start_http(Hook)
    sink = build_sink(_webhook_config(f"http://127.0.0.1:{port}/hook", "DFSCAN_TEST_HOOK_AUTH"), LiveMetrics())
    sink.start()
    try:
        with caplog.at_level(logging.DEBUG):
            sink.emit({"id": "r-1", "alert": True})
            wait_for(lambda: sink.delivered + sink.failed == 1, 10, "the event handled")
        assert sink.delivered == 1 and seen == [token]
        assert "hook-token-8841" not in caplog.text
    finally:
        sink.stop(timeout=2)
        stop_http(httpd)


def test_a_webhook_header_that_cannot_be_sent_is_refused_at_start_without_its_value(monkeypatch):
    """An unset variable went out as an empty header (every alert refused, "HTTP 401" the only
    hint); a value with a line break inside failed every POST quoting the value in the log."""
    monkeypatch.delenv("DFSCAN_TEST_HOOK_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"Authorization \(\$DFSCAN_TEST_HOOK_UNSET\): not set or empty"):
        build_sink(_webhook_config("http://127.0.0.1:9/hook", "DFSCAN_TEST_HOOK_UNSET"), LiveMetrics())
    monkeypatch.setenv("DFSCAN_TEST_HOOK_SPLIT", "Bearer tok-one-6610\nX-Evil: tok-two-6611")
    with pytest.raises(SinkError) as e:  # `dfscan serve` ends with this one line
        build_sink(_webhook_config("http://127.0.0.1:9/hook", "DFSCAN_TEST_HOOK_SPLIT"), LiveMetrics())
    assert "header Authorization" in str(e.value) and "tok-" not in str(e.value)


def test_watch_table_shows_an_error_escape_sequence_as_text():
    """The last-error column went to the terminal raw (Rich passes ESC): an error quoting a
    server's text could retitle the terminal or rewrite the table."""
    from rich.console import Console

    from scanner.live.watch import stream_table

    row = {"name": "cam", "state": "backoff", "fps": 0.0, "frames_sampled": 0, "frames_dropped": 0,
           "reconnects": 1, "faces": 0, "score": None, "verdict": "uncertain",
           "last_error": "HTTP 500: \x1b]0;owned\x07\x1b[2J"}
    console = Console(width=200, record=True, force_terminal=True)
    console.print(stream_table([row]))
    out = console.export_text()
    assert "\x1b]0;" not in out and "\\x1b]0;owned" in out


def test_watch_with_an_out_that_cannot_be_written_is_an_output_error(tmp_path, capsys):
    """Exit 2 (a usage error) where every other command says 4 for an output it cannot write;
    and the signal handlers it had installed stayed in place after the error."""
    import signal

    from scanner.cli import main

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = tmp_path / "no" / "such" / "folder" / "ev.jsonl"
    (tmp_path / "no").write_text("a file, so no folder can be made under it")
    rc = main(["watch", "rtsp://127.0.0.1:1/x", "--detector", "test_tiny", "--out", str(out), "--duration", "1"])
    assert rc == 4
    assert "cannot write" in capsys.readouterr().err
    assert {s: signal.getsignal(s) for s in before} == before
