"""What a --ray scan ships to its actors (no Ray cluster: a stand-in records the calls)."""
from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from types import SimpleNamespace

import pytest

import scanner.distributed as dist
from scanner import metrics
from scanner.config import ScanConfig


def test_ray_actors_get_no_pushgateway_credentials(monkeypatch):
    """The worker config carried --metrics-push with its user:password@ to every actor
    (serialised into each actor's creation task on every node); workers never push."""
    sent = []

    class Handle:
        info = SimpleNamespace(remote=lambda: {"engine_info": {}, "node": "n", "detector": "d",
                                               "weights_hash": "h", "threshold": 0.5})

    class Remote:
        def remote(self, wcfg, _threads):
            sent.append(wcfg)
            return Handle()

    fake = SimpleNamespace(remote=lambda **_kw: (lambda _cls: Remote()),
                           nodes=lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}],
                           get=lambda refs: list(refs), wait=_all_ready, exceptions=SimpleNamespace(RayError=RuntimeError))
    monkeypatch.setattr(dist, "_ray", lambda: fake)
    monkeypatch.setattr(dist, "connect", lambda _address: False)
    cfg = ScanConfig(detector="test_tiny", ray="auto", ray_actors=2,
                     metrics_push="https://user:s3cret@gw.example:9091", out=["r.jsonl"], metrics_port=9108)
    dist.RayScanContext(cfg)
    assert len(sent) == 2
    for wcfg in sent:
        assert "s3cret" not in repr(wcfg)
        assert wcfg["metrics_push"] is None and wcfg["out"] is None and wcfg["metrics_port"] is None


def test_videos_left_when_no_actor_comes_back_get_rows_not_a_hang(monkeypatch):
    """The only actor died and Ray could not place it again (its node gone): the driver
    waited on the restart ping forever with videos left, no row for them, no end."""
    class Lost(Exception):
        pass

    scans, pings = [], []

    class Actor:
        scan = SimpleNamespace(remote=lambda path: scans.append(path) or ("scan", path))
        info = SimpleNamespace(options=lambda **_kw: SimpleNamespace(
            remote=lambda: pings.append(1) or ("ping", len(pings))))

    def wait(refs, num_returns=1, timeout=None):
        ready = [r for r in refs if r[0] == "scan"]
        if not ready and timeout is None:
            raise AssertionError("the driver would wait for the restart forever")
        return ready[:num_returns], [r for r in refs if r not in ready[:num_returns]]

    def get(ref):
        raise Lost("actor died")

    fake = SimpleNamespace(wait=wait, get=get, exceptions=SimpleNamespace(RayActorError=Lost, RayError=Lost))
    monkeypatch.setattr(dist, "_ray", lambda: fake)
    monkeypatch.setattr(dist, "RESTART_WAIT_S", 0.2)  # waited in steps of STOP_POLL_S
    ctx = object.__new__(dist.RayScanContext)
    ctx.cfg, ctx.actors = ScanConfig(detector="test_tiny", ray_max_attempts=2), [Actor()]
    ctx.stop = threading.Event()
    ctx.threshold, ctx.engine_info = 0.5, {}
    ctx.detector = SimpleNamespace(name="test_tiny", weights_hash="h")
    before = metrics.REGISTRY.get_sample_value("dfscan_video_duration_seconds_count")
    rows = list(ctx.rows(["a.mp4", "b.mp4"]))
    assert sorted(r["path"] for r in rows) == ["a.mp4", "b.mp4"]
    assert all(r["verdict"] == "error" and r["error"]["kind"] == "worker_lost" for r in rows)
    # timings as a local error row's (the driver's had none: no total in the JSONL, the rows
    # missing from dfscan_video_duration_seconds); a.mp4's runs from when it was sent
    assert [set(r["timings"]) for r in rows] == [{"total"}, {"total"}]
    assert rows[0]["timings"]["total"] >= 0.2 > rows[1]["timings"]["total"]
    assert metrics.REGISTRY.get_sample_value("dfscan_video_duration_seconds_count") == before + 2
    assert scans == [os.path.abspath("a.mp4")] and pings == [1]


