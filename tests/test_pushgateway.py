"""``dfscan scan --metrics-push`` against a real Prometheus Pushgateway on loopback.

The gateway is the Debian package ``prometheus-pushgateway`` (``.ci/run``
installs it); the pushed metrics are read back from its own ``/metrics``.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from scanner.metrics_push import JOB, MetricsPusher
from conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [ROOT / "tests" / "data" / "d1.mp4", ROOT / "tests" / "data" / "d2.mp4"]


@pytest.fixture(scope="module")
def gateway():
    exe = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if exe is None:
        pytest.skip("prometheus-pushgateway not installed (.ci/run installs it)")
    port = free_port()
    # --persistence.file= : Debian's gateway otherwise reloads every earlier run's groups
    proc = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None, proc.stderr.read()
            return False

    try:
        wait_for(ready, 20, what="pushgateway to start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def pushed(url: str) -> dict[str, list]:
    """Samples the gateway exposes for job dfscan_scan: name -> [(labels, value)]."""
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for s in fam.samples:
            if s.labels.get("job") == JOB or s.labels.get("job", "").startswith("push-test"):
                out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_scan_pushes_to_gateway(gateway, tmp_path):
    """A real scan of two clips: final counts on the gateway, grouped by host, no path labels."""
    out = tmp_path / "rows.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", *map(str, CLIPS), "--detector", "test_tiny",
                        "--frames", "6", "--workers", "1", "--out", str(out), "--no-progress",
                        "--metrics-push", gateway], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert "metrics pushed to" in r.stdout
    got = pushed(gateway)
    videos = got["dfscan_videos_total"]
    assert sum(v for _, v in videos) == 2 == len(out.read_text().splitlines())
    labels = {k for lab, _ in videos for k in lab}
    assert labels == {"job", "instance", "verdict"}
    assert {lab["instance"] for lab, _ in videos} == {socket.gethostname()}
    assert got["dfscan_stage_duration_seconds_count"]
    assert [v for lab, v in got["push_time_seconds"] if lab["job"] == JOB][0] > 0
    for name, samples in got.items():  # never a path or file name as a label value
        for lab, _ in samples:
            assert not any("/" in v or v.endswith(".mp4") for v in lab.values()), (name, lab)


def test_a_stable_instance_name_replaces_the_last_runs_group(gateway, tmp_path):
    """Grouped by host name only, a job whose pod name changes every run left one group per run
    on the gateway (each with its alerts, never replaced or cleared). --metrics-instance names
    the group: a second run replaces the first's series instead of adding a group."""
    for run in (1, 2):
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", str(CLIPS[run - 1]), "--detector",
                            "test_tiny", "--frames", "4", "--workers", "1", "--out", str(tmp_path / f"{run}.jsonl"),
                            "--no-progress", "--metrics-push", gateway, "--metrics-instance", "archive-scan"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode in (0, 1), r.stdout + r.stderr
    mine = [(lab, v) for lab, v in pushed(gateway)["dfscan_videos_total"] if lab["instance"] == "archive-scan"]
    assert sum(v for _, v in mine) == 1  # the second run's one video, not both runs' two
    from scanner.cli import main

    assert main(["scan", str(CLIPS[0]), "--metrics-instance", "a/b"]) == 2  # not a label-safe name


def test_periodic_pushes_and_failures(gateway, caplog):
    """Pushes happen while running (not only at the end); a dead gateway never raises."""
    reg = CollectorRegistry()
    c = Counter("dfscan_push_test_events", "test counter", registry=reg)
    p = MetricsPusher(gateway, reg, interval_s=0.2, job="push-test", instance="unit").start()

    def value():
        s = pushed(gateway).get("dfscan_push_test_events_total", [])
        return [v for lab, v in s if lab["instance"] == "unit"]

    try:
        c.inc()
        wait_for(lambda: value() == [1.0], 10, what="first periodic push")
        c.inc(2)
        wait_for(lambda: value() == [3.0], 10, what="second periodic push")
    finally:
        assert p.stop()
    assert p.pushes >= 3 and p.failures == 0

    caplog.set_level(logging.WARNING)
    dead = MetricsPusher(f"http://pusher:hunter2-secret@127.0.0.1:{free_port()}", reg, interval_s=0, timeout_s=2)
    assert dead.masked.startswith("http://***@127.0.0.1") and "hunter2" not in dead.gateway
    assert dead.stop() is False and dead.failures == 1
    assert "metrics push" in caplog.text and "hunter2" not in caplog.text


def test_bad_push_url_is_a_usage_error():
    from scanner.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="metrics_push"):
        build_config(None, {"metrics_push": "ftp://gw:9091"})
    assert build_config(None, {"metrics_push": "gw.internal:9091"}).metrics_push == "gw.internal:9091"


@pytest.mark.parametrize("url", ["http://pusher:hunter2/x@gw:9091", "https://pusher:hunter2#x@gw",
                                 "http://pusher:hunter2?x@gw:9091/", "http://hunter2@gw:99999"])
def test_a_bad_push_url_error_shows_no_part_of_the_password(url, capsys):
    """urllib's port error quotes the text after the first ':' of what it took for the host:
    with a '/', '?' or '#' in the password that was the password ('as 'hunter2''), printed
    as `dfscan: error: ...` and kept in CI logs."""
    from scanner.cli import main

    assert main(["scan", "--metrics-push", url, "--detector", "test_tiny", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: ") and err.count("\n") == 1 and "metrics_push" in err, err
    assert "hunter2" not in err, err


def test_a_gateway_that_never_answers_delays_the_end_by_one_timeout_not_two():
    """A gateway that accepts connections and never answers (hung, or a firewall that
    swallows packets): stop() waited for the periodic push in flight and then as long
    again for the final push -- 20 s at the end of every scan with the default timeout."""
    import threading
    import time

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        held = []
        threading.Thread(target=lambda: [held.append(srv.accept()) for _ in range(16)], daemon=True).start()
        reg = CollectorRegistry()
        Counter("dfscan_push_test_hung", "test counter", registry=reg)
        p = MetricsPusher(f"http://127.0.0.1:{srv.getsockname()[1]}", reg, interval_s=0.1, timeout_s=3).start()
        time.sleep(0.3)  # a periodic push is in flight, waiting on the gateway
        t0 = time.monotonic()
        assert p.stop() is False
        assert time.monotonic() - t0 < 4.9  # one timeout (3 s) and the final push's 1 s; was ~6 s
