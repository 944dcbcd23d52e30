"""Scale-out audit 2: a real local Ray (``ray.init(num_cpus=2)``, two one-CPU actors) and
the bundled clips with ``test_tiny``: what the cluster records of the driver, rows that
finished before a stop, why the videos left after the last actor is gone get no verdict."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# As tests/test_ray.py: Ray reads these once, before its first connection (they concern only Ray).
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'ray>=2.9')")

import scanner.distributed  # noqa: E402
from scanner.config import ScanConfig  # noqa: E402
from scanner.distributed import RayScanContext  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [str(ROOT / "tests/data/d1.mp4"), str(ROOT / "tests/data/d2.mp4"), str(ROOT / "tests/data/d18.mp4")]
TINY = {"detector": "test_tiny", "frames": 4}


def test_the_clusters_job_table_gets_no_pushgateway_password():
    """Ray records the driver's whole command line as its job's entrypoint (``ray list jobs``,
    the dashboard's job page: readable by every user of the cluster), so
    ``--metrics-push https://user:pass@gw`` put the password there, which README says is
    never printed. It is recorded with the credentials masked."""
    code = ("import ray, ray._private.state as s\n"
            "from scanner.distributed import connect\n"
            "connect('local', num_cpus=1, include_dashboard=False)\n"
            "print('ENTRYPOINTS', [j['Entrypoint'] for j in s.jobs()])\n"
            "ray.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code, "scan", "v/", "--ray", "local",
                          "--metrics-push", "https://scan:s3cr3t-pw@gw.example:9091"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ENTRYPOINTS")), None)
    assert line is not None, out.stdout[-2000:] + out.stderr[-2000:]
    assert "--metrics-push https://***@gw.example:9091" in line  # still says what ran
    assert "s3cr3t-pw" not in line and "scan:" not in line.split("--metrics-push")[1]


@pytest.fixture(scope="module")
def local_ray():
    """A private two-CPU Ray for this module (RayScanContext joins it: ray is initialised)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_rows_finished_before_a_stop_are_still_written(local_ray):
    """A local scan yields the rows of videos that finished before the first Ctrl-C/SIGTERM
    (README: "writes the rows already finished"); a Ray scan dropped every row that had come
    back while the driver was writing another one: finished videos without a row, scanned
    again by --resume. Only videos still running may go without one."""
    ctx = RayScanContext(ScanConfig(ray="auto", **TINY))
    rows = []
    try:
        assert ctx.workers == 2
        for row in ctx.rows(CLIPS):
            rows.append(row)
            if len(rows) == 1:  # the other two videos (one per actor) finish while this row is written
                ray.wait(list(ctx._pending), num_returns=len(ctx._pending), timeout=120)
                ctx.stop.set()  # what dfscan scan's first SIGINT/SIGTERM does
    finally:
        ctx.close()
    assert sorted(r["path"] for r in rows) == sorted(CLIPS)
    assert all(r["verdict"] != "error" for r in rows), [r["error"] for r in rows]


class _NoRestartWorker(scanner.distributed._ScanWorker):
    """An actor that dies on a 'poison' video (a decoder crash, an out-of-memory kill) and then
    cannot build its pipeline again: its node lost the weights file meanwhile."""

    marker = ""  # set per test: the class goes to the workers by value, this with it

    def __init__(self, cfg: dict, threads: int):
        from engines.errors import WeightsError

        if os.path.exists(self.marker):
            raise WeightsError("/w/model.safetensors: no such file on this node")
        super().__init__(cfg, threads)

    def scan(self, path: str) -> tuple[dict, dict]:
        if "poison" in path:
            Path(self.marker).touch()
            os._exit(1)
        return super().scan(path)


def test_videos_left_without_an_actor_say_why_the_last_one_was_lost(local_ray, monkeypatch, tmp_path, caplog):
    """The only actor died and Ray's restart failed (its pipeline could not be built again):
    the driver dropped that error without a word, and every video left became a worker_lost
    row saying only "no Ray scan actor is left to scan it". The rows and the log now name it."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    monkeypatch.setattr(scanner.distributed, "_ScanWorker", _NoRestartWorker)
    monkeypatch.setattr(_NoRestartWorker, "marker", str(tmp_path / "crashed"))
    poison = tmp_path / "poison.mp4"
    shutil.copy(CLIPS[0], poison)
    ctx = RayScanContext(ScanConfig(ray="auto", ray_actors=1, **TINY))
    try:
        rows = {r["path"]: r for r in ctx.rows([str(poison), *CLIPS[:2]])}
    finally:
        ctx.close()
    assert sorted(rows) == sorted([str(poison), *CLIPS[:2]])
    for r in rows.values():
        assert r["error"]["kind"] == "worker_lost", r["error"]
        assert "WeightsError: /w/model.safetensors: no such file on this node" in r["error"]["message"], r["error"]
    assert "could not start again: WeightsError" in caplog.text


class _Hold:
    """Another job's actor holding one of the cluster's CPUs."""

    def ready(self) -> bool:
        return True


def _videos(first: list[str], then, rest: list[str]):
    """``first``, then ``then()`` (before the next input is taken), then ``rest``."""
    yield from first
    then()
    yield from rest


def test_a_scan_starts_with_the_actors_the_cluster_can_place_now(local_ray, monkeypatch, caplog):
    """The actor count comes from the nodes' total CPUs; on a cluster another job shares,
    the driver waited for every actor to start, and hung (before its first video) until that
    job ended. It now scans with the actors placed within the grace time; the others join
    when Ray places them."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    monkeypatch.setattr(scanner.distributed, "START_GRACE_S", 3.0)
    hold = ray.remote(num_cpus=1)(_Hold).remote()
    ray.get(hold.ready.remote())
    ctx = RayScanContext(ScanConfig(ray="auto", **TINY))
    late = next(iter(ctx._starting), None)
    try:
        assert ctx.workers == 2 and len(ctx.actor_info) == 1 and late is not None
        assert "1 of 2 scan actors started" in caplog.text

        def free_the_cpu():  # the other job ends; Ray places the waiting actor, which builds
            ray.kill(hold)
            ray.wait([late], timeout=180)

        paths = _videos(CLIPS, free_the_cpu, CLIPS * 2)
        rows = list(ctx.rows(paths))
    finally:
        ctx.close()
        ray.kill(hold)
    assert len(rows) == 9 and all(r["verdict"] != "error" for r in rows), [r.get("error") for r in rows]
    assert min(ctx.videos_sent) >= 1, ctx.videos_sent  # the late actor took videos too