def _ray_errors():
    """What a real Ray hands the driver, made as Ray makes it but without a cluster: an
    exception raised in an actor task comes as a RayTaskError (its ``cause`` the exception),
    one raised in an actor's ``__init__`` as an ActorDiedError holding that RayTaskError,
    pickled on the worker and unpickled on the driver (checked against a local Ray 2.60)."""
    exc = pytest.importorskip("ray.exceptions", reason="Ray not installed")
    from engines.errors import WeightsError

    try:
        raise WeightsError("/w/bad.safetensors: not a readable safetensors file\nmore detail")
    except WeightsError as e:
        task = exc.RayTaskError("_ScanWorker.__init__", "".join(traceback.format_exception(e)), e,
                                proctitle="ray::_ScanWorker.__init__", pid=1, ip="10.0.0.2")
    died = exc.RayError.from_bytes(exc.ActorDiedError.from_task_error(task).to_bytes())
    return exc, task.as_instanceof_cause(), died


def test_an_actor_that_cannot_start_is_one_line_naming_its_error(monkeypatch):
    """A worker whose pipeline failed to build (bad --weights) made the scan's error Ray's
    whole remote traceback, colour codes and all, instead of one line."""
    exc, _, died = _ray_errors()
    assert "\x1b[36m" in str(died) and "Traceback" not in str(died)  # what the scan printed once

    class Remote:
        def remote(self, wcfg, _threads):
            return SimpleNamespace(info=SimpleNamespace(remote=lambda: None))

    def get(refs):
        raise died

    fake = SimpleNamespace(remote=lambda **_kw: (lambda _cls: Remote()), kill=lambda *a, **k: None, wait=_all_ready,
                           nodes=lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}],
                           get=get, exceptions=exc)
    monkeypatch.setattr(dist, "_ray", lambda: fake)
    monkeypatch.setattr(dist, "connect", lambda _address: False)
    with pytest.raises(dist.RayUnavailable) as e:
        dist.RayScanContext(ScanConfig(detector="test_tiny", ray="auto", ray_actors=1))
    assert str(e.value) == ("Ray workers could not build the pipeline: "
                            "WeightsError: /w/bad.safetensors: not a readable safetensors file")


def test_remote_errors_are_one_line_from_what_ray_carries():
    exc, task_error, died = _ray_errors()
    said = "WeightsError: /w/bad.safetensors: not a readable safetensors file"
    assert dist._remote_error(task_error) == said  # a scan task's error (an 'internal' row)
    assert dist._remote_error(died) == said
    # Errors that carry no exception of the actor's: the first line of their text.
    assert dist._remote_error(exc.ActorDiedError()) == "The actor died unexpectedly before finishing this task."
    assert dist._remote_error(exc.WorkerCrashedError()).startswith("The worker died unexpectedly")
    assert dist._remote_error(RuntimeError("\x1b[36mray::x()\x1b[39m (pid=1)\n  detail")) == "ray::x() (pid=1)"
    assert dist._remote_error(RuntimeError()) == "RuntimeError"


