"""Live streams: real loopback MPEG-TS publishers, reconnects, API, webhook, security.

Everything binds to 127.0.0.1 only; every wait is bounded in time.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from scanner.live.batcher import FrameResult, InferenceWorker
from scanner.live.config import ConfigError, parse_config
from scanner.live.publish import HttpTsPublisher
from scanner.live.rolling import Hysteresis, RollingScore, StreamVerdicts, VerdictSettings
from scanner.live.server import ApiServer, check_bearer
from scanner.live.service import LiveService
from scanner.live.source import Backoff, DropOldestBuffer, LiveSource, SourceSettings
from scanner.live.tracker import IoUTracker
from scanner.live.hls import check_playlist
from scanner.live.urls import RefusedURL, SourceError, mask_credentials, open_options, parse_source
from conftest import free_port, wait_for, smallest_clip

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "t0ken-for-tests-0123456789"


@pytest.fixture(scope="module")
def clip() -> str:
    return smallest_clip()


def http(method: str, url: str, body: dict | None = None, token: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Receiver:
    """Local webhook receiver collecting POSTed JSON bodies."""

    def __init__(self, fail_first: int = 0):
        self.events: list[dict] = []
        self.fail_left = fail_first
        rec = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if rec.fail_left > 0:
                    rec.fail_left -= 1
                    self.send_response(503)
                else:
                    rec.events.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- unit level
def test_url_validation_and_masking():
    assert mask_credentials("rtsp://admin:hunter2@10.0.0.5:554/s") == "rtsp://***@10.0.0.5:554/s"
    from scanner.live.urls import mask_text

    assert "hunter2" not in mask_text("Connection refused: 'rtsp://admin:hunter2@cam/x' and srt://u:p@h")
    assert "abc" not in mask_credentials("https://h/x.m3u8?token=abc&q=1")
    with pytest.raises(RefusedURL):
        parse_source("file:///etc/passwd")
    with pytest.raises(RefusedURL):
        parse_source("/tmp/clip.mp4")
    with pytest.raises(RefusedURL):
        parse_source("gopher://example.org/x")
    with pytest.raises(SourceError):
        parse_source("rtsp://")
    with pytest.raises(SourceError):
        parse_source("http://h/a b")
    assert parse_source("/dev/video0").kind == "device"
    assert parse_source("/tmp/x.mp4", allow_files=True).kind == "file"
    rtsp = open_options(parse_source("rtsp://cam/x"), 5)
    assert rtsp["rtsp_transport"] == "tcp" and rtsp["timeout"] == "5000000"
    hls = open_options(parse_source("https://h/x.m3u8"), 5)
    assert "file" not in hls["protocol_whitelist"].split(",")
    assert "timeout" not in open_options(parse_source("rtmp://h/app/key"), 5)  # rtmp timeout = listen


def test_playlist_check():
    base = "http://127.0.0.1:1/live/index.m3u8"
    ok = "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\"\n#EXTINF:1,\nseg0.ts\nvariant/low.m3u8\n"
    assert check_playlist(base, ok) == ["http://127.0.0.1:1/live/variant/low.m3u8"]
    for bad in ("file:/etc/passwd", "#EXT-X-MAP:URI=\"file:///etc/shadow\"", "udp://1.2.3.4:5", "concat:a|b"):
        with pytest.raises(RefusedURL):
            check_playlist(base, f"#EXTM3U\n#EXTINF:1,\n{bad}\n")


def test_buffer_backoff_tracker_hysteresis():
    b = DropOldestBuffer(3)
    assert [b.put(i) for i in range(5)] == [False, False, False, True, True]
    assert b.dropped == 2 and [b.get() for _ in range(4)] == [2, 3, 4, None]

    bo = Backoff(0.5, 4.0, 0.25)
    d = [bo.next() for _ in range(6)]
    assert 0.375 <= d[0] <= 0.625 and all(3.0 <= x <= 5.0 for x in d[3:])
    bo.reset()
    assert bo.next() <= 0.625

    tr = IoUTracker(0.3, max_age_s=1.0)
    a, _ = tr.update(np.array([[0, 0, 100, 100], [300, 0, 400, 100]], np.float32), 0.0)
    b2, _ = tr.update(np.array([[310, 5, 410, 105], [10, 5, 110, 105]], np.float32), 0.5)
    assert b2 == [a[1], a[0]]
    c, ended = tr.update(np.zeros((0, 4), np.float32), 2.0)
    assert c == [] and sorted(ended) == sorted(a)

    s = VerdictSettings(window_s=100, fake_above=0.6, real_below=0.4, min_samples=2)
    h, r = Hysteresis(s), RollingScore(100)
    seen = []
    for t, p in enumerate([0.9, 0.9, 0.55, 0.5, 0.45, 0.1, 0.1, 0.1, 0.1, 0.1]):
        r.add(t, p)
        seen.append(h.update(r.value, r.count)[1])
    # fake once the mean reaches 0.6, stays fake inside the band, real only below 0.4
    assert seen[0] == "unknown" and seen[1] == "fake"
    assert seen[2:6] == ["fake"] * 4 and seen[-1] == "real"
    flips = sum(1 for x, y in zip(seen, seen[1:]) if x != y)
    assert flips == 2


def test_stream_verdict_events():
    sv = StreamVerdicts("s", VerdictSettings(window_s=5, fake_above=0.6, real_below=0.4, min_samples=2,
                                             emit_interval_s=3600))
    box = np.array([[10, 10, 90, 90]], np.float32)
    ev1 = sv.update(0.0, box, np.array([0.9]))
    ev2 = sv.update(0.5, box, np.array([0.8]))
    assert ev1 == [] and {(e["track"], e["verdict"], e["alert"]) for e in ev2} == {(1, "fake", True), (None, "fake", True)}
    assert sv.update(1.0, box, np.array([0.7])) == []  # no change, no event
    ev = sv.tick(time.monotonic() + 7200)  # the window aged out: a change to unknown, then the summary
    assert [(e["reason"], e["verdict"]) for e in ev] == [("change", "unknown"), ("interval", "unknown")]
    assert ev[-1]["tracks"] == {"1": pytest.approx(0.8, abs=1e-3)}


def test_verdict_of_a_stream_whose_frames_stop_lapses():
    """A fake stream whose frames stop (publisher gone, reconnecting): windows aged only
    when a frame arrived, so /streams and dfscan_stream_fake kept 'fake' (and the last
    score) for as long as the stream stayed down; a track without a finite score read
    0.0 (real). The watchdog's tick now ages the windows."""
    from types import SimpleNamespace

    from scanner.decode import Frame
    from scanner.live.service import _Stream
    from scanner.live.source import LiveFrame

    s = VerdictSettings(window_s=5, fake_above=0.6, real_below=0.4, min_samples=2, emit_interval_s=3600)
    svc = LiveService(parse_config({}))
    sm = svc.metrics.stream("cam")
    st = _Stream(None, SimpleNamespace(_m=sm, state="backoff"), StreamVerdicts("cam", s), None)
    svc._streams["cam"] = st
    box, img = np.array([[10, 10, 90, 90]], np.float32), np.zeros((8, 8, 3), np.uint8)
    t0 = time.monotonic()
    for k in range(3):
        svc._on_result(LiveFrame("cam", k, k, t0 + k * 0.5, Frame(k, 0.0, img)),
                       FrameResult(box, np.ones(1), np.array([0.9])))
    gauge = lambda g: svc.metrics.registry.get_sample_value(g, {"stream": "cam"})  # noqa: E731
    assert st.verdicts.summary["verdict"] == "fake" and gauge("dfscan_stream_fake") == 1.0
    svc._tick(t0 + 3)  # still inside the window: nothing changes
    assert st.verdicts.summary["verdict"] == "fake" and gauge("dfscan_stream_fake") == 1.0
    svc._tick(t0 + 10)  # every sample older than the window: no verdict left
    sm_ = st.verdicts.summary
    assert sm_["verdict"] == "unknown" and sm_["score"] is None and sm_["samples"] == 0
    assert sm_["tracks"] == {"1": {"verdict": "unknown", "score": None}}
    assert gauge("dfscan_stream_fake") == 0.0 and np.isnan(gauge("dfscan_stream_score_ratio"))
    events = st.verdicts.expire(t0 + 11)
    assert events == []  # already lapsed: no repeated change events
    sv = StreamVerdicts("n", s)
    sv.update(0.0, box, np.array([np.nan]))
    assert sv.summary["tracks"] == {"1": {"verdict": "unknown", "score": None}}
    lapsed = StreamVerdicts("e", s)
    for k in range(3):
        lapsed.update(t0 + k * 0.5, box, np.array([0.9]))
    ev = lapsed.expire(t0 + 10)
    assert {(e["track"], e["previous"], e["verdict"], e["alert"]) for e in ev} == {
        (None, "fake", "unknown", False), (1, "fake", "unknown", False)}
    json.dumps(ev, allow_nan=False)


