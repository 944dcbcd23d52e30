"""The deploy/ observability stack against real servers.

A real Prometheus (Debian package ``prometheus``) and Pushgateway
(``prometheus-pushgateway``) run on loopback with the repository's own
``deploy/prometheus`` configuration (only host:port targets, the token file and
intervals templated). They watch a real ``dfscan serve`` (a stream of a real
clip judged fake with a low threshold and dropping frames, plus a stream whose
camera is unreachable) and a real ``dfscan scan --metrics-push`` (one fake
video, one unreadable file). Every PromQL expression of the Grafana dashboard
and of the alert rules must then return data through Prometheus's HTTP API:
each alert in the situation it exists to report.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BINARIES = {name: shutil.which(name) for name in ("prometheus", "promtool", "prometheus-pushgateway")}
MISSING = [n for n, path in BINARIES.items() if path is None]
if MISSING and os.environ.get("CI") != "true":  # CI installs them (.ci/run): missing there is a failure
    pytest.skip(f"{', '.join(MISSING)} not installed (apt-get install prometheus prometheus-pushgateway)",
                allow_module_level=True)
DFSCAN = [sys.executable, "-m", "scanner.cli"]
CLIP = ROOT / "scanner/samples/d7.mp4"
LIVE_ONLY_AFTER_STOP = {"DfscanServeDown"}  # evaluated once the service is stopped
BATCH_ONLY_AFTER_FAILURE = {"DfscanScanFailed"}  # evaluated once a failed scan has pushed


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana/dfscan.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs and all(isinstance(e, str) and e for e in exprs)
    return exprs


def alert_exprs() -> dict[str, str]:
    doc = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen, **kw) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[0]} exited with {proc.returncode}"
        try:
            if requests.get(url, timeout=2, **kw).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready within {timeout_s}s")


def _serve_config(tmp: Path, api_port: int, token_file: Path) -> Path:
    cfg = {
        "api": {"host": "127.0.0.1", "port": api_port, "token_env": None, "token_file": str(token_file)},
        "model": {"detector": "meso4_df", "engine": "auto", "devices": ["cpu"]},
        # every face counts as fake: the stream's verdict turns fake (DfscanStreamFake)
        "verdict": {"fake_above": 0.0005, "real_below": 0.0001, "min_samples": 1, "window_s": 5},
        "allow_files": True,
        "sinks": [{"type": "jsonl", "path": str(tmp / "events.jsonl")}],
        "streams": [
            # 30 sampled fps into a 1-frame buffer: more than 2 CPUs can analyse -> drops
            {"name": "clip", "url": str(CLIP), "sample_fps": 30, "buffer_frames": 1},
            # nobody listens: stays in connecting/backoff (DfscanStreamDown)
            {"name": "cam_down", "url": f"rtsp://127.0.0.1:{_port()}/stream", "max_retries": None},
        ],
    }
    path = tmp / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _prometheus_config(tmp: Path, ports: dict, token_file: Path) -> Path:
    """deploy/prometheus/prometheus.yml with loopback targets; alerts.yml unchanged."""
    text = (DEPLOY / "prometheus/prometheus.yml").read_text()
    for host, port in (("dfscan:8787", ports["api"]), ("pushgateway:9091", ports["gw"]),
                       ("alertmanager:9093", ports["am"])):
        assert host in text
        text = text.replace(host, f"127.0.0.1:{port}")
    cfg = yaml.safe_load(text.replace("/run/secrets/dfscan_api_token", str(token_file)))
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (tmp / "prom").mkdir()
    shutil.copy(DEPLOY / "prometheus/alerts.yml", tmp / "prom/alerts.yml")
    path = tmp / "prom/prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Stack:
    def __init__(self, tmp: Path):
        self.tmp, self.procs = tmp, {}
        self.ports = {k: _port() for k in ("api", "gw", "am", "prom")}
        self.token_file = tmp / "token"
        self.token_file.write_text(secrets.token_hex(24))

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)
        return self.procs[name]

    def stop(self, name: str) -> None:
        p = self.procs.get(name)
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def query(self, expr: str) -> list[dict]:
        r = requests.get(f"http://127.0.0.1:{self.ports['prom']}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]


def has_data(result: list[dict]) -> bool:
    """Non-empty, and at least one finite value (a NaN quantile of empty buckets is no data)."""
    return any(math.isfinite(float(s["value"][1])) for s in result)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("obs")
    s = Stack(tmp)
    env_token = {"headers": {"Authorization": f"Bearer {s.token_file.read_text()}"}}
    try:
        serve = s.start("serve", [*DFSCAN, "serve", "--config", str(_serve_config(tmp, s.ports["api"], s.token_file))])
        gw = s.start("pushgateway", [BINARIES["prometheus-pushgateway"],
                                     f"--web.listen-address=127.0.0.1:{s.ports['gw']}",
                                     "--persistence.file="])  # no groups of earlier runs
        _wait_http(f"http://127.0.0.1:{s.ports['gw']}/-/ready", 30, gw)
        _push_scan(s, tmp)
        _wait_http(f"http://127.0.0.1:{s.ports['api']}/readyz", 180, serve)
        _wait_http(f"http://127.0.0.1:{s.ports['api']}/metrics", 10, serve, **env_token)
        s.prom_config = _prometheus_config(tmp, s.ports, s.token_file)
        prom = s.start("prometheus", [BINARIES["prometheus"], f"--config.file={s.prom_config}",
                                      f"--storage.tsdb.path={tmp / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{s.ports['prom']}"])
        _wait_http(f"http://127.0.0.1:{s.ports['prom']}/-/ready", 60, prom)
        yield s
    finally:
        for name in ("prometheus", "serve", "pushgateway"):
            s.stop(name)


def _push_scan(s: Stack, tmp: Path) -> None:
    """A batch scan pushed at its end: one video judged fake (threshold 0), one unreadable file."""
    bad = tmp / "not_a_video.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    out = subprocess.run([*DFSCAN, "scan", str(CLIP), str(bad), "--threshold", "0", "--frames", "8",
                          "--no-progress", "--out", str(tmp / "rows.jsonl"),
                          "--metrics-push", f"http://127.0.0.1:{s.ports['gw']}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]  # 1: an input error row
    verdicts = sorted(json.loads(line)["verdict"] for line in (tmp / "rows.jsonl").read_text().splitlines())
    assert verdicts == ["error", "fake"]


def test_promtool_accepts_the_configs(stack):
    for args in (["check", "config", str(stack.prom_config)],
                 ["check", "rules", str(DEPLOY / "prometheus/alerts.yml")]):
        out = subprocess.run([BINARIES["promtool"], *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_every_dashboard_and_alert_expression_returns_data(stack):
    later = LIVE_ONLY_AFTER_STOP | BATCH_ONLY_AFTER_FAILURE
    exprs = dashboard_exprs() + [e for name, e in alert_exprs().items() if name not in later]
    # Rates need two scrapes in their window, verdicts need faces: poll until all have data.
    deadline, missing = time.monotonic() + 150, exprs
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing = [e for e in exprs if not has_data(stack.query(e))]
    assert not missing, f"no data for: {missing}\nserve log: {(stack.tmp / 'serve.log').read_text()[-3000:]}"
    # and the targets really are the dfscan service and the gateway holding the pushed scan
    up = {s["metric"]["job"]: s["value"][1] for s in stack.query("up")}
    assert up == {"dfscan-serve": "1", "pushgateway": "1"}, up
    pushed = stack.query('dfscan_videos_total{verdict="fake", job="dfscan_scan"}')
    assert [s["value"][1] for s in pushed] == ["1"]


def test_serve_down_alert_fires_when_the_service_stops(stack):
    stack.stop("serve")
    deadline = time.monotonic() + 30
    exprs = [alert_exprs()[name] for name in LIVE_ONLY_AFTER_STOP]
    while time.monotonic() < deadline and not all(has_data(stack.query(e)) for e in exprs):
        time.sleep(1)
    assert all(has_data(stack.query(e)) for e in exprs)


def test_scan_failed_alert_fires_for_a_scan_that_could_not_start(stack):
    """A scan ended by an error before its end pushed zero counters that read as a clean scan."""
    bad = stack.tmp / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file" * 10)
    out = subprocess.run([*DFSCAN, "scan", str(CLIP), "--weights", str(bad), "--no-progress",
                          "--out", str(stack.tmp / "failed.jsonl"),
                          "--metrics-push", f"http://127.0.0.1:{stack.ports['gw']}"],
                         capture_output=True, text=True, timeout=300, cwd=stack.tmp)
    assert out.returncode != 0, out.stdout[-2000:] + out.stderr[-2000:]
    exprs = [alert_exprs()[name] for name in BATCH_ONLY_AFTER_FAILURE]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(has_data(stack.query(e)) for e in exprs):
        time.sleep(1)
    assert all(has_data(stack.query(e)) for e in exprs)
    assert [s["metric"]["state"] for s in stack.query(exprs[0])] == ["failed"]
