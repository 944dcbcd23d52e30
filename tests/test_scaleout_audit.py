"""Scale-out and observability audit: Ray actors with other weights, a Pushgateway that
never finishes its answer (no Ray cluster: stand-ins record the calls)."""
from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Counter

import scanner.distributed as dist
from scanner.config import ScanConfig
from scanner.metrics_push import MetricsPusher


def _info(weights_hash: str, node: str) -> dict:
    return {"engine_info": {}, "node": node, "detector": "test_tiny", "weights_hash": weights_hash,
            "threshold": 0.5, "pid": 1}


def _fake_ray(infos: list[dict], killed: list, sent: list | None = None):
    handles = iter([SimpleNamespace(info=SimpleNamespace(remote=lambda i=i: i)) for i in infos])

    def create(wcfg, _threads):
        (sent if sent is not None else []).append(wcfg)
        return next(handles)

    return SimpleNamespace(remote=lambda **_kw: (lambda _cls: SimpleNamespace(remote=create)),
                           nodes=lambda: [{"Alive": True, "Resources": {"CPU": float(len(infos))}}],
                           get=lambda refs: list(refs), kill=lambda a, **_k: killed.append(a),
                           wait=lambda refs, num_returns=1, timeout=None: (list(refs), []),
                           exceptions=SimpleNamespace(RayError=RuntimeError))


def test_actors_built_with_other_weights_are_refused_before_any_video(monkeypatch):
    """Another weights file at the same path on one node: the scan reported the first actor's
    weights_hash and wrote rows scored by both models into one output (different verdicts for
    the same video depending on the node; only a later --resume noticed)."""
    killed: list = []
    monkeypatch.setattr(dist, "_ray", lambda: _fake_ray([_info("aaa", "n1"), _info("bbb", "n2")], killed))
    monkeypatch.setattr(dist, "connect", lambda _address: False)
    with pytest.raises(dist.RayUnavailable, match="weights_hash") as e:
        dist.RayScanContext(ScanConfig(detector="test_tiny", ray="auto", ray_actors=2))
    assert "aaa" in str(e.value) and "bbb" in str(e.value)
    assert len(killed) == 2  # the actors are not left running


def test_relative_weights_reach_the_actors_as_an_absolute_path(monkeypatch, tmp_path):
    """--weights w.safetensors went to every actor as given, resolved against each worker's
    own working directory (another file, or none) while the inputs are sent absolute."""
    (tmp_path / "w.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    sent: list = []
    monkeypatch.setattr(dist, "_ray", lambda: _fake_ray([_info("aaa", "n1")], [], sent))
    monkeypatch.setattr(dist, "connect", lambda _address: False)
    dist.RayScanContext(ScanConfig(detector="test_tiny", ray="auto", ray_actors=1, weights="w.safetensors"))
    assert [w["weights"] for w in sent] == [str(tmp_path / "w.safetensors")]


def test_a_row_scored_by_other_weights_is_not_written_as_a_verdict(monkeypatch):
    """An actor Ray restarted on a node whose weights differ scored videos with that model:
    its verdicts went into the outputs under another weights_hash."""
    def get(ref):
        return {"path": ref, "verdict": "fake", "score": 0.9, "detector": "test_tiny",
                "weights_hash": "bbb", "threshold": 0.5, "error": None}, {}

    monkeypatch.setattr(dist, "_ray", lambda: SimpleNamespace(get=get))
    ctx = object.__new__(dist.RayScanContext)
    ctx.cfg, ctx.threshold, ctx.engine_info = ScanConfig(detector="test_tiny"), 0.5, {}
    ctx.detector = SimpleNamespace(name="test_tiny", weights_hash="aaa")
    ctx._load = [1]
    row = ctx._result("/v/a.mp4", 0, "/v/a.mp4", 0, time.perf_counter())
    assert row["verdict"] == "error" and row["score"] is None and row["weights_hash"] == "aaa"
    assert row["error"]["kind"] == "internal" and "bbb" in row["error"]["message"]


def test_a_pushgateway_that_trickles_its_answer_cannot_hold_the_scan_open():
    """The push timeout is a socket timeout: a gateway (or a proxy before it) that sends its
    answer a byte at a time never trips it, and stop() -- the end of every scan -- never
    returned, although README promises at most one push timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    done = threading.Event()

    def trickle(conn):
        with conn:
            conn.recv(65536)
            while not done.is_set():
                conn.sendall(b"H")
                time.sleep(0.2)

    def accept():
        while not done.is_set():
            try:
                threading.Thread(target=trickle, args=(srv.accept()[0],), daemon=True).start()
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    reg = CollectorRegistry()
    Counter("dfscan_push_test_trickle", "test counter", registry=reg)
    pusher = MetricsPusher(f"http://127.0.0.1:{srv.getsockname()[1]}", reg, interval_s=0, timeout_s=1)
    result: list = []
    t0 = time.monotonic()
    stopper = threading.Thread(target=lambda: result.append(pusher.stop()), daemon=True)
    stopper.start()
    stopper.join(6)
    elapsed, failures = time.monotonic() - t0, pusher.failures
    done.set()
    srv.close()
    assert result == [False], f"stop() still running after {elapsed:.1f} s"
    assert elapsed < 3.5 and failures == 1