def test_verdicts_judged_without_a_frame_close_and_lapse_alike():
    """expire (windows aged) and close (windows emptied: removed / shut down) share one path:
    an event per verdict that changed, none for one already unknown, no latency_s (no frame
    triggered it), as the interval summary; events of a frame carry their latency."""
    s = VerdictSettings(window_s=5, fake_above=0.6, real_below=0.4, min_samples=2, emit_interval_s=3600)
    box = np.array([[10, 10, 90, 90]], np.float32)
    t0 = time.monotonic()
    sv = StreamVerdicts("cam", s)
    changed = [e for k in range(3) for e in sv.update(t0 + k * 0.5, box, np.array([0.9]))]
    assert changed and all("latency_s" in e for e in changed)
    sv.update(t0 + 1.5, np.array([[200, 200, 260, 260]], np.float32), np.array([0.9]))  # track 2: one sample
    assert sv.summary["tracks"]["2"]["verdict"] == "unknown"
    assert sv.expire(t0 + 3) == []  # inside the window: nothing lapses
    ev = sv.close("removed", t0 + 3)
    assert [(e["track"], e["reason"], e["previous"], e["verdict"], e["score"], e["samples"], e["alert"])
            for e in ev] == [(None, "removed", "fake", "unknown", None, 0, False),
                             (1, "removed", "fake", "unknown", None, 0, False)]  # none for track 2
    assert not any("latency_s" in e for e in ev)
    assert sv.close("shutdown", t0 + 4) == [] and sv.expire(t0 + 20) == []
    assert sv.summary["verdict"] == "unknown" and sv.summary["samples"] == 0
    assert "latency_s" not in sv.tick(time.monotonic() + 7200)[0]
    lapsed = StreamVerdicts("e", s)
    for k in range(3):
        lapsed.update(t0 + k * 0.5, box, np.array([0.9]))
    ev = lapsed.expire(t0 + 10)
    assert [(e["track"], e["reason"], e["verdict"]) for e in ev] == [(None, "change", "unknown"), (1, "change", "unknown")]
    assert not any("latency_s" in e for e in ev)