def test_sigint_during_a_ray_scan_stops_it_gracefully_like_a_local_scan(monkeypatch):
    """A Ray context had no ``stop`` event, so dfscan scan's first SIGINT/SIGTERM raised
    KeyboardInterrupt wherever the driver was (in ray.wait, in a sink's write, after a row
    was counted and before it was written): no summary, no "N rows written" line. Now the
    first signal ends the scan after the rows already finished; the videos in flight or
    not sent get no row (not worker_lost rows: --resume scans them)."""
    from scanner.run import GracefulStop

    done = os.path.abspath("a.mp4")

    class Actor:
        scan = SimpleNamespace(remote=lambda path: ("scan", path))
        info = SimpleNamespace(remote=lambda: {"engine_info": {}, "node": "n", "detector": "d",
                                               "weights_hash": "h", "threshold": 0.5})

    def wait(refs, num_returns=1, timeout=None):
        if all(isinstance(r, dict) for r in refs):  # actors' infos: every actor has started
            return list(refs), []
        if ("scan", done) in refs:
            return [("scan", done)], []
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:  # b.mp4 never finishes
            time.sleep(0.01)
        return [], refs

    def get(ref):
        if isinstance(ref, list):
            return list(ref)
        return {"path": ref[1], "verdict": "real", "frames": 4, "faces": 1}, {}  # row, pipeline counts

    fake = SimpleNamespace(remote=lambda **_kw: (lambda _cls: SimpleNamespace(remote=lambda *_a: Actor())),
                           nodes=lambda: [{"Alive": True, "Resources": {"CPU": 1.0}}], wait=wait, get=get,
                           exceptions=SimpleNamespace(RayError=RuntimeError, RayActorError=RuntimeError))
    monkeypatch.setattr(dist, "_ray", lambda: fake)
    monkeypatch.setattr(dist, "connect", lambda _address: False)
    ctx = dist.RayScanContext(ScanConfig(detector="test_tiny", ray="auto", ray_actors=1))
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    with GracefulStop() as stop:
        stop.arm(ctx)
        timer.start()
        try:
            rows = list(ctx.rows(["a.mp4", "b.mp4", "c.mp4"]))
        except KeyboardInterrupt:
            pytest.fail("the first SIGINT of a Ray scan raised KeyboardInterrupt in the driver")
        finally:
            timer.cancel()
    assert stop.signum == signal.SIGINT
    assert [r["path"] for r in rows] == ["a.mp4"]


def test_a_file_the_worker_cannot_see_but_the_driver_can_says_so(monkeypatch, tmp_path):
    """Nodes that see different files (the inputs' mount missing on one node): the worker's
    row said 'file not found' for a file that exists, a wrong reason without a hint."""
    clip, gone = tmp_path / "here.mp4", tmp_path / "gone.mp4"
    clip.write_bytes(b"x")

    def get(ref):
        return {"path": ref, "verdict": "error", "error": {"kind": "not_found", "message": f"file not found: {ref}"}}, {}

    monkeypatch.setattr(dist, "_ray", lambda: SimpleNamespace(get=get))
    ctx = object.__new__(dist.RayScanContext)
    ctx._load = [1, 1]
    ctx.detector, ctx.threshold = SimpleNamespace(name="test_tiny", weights_hash="h"), 0.5
    here = ctx._result(str(clip), 0, str(clip), 0, 0.0)["error"]
    assert here["kind"] == "not_found" and "every node must see the inputs at the same paths" in here["message"]
    missing = ctx._result(str(gone), 1, str(gone), 0, 0.0)["error"]
    assert missing == {"kind": "not_found", "message": f"file not found: {gone}"}  # as in a local scan


def test_a_ray_scan_fills_the_drivers_build_info(monkeypatch):
    """dfscan_build_info (detector, engine, versions: the dashboard's build panel) was set by
    build_context, which a Ray scan runs only in its actors: the driver's registry, the one
    scraped and pushed, had no build info for Ray scans."""
    class Handle:
        info = SimpleNamespace(remote=lambda: {"engine_info": {}, "node": "n", "detector": "remote_det",
                                               "weights_hash": "h", "threshold": 0.5})

    fake = SimpleNamespace(remote=lambda **_kw: (lambda _cls: SimpleNamespace(remote=lambda *_a: Handle())),
                           nodes=lambda: [{"Alive": True, "Resources": {"CPU": 1.0}}],
                           get=lambda refs: list(refs), wait=_all_ready, exceptions=SimpleNamespace(RayError=RuntimeError))
    monkeypatch.setattr(dist, "_ray", lambda: fake)
    monkeypatch.setattr(dist, "connect", lambda _address: False)
    metrics.BUILD.info({"detector": "unset"})
    dist.RayScanContext(ScanConfig(detector="test_tiny", ray="auto", engine="eager", ray_actors=1))
    [sample] = [s for f in metrics.REGISTRY.collect() if f.name == "dfscan_build" for s in f.samples]
    assert sample.labels["detector"] == "remote_det" and sample.labels["engine"] == "eager", sample.labels
    assert sample.labels["version"] and sample.labels["torch"]


def _all_ready(refs, num_returns=1, timeout=None):
    """A fake ``ray.wait`` whose every task has finished (actors start at once)."""
    return list(refs), []