def test_cross_stream_batching():
    """Frames from several streams share one analyzer call; every stream is served."""
    calls: list[int] = []

    def analyzer(frames):
        calls.append(len(frames))
        time.sleep(0.01)
        return [FrameResult(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.full(1, 0.5, np.float32))
                for _ in frames]

    got: list[str] = []
    w = InferenceWorker("cpu", analyzer, lambda f, r: got.append(f.stream), max_frames=8, max_wait_s=0.2)

    class FakeSrc:
        def __init__(self, name):
            self.name, self.buffer = name, DropOldestBuffer(16)

    from scanner.live.source import LiveFrame
    srcs = [FakeSrc(f"s{i}") for i in range(4)]
    for s in srcs:
        w.assign(s)
        for k in range(4):
            s.buffer.put(LiveFrame(s.name, k, k * 0.5, time.monotonic(), None))
    w.start()
    try:
        wait_for(lambda: len(got) == 16, 5, what="16 results")
    finally:
        w.stop()
    assert len(calls) == 2 and calls == [8, 8]  # 16 frames, 4 streams -> 2 model calls
    assert sorted(got[:8]) == sorted([f"s{i}" for i in range(4)] * 2)  # round-robin fairness


def test_api_auth_config():
    with pytest.raises(ConfigError, match="token is required"):
        parse_config({"api": {"host": "0.0.0.0", "token_env": "DFSCAN_TEST_UNSET_TOKEN"}})
    os.environ["DFSCAN_TEST_SHORT"] = "short"
    with pytest.raises(ConfigError, match="at least 16"):
        parse_config({"api": {"host": "0.0.0.0", "token_env": "DFSCAN_TEST_SHORT"}})
    os.environ["DFSCAN_TEST_TOKEN"] = TOKEN
    cfg = parse_config({"api": {"host": "0.0.0.0", "token_env": "DFSCAN_TEST_TOKEN"}})
    assert cfg.api.check_auth() == TOKEN
    assert parse_config({"api": {"token_env": "DFSCAN_TEST_UNSET_TOKEN"}}).api.check_auth() is None
    with pytest.raises(ConfigError):
        parse_config({"api": {"bogus": 1}})  # extra keys refused
    with pytest.raises(ConfigError, match="local files"):
        parse_config({"streams": [{"name": "x", "url": "/etc/passwd"}]})
    assert check_bearer(f"Bearer {TOKEN}", TOKEN) and not check_bearer("Bearer nope", TOKEN)
    assert not check_bearer(None, TOKEN) and check_bearer(None, None)
    assert parse_config(__import__("yaml").safe_load((ROOT / "configs" / "serve.yaml").read_text()))


def test_hls_playlist_with_file_refused(tmp_path, clip):
    """A playlist served over HTTP that points at file: segments never gets decoded."""
    seg = tmp_path / "seg.ts"
    shutil.copy(clip, seg)
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:{seg}\n#EXT-X-ENDLIST\n".encode()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(playlist)))
            self.end_headers()
            self.wfile.write(playlist)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        src = LiveSource("hls", f"http://127.0.0.1:{httpd.server_address[1]}/x.m3u8",
                         SourceSettings(max_retries=0, open_timeout_s=3)).start()
        wait_for(lambda: src.state == "stopped", 10, what="source to give up")
        assert src.stats.decoded == 0 and src.stats.connects == 0
        assert "references a file: URI" in src.stats.last_error
        # Disguised as .ts the pre-check is skipped; FFmpeg's protocol whitelist still refuses.
        src2 = LiveSource("hls2", f"http://127.0.0.1:{httpd.server_address[1]}/live.ts",
                          SourceSettings(max_retries=0, open_timeout_s=3)).start()
        wait_for(lambda: src2.state == "stopped", 10, what="disguised playlist to be refused")
        assert src2.stats.decoded == 0 and src2.stats.errors == 1
    finally:
        httpd.shutdown()
        httpd.server_close()


# ---------------------------------------------------------------- end to end
def _native_threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _metric(text: str, name: str, stream: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{stream="{stream}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def test_live_service_end_to_end(clip, tmp_path):
    """Two real loopback streams + a dead URL: verdicts, webhook alerts, API, reconnect cycles."""
    import torch

    torch.set_num_threads(1)
    pub_a, pub_b = HttpTsPublisher(clip).start(), HttpTsPublisher(clip).start()
    receiver = Receiver(fail_first=1)  # the first POST fails: the sink must retry
    dead = f"http://viewer:topsecret@127.0.0.1:{free_port()}/never.ts"  # credentials must never leak
    os.environ["DFSCAN_TEST_TOKEN"] = TOKEN
    cfg = parse_config({
        "api": {"host": "127.0.0.1", "port": 0, "token_env": "DFSCAN_TEST_TOKEN"},
        "model": {"detector": "test_tiny", "batch_frames": 4, "max_wait_ms": 30},
        "faces": {"min_face": 40},
        # fake_above 0: any scored face is "fake", so alerts must reach the webhook
        "verdict": {"window_s": 3, "fake_above": 0.0, "real_below": 0.0, "min_samples": 2, "emit_interval_s": 1},
        "defaults": {"sample_fps": 3, "stall_s": 2, "open_timeout_s": 2,
                     "backoff_initial_s": 0.1, "backoff_max_s": 0.4},
        "sinks": [{"type": "webhook", "url": receiver.url, "retries": 2, "backoff_s": 0.05, "timeout_s": 2},
                  {"type": "jsonl", "path": str(tmp_path / "events.jsonl"), "only_alerts": False},
                  {"type": "webhook", "name": "broken", "url": f"http://127.0.0.1:{free_port()}/x",
                   "retries": 1, "backoff_s": 0.01, "timeout_s": 1}],
        "streams": [{"name": "a", "url": pub_a.url}, {"name": "b", "url": pub_b.url},
                    {"name": "dead", "url": dead}],
    })
    svc = LiveService(cfg).start()
    api = ApiServer(svc, "127.0.0.1", 0, cfg.api.check_auth()).start()
    base = f"http://127.0.0.1:{api.port}"
    try:
        # verdicts arrive, alerts reach the webhook (after one failed POST + retry)
        wait_for(lambda: receiver.events, 30, what="webhook alert")
        alert = receiver.events[0]
        assert alert["alert"] and alert["verdict"] == "fake" and alert["stream"] in ("a", "b")
        assert 0 <= alert["latency_s"] < 5
        wait_for(lambda: (tmp_path / "events.jsonl").stat().st_size > 0, 5, what="jsonl events")

        # auth: probes open, everything else needs the bearer token
        assert http("GET", f"{base}/healthz")[0] == 200
        assert http("GET", f"{base}/readyz")[0] == 200
        assert http("GET", f"{base}/streams")[0] == 401
        assert http("GET", f"{base}/metrics", token="wrong-token-wrong-token")[0] == 401
        def rows():
            code, body = http("GET", f"{base}/streams", token=TOKEN)
            assert code == 200
            return {r["name"]: r for r in json.loads(body)["streams"]}

        wait_for(lambda: all(rows()[k]["verdict"] == "fake" for k in "ab"), 20, what="a and b fake")
        assert rows()["a"]["state"] == "live" and "tracks" in rows()["a"]

        # kill the publisher of "a" mid-stream, restart it: >= 5 reconnect cycles
        def row(name):  # observed through the API, like an operator would
            code, body = http("GET", f"{base}/streams/{name}", token=TOKEN)
            assert code == 200
            return json.loads(body)

        baseline = None
        for cycle in range(5):
            connects = row("a")["connects"]
            b_sampled = row("b")["frames_sampled"]
            pub_a.stop()
            wait_for(lambda: row("a")["state"] in ("backoff", "connecting"), 8, what="a to drop")
            time.sleep(0.3)
            pub_a.start()
            wait_for(lambda: row("a")["connects"] > connects and row("a")["state"] == "live",
                     15, what=f"a to reconnect (cycle {cycle})")
            # the other real stream kept flowing the whole time
            wait_for(lambda: row("b")["frames_sampled"] > b_sampled, 5, what="b to keep flowing")
            if cycle == 0:
                baseline = (_native_threads(), sorted(t.name for t in threading.enumerate()
                                                      if t.name.startswith("dfscan-")), _rss_mb())
        names = sorted(t.name for t in threading.enumerate() if t.name.startswith("dfscan-"))
        assert names == baseline[1]  # same service threads after 5 cycles
        assert _native_threads() <= baseline[0] + 3  # + transient publisher/HTTP handler threads
        assert _rss_mb() - baseline[2] < 60

        code, body = http("GET", f"{base}/metrics", token=TOKEN)
        text = body.decode()
        assert _metric(text, "dfscan_stream_reconnects_total", "a") >= 5
        assert 'dfscan_stream_state{state="live",stream="a"} 1.0' in text
        assert _metric(text, "dfscan_stream_frames_sampled_total", "b") > 0
        assert 'dfscan_stream_frame_to_verdict_seconds_count{stream="b"}' in text
        assert "dfscan_sink_failures_total{sink=\"broken\"}" in text  # the batch scan's name too
        # the same build series as batch scans, so one dashboard panel shows both
        assert re.search(r'dfscan_build_info\{.*detector="[a-z0-9_]+".*version="[0-9.]+.*"\} 1\.0', text)

        # the URL that never connects stays in backoff/connecting, counting errors
        d = svc.describe("dead")
        assert d["state"] in ("backoff", "connecting") and d["connects"] == 0 and d["reconnects"] >= 3
        assert "refused" in d["last_error"].lower()
        listing = http("GET", f"{base}/streams/dead", token=TOKEN)[1].decode()
        assert "topsecret" not in listing + text and "***@127.0.0.1" in listing
        assert _metric(text, "dfscan_stream_errors_total", "dead") >= 3

        # run-time stream changes through the API (credentials masked in output)
        new = {"name": "c", "url": pub_b.url.replace("http://", "http://user:secret@")}
        code, body = http("POST", f"{base}/streams", new, token=TOKEN)
        assert code == 201 and "secret" not in body.decode()
        assert http("POST", f"{base}/streams", new, token=TOKEN)[0] == 409
        assert http("POST", f"{base}/streams", {"name": "x", "url": "file:///etc/passwd"}, token=TOKEN)[0] == 400
        assert http("POST", f"{base}/streams", {"name": "bad name!", "url": pub_b.url}, token=TOKEN)[0] == 400
        assert 'stream="x"' not in http("GET", f"{base}/metrics", token=TOKEN)[1].decode()
        wait_for(lambda: svc.describe("c")["state"] == "live", 10, what="c live")
        assert http("DELETE", f"{base}/streams/c", token=TOKEN)[0] == 200
        assert http("DELETE", f"{base}/streams/c", token=TOKEN)[0] == 404
        text = http("GET", f"{base}/metrics", token=TOKEN)[1].decode()
        assert 'stream="c"' not in text  # removed streams stop being exported
    finally:
        api.stop()
        svc.stop()
        pub_a.stop()
        pub_b.stop()
        receiver.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("dfscan-")]


def test_serve_graceful_sigterm(clip, tmp_path):
    """`serve` as a process: ready on loopback, stream live, clean exit 0 on SIGTERM."""
    pub = HttpTsPublisher(clip).start()
    port = free_port()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        f"api: {{host: 127.0.0.1, port: {port}, token_env: DFSCAN_TEST_UNSET_TOKEN}}\n"
        "model: {detector: test_tiny}\n"
        f"sinks: [{{type: jsonl, path: {tmp_path / 'ev.jsonl'}}}]\n"
        f"streams: [{{name: cam, url: '{pub.url}'}}]\n"
    )
    code = ("import argparse, sys; from scanner.live.cli import add_serve_parser; "
            "ap = argparse.ArgumentParser(); sp = ap.add_subparsers(); add_serve_parser(sp); "
            "a = ap.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def live():
            try:
                code, body = http("GET", f"{base}/streams")
            except OSError:
                return False
            return code == 200 and json.loads(body)["streams"][0]["state"] == "live"

        wait_for(live, 40, step=0.2, what="serve to be ready with a live stream")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        pub.stop()
    out = proc.stdout.read()
    assert "shutting down" in out, out[-2000:]


def test_real_footage_stays_real_live(clip):
    """The packaged default detector on a real face clip streamed live: the stream's
    rolling verdict settles on real and never turns fake (default thresholds)."""
    import torch

    torch.set_num_threads(1)
    pub = HttpTsPublisher(clip).start()
    cfg = parse_config({
        "model": {"engine": "eager", "batch_frames": 4, "max_wait_ms": 30},
        "verdict": {"window_s": 3, "min_samples": 3, "emit_interval_s": 1},
        "defaults": {"sample_fps": 4},
        "sinks": [],
        "streams": [{"name": "real", "url": pub.url}],
    })
    assert cfg.model.detector == "meso4_df"
    svc = LiveService(cfg).start()
    seen: list[dict] = []
    try:
        wait_for(lambda: svc.describe("real")["verdict"] == "real", 60, what="verdict real")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            seen.append(svc.describe("real"))
            time.sleep(0.2)
    finally:
        svc.stop()
        pub.stop()
    assert all(r["verdict"] == "real" for r in seen), [r["verdict"] for r in seen]
    assert seen[-1]["samples"] >= 3 and seen[-1]["score"] < 0.4 and seen[-1]["faces"] >= 1


def test_stall_detected_and_recovered(clip):
    """A publisher that keeps the socket open but stops sending -> stalled -> reconnect -> live."""
    from scanner.live.watchdog import Watchdog

    pub = HttpTsPublisher(clip).start()
    src = LiveSource("hung", pub.url, SourceSettings(sample_fps=2, stall_s=0.8, open_timeout_s=1.5,
                                                      backoff_initial_s=0.1, backoff_max_s=0.3))
    states: list[str] = []
    wd = Watchdog(lambda: [src], interval_s=0.1, on_tick=lambda now: states.append(src.state))
    src.start()
    wd.start()
    try:
        wait_for(lambda: src.state == "live", 10, what="live")
        pub.paused.set()
        wait_for(lambda: "stalled" in states, 5, what="stalled state")
        wait_for(lambda: src.state == "backoff" or src.stats.reconnects > 0, 8, what="reconnect attempt")
        pub.paused.clear()
        wait_for(lambda: src.state == "live" and src.stats.connects >= 2, 15, what="live again")
        # The recorded error is the stall itself (the watchdog's abort or the read timeout
        # it causes), not just any error.
        assert src.stats.errors >= 1
        assert re.search(r"stalled|timed? ?out", src.stats.last_error, re.I), src.stats.last_error
    finally:
        wd.stop()
        src.stop()
        pub.stop()
    assert src.state == "stopped" and not src.alive


def test_watch_table(clip):
    """`dfscan watch` path: a live HTTP stream and a local file played as live, shown in a table."""
    import io

    from rich.console import Console

    from scanner.live.watch import parse_targets, run_watch, stream_table

    assert [(s.name, s.url) for s in parse_targets(["cam=rtsp://h/x", "http://h/y?a=b"])] == [
        ("cam", "rtsp://h/x"), ("s2", "http://h/y?a=b")]
    pub = HttpTsPublisher(clip).start()
    try:
        cfg = parse_config({"api": {"enabled": False}, "model": {"detector": "test_tiny"}, "allow_files": True,
                            "faces": {"min_face": 40}, "defaults": {"sample_fps": 4},
                            "streams": [s.model_dump(exclude_none=True)
                                        for s in parse_targets([f"net={pub.url}", f"file={clip}"])]})
        buf = io.StringIO()
        rows = run_watch(cfg, duration_s=4, console=Console(file=buf, width=160, force_terminal=False))
    finally:
        pub.stop()
    by = {r["name"]: r for r in rows}
    assert by["net"]["frames_sampled"] > 3 and by["file"]["frames_sampled"] > 3
    assert by["net"]["faces"] >= 1
    assert 10 < by["net"]["fps"] < 60  # decode rate of the 30 fps publisher
    text = buf.getvalue()
    assert "net" in text and "file" in text
    Console(file=io.StringIO()).print(stream_table(rows))

    # files play in real time, not as fast as they decode
    import av

    with av.open(clip) as c:
        st = c.streams.video[0]
        n = sum(1 for p in c.demux(st) if p.size)
        duration = (n - 1) / float(st.average_rate)
    src = LiveSource("f", clip, SourceSettings(allow_files=True, max_retries=0)).start()
    t0 = time.monotonic()
    wait_for(lambda: src.state == "stopped", 10 + duration, what="file to end")
    assert time.monotonic() - t0 >= 0.9 * duration and src.stats.decoded == n


def test_udp_stream_and_restart(clip):
    """MPEG-TS over UDP: frames flow; sender stops -> stalled; sender back -> live again."""
    from scanner.live.publish import UdpTsPublisher
    from scanner.live.watchdog import Watchdog

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = LiveSource("udp", f"udp://127.0.0.1:{port}", SourceSettings(
        sample_fps=2, stall_s=1.0, open_timeout_s=2, backoff_initial_s=0.1, backoff_max_s=0.3))
    seen: set[str] = set()
    wd = Watchdog(lambda: [src], interval_s=0.1, on_tick=lambda now: seen.add(src.state))
    src.start()
    wd.start()
    pub = UdpTsPublisher(clip, port)
    try:
        time.sleep(0.2)
        pub.start()
        wait_for(lambda: src.stats.sampled >= 3, 10, what="udp frames")
        pub.stop()
        wait_for(lambda: "stalled" in seen and src.state in ("backoff", "connecting"), 10, what="stall")
        decoded = src.stats.decoded
        pub.start()
        wait_for(lambda: src.state == "live" and src.stats.decoded > decoded, 15, what="udp live again")
    finally:
        pub.stop()
        wd.stop()
        src.stop()


def test_unsupported_source_stops_with_reason():
    """A protocol/device this FFmpeg build lacks is reported once, not retried forever."""
    from scanner.live.source import has_format

    url = "srt://127.0.0.1:9" if has_format("v4l2") else "/dev/video0"
    src = LiveSource("x", url, SourceSettings(open_timeout_s=1, backoff_initial_s=0.05)).start()
    try:
        wait_for(lambda: src.state == "stopped" or src.stats.reconnects > 0, 10, what="first attempt")
        if src.state != "stopped":
            pytest.skip(f"{url} is supported by this FFmpeg build")
        assert src.stats.reconnects == 0 and "unsupported" in src.stats.last_error
    finally:
        src.stop()


@pytest.mark.gpu
def test_live_service_on_cuda(clip):
    """The same live path with the inference worker on a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from scanner.live.sinks import Sink

    class Mem(Sink):
        def __init__(self):
            super().__init__("mem")
            self.events = []

        def deliver(self, e):
            self.events.append(e)

    pub = HttpTsPublisher(clip).start()
    mem = Mem()
    cfg = parse_config({"api": {"enabled": False}, "model": {"detector": "test_tiny", "devices": ["cuda:0"]},
                        "faces": {"min_face": 40}, "verdict": {"window_s": 3, "min_samples": 2},
                        "streams": [{"name": "g", "url": pub.url}]})
    svc = LiveService(cfg, extra_sinks=[mem]).start()
    try:
        wait_for(lambda: any(e["stream"] == "g" and e["verdict"] != "unknown" for e in mem.events), 30,
                 what="a verdict from the CUDA worker")
        assert svc.describe("g")["device"] == "cuda:0" and svc.describe("g")["faces"] >= 1
    finally:
        svc.stop()
        pub.stop()


def test_live_anamorphic_stream_is_unsqueezed_like_a_scan(tmp_path):
    # Batch scans stretch non-square pixels to square ones before detection; a live
    # stream of the same video took the squeezed frames (faces half as wide).
    from fractions import Fraction

    from conftest import make_video

    # 80 x 160 stored, 160 x 160 displayed; make_video's marker is 20 x 40 stored, 40 x 40 shown
    path = make_video(tmp_path / "sar.mp4", frames=10, size=(80, 160), sar=Fraction(2, 1))
    src = LiveSource("sar", str(path), SourceSettings(allow_files=True, max_retries=0, det_max_side=80)).start()
    try:
        wait_for(lambda: src.state == "stopped", 10, what="file to end")
    finally:
        src.stop()
    item = src.buffer.get()
    assert item is not None
    assert item.frame.image.shape == (160, 160, 3) and item.frame.small.shape == (80, 80, 3)
    ys, xs = np.nonzero(item.frame.image[..., 1] > 128)
    assert ys.max() == pytest.approx(39, abs=1) and xs.max() == pytest.approx(39, abs=1)


def test_webcams_are_not_refused_when_ffmpeg_has_v4l2(monkeypatch):
    """PyAV lists the device as 'video4linux2,v4l2'; the check looked for 'v4l2' itself, so
    /dev/videoN was always "unsupported" (no webcam could be watched)."""
    import av

    from scanner.live.source import has_format

    monkeypatch.setattr(av, "formats_available", {"mp4", "video4linux2,v4l2"})
    assert has_format("v4l2") and has_format("video4linux2") and not has_format("v4l")
    src = LiveSource("cam", "/dev/video99", SourceSettings(open_timeout_s=1, max_retries=0)).start()
    try:
        wait_for(lambda: src.state == "stopped", 10, what="the missing device to fail")
        assert "no v4l2 input device" not in (src.stats.last_error or "")  # opened, not refused
    finally:
        src.stop()


def test_a_file_given_to_watch_says_how_to_allow_it(capsys, tmp_path):
    """'dfscan watch FILE' said "(root): Value error, stream 's1': local files are not allowed"
    (pydantic's wording) and not how to allow one."""
    from scanner.cli import main

    assert main(["watch", str(tmp_path / "clip.mp4"), "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dfscan: error: watch: stream 's1': local files are not allowed")
    assert "--allow-files" in err and "Value error" not in err and "(root)" not in err
