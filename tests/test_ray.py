"""Distributed scans on a real two-node Ray cluster started on loopback.

The cluster is two ``ray start`` processes (a head and a second node, one CPU
each, separate temp dirs) joined with token authentication, exactly as on two
machines; the scan's driver is this test process. Skipped when Ray is absent.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# Token authentication, as a real cluster should run: Ray reads these once, before the
# first connection, so they are set before importing it (they concern only Ray).
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'ray>=2.9')")

from scanner import metrics  # noqa: E402
from scanner.cli import main  # noqa: E402
from scanner.config import ScanConfig  # noqa: E402
import scanner.distributed  # noqa: E402
from scanner.distributed import RayScanContext, RayUnavailable  # noqa: E402
from scanner.pipeline import build_context, scan_paths, scan_video  # noqa: E402
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [ROOT / "tests/data/d1.mp4", ROOT / "tests/data/d2.mp4", ROOT / "tests/data/d18.mp4",
         ROOT / "scanner/samples/d5.mp4", ROOT / "scanner/samples/d7.mp4"]
RAY = str(Path(sys.executable).parent / "ray")
NODE = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=200000000",
        "--disable-usage-stats"]


def _ray(args: list[str], env: dict) -> None:
    out = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster():
    """Address of a head node plus one worker node, torn down with ``ray stop``."""
    port = free_port()
    # Short temp dirs: Ray's unix socket paths must stay under ~107 characters.
    dirs = [tempfile.mkdtemp(prefix="dfr"), tempfile.mkdtemp(prefix="dfr")]
    env = dict(os.environ)  # carries the cluster token set above
    try:
        _ray(["start", "--head", f"--port={port}", "--include-dashboard=false",
              f"--temp-dir={dirs[0]}", *NODE], env)
        _ray(["start", f"--address=127.0.0.1:{port}", f"--temp-dir={dirs[1]}", *NODE], env)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def _comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "timings"}  # wall times differ run to run


@pytest.fixture(scope="module")
def local_rows():
    """Rows of a plain local scan of the clips, by path (one torch thread per video, as in
    each one-CPU actor: MTCNN's float sums are only bit-identical for equal thread counts)."""
    ctx = build_context(ScanConfig(workers=min(64, os.cpu_count() or 1)))  # -> 1 thread each
    assert torch.get_num_threads() == 1
    return {r["path"]: _comparable(r) for r in scan_paths(CLIPS, ctx=ctx)}


def _videos_timed() -> float:
    return metrics.REGISTRY.get_sample_value("dfscan_video_duration_seconds_count") or 0.0


def _local_rows(inputs: list[str], cfg: ScanConfig) -> dict:
    """Rows of a local scan of ``inputs`` by path, 'nan' inputs scored NaN as _PoisonWorker does."""
    ctx, rows = build_context(cfg), {}
    for p in inputs:
        with _nan_scores_for(p, ctx.detector):
            rows[p] = scan_video(p, ctx)
    return rows


def test_killed_worker_videos_are_rescanned_with_identical_rows(cluster, local_rows):
    inputs = [str(p) for p in CLIPS] * 2  # duplicates are separate inputs, one row each
    ctx = RayScanContext(ScanConfig(ray=cluster))
    try:
        assert ctx.workers == 2 and ctx.engine_info["nodes"] == 2  # one actor per node
        rows, killed = [], None
        for row in ctx.rows(inputs):
            rows.append(row)
            if killed is None:  # both actors are mid-video now (the next one is sent before a row is out)
                killed = ctx.actor_info[1]["pid"]
                os.kill(killed, signal.SIGKILL)
        assert killed not in ctx.pids()  # Ray restarted the killed actor
    finally:
        ctx.close()
    assert sorted(r["path"] for r in rows) == sorted(inputs)  # exactly one row per input
    for r in rows:
        assert r["verdict"] != "error", r["error"]
        assert _comparable(r) == local_rows[r["path"]]  # scores and details identical


def test_pids_wait_for_an_actor_that_is_restarting(cluster):
    # Asked right after a kill, a plain call to the restarting actor raised
    # ActorUnavailableError (its actors take no task retries): a CI flake of the test above.
    ctx = RayScanContext(ScanConfig(ray=cluster, ray_actors=1))
    try:
        before = ctx.pids()
        os.kill(before[0], signal.SIGKILL)
        after = ctx.pids()
    finally:
        ctx.close()
    assert len(after) == 1 and after != before


def test_videos_out_of_attempts_become_worker_lost_rows(cluster, local_rows):
    """ray_max_attempts=1: the video whose worker is killed is not retried, yet it still
    gets its row (an error of kind worker_lost) and every other input gets its own."""
    inputs = [str(p) for p in CLIPS]
    ctx = RayScanContext(ScanConfig(ray=cluster, ray_max_attempts=1, ray_actors=1))
    try:
        rows = []
        for row in ctx.rows(inputs):
            if not rows:  # the actor is scanning the second video now
                os.kill(ctx.actor_info[0]["pid"], signal.SIGKILL)
            rows.append(row)
    finally:
        ctx.close()
    assert sorted(r["path"] for r in rows) == sorted(inputs)
    lost = [r for r in rows if r["verdict"] == "error"]
    assert lost and all(r["error"]["kind"] == "worker_lost" for r in lost)
    assert all(r["threshold"] == rows[0]["threshold"] and r["frames_requested"] is None for r in lost)
    for r in rows:
        if r["verdict"] != "error":
            assert _comparable(r) == local_rows[r["path"]]


def test_cli_scan_on_ray_writes_sinks_once_and_resumes(cluster, local_rows, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    first = [str(p) for p in CLIPS[:2]]
    before = metrics.REGISTRY.get_sample_value("dfscan_videos_total", {"verdict": "real"}) or 0.0
    assert main(["scan", *first, "--out", str(out), "--ray", cluster, "--no-progress"]) == 0
    # rows scanned remotely are counted in the driver's metrics (the ones scraped/pushed)
    assert metrics.REGISTRY.get_sample_value("dfscan_videos_total", {"verdict": "real"}) == before + 2
    assert main(["scan", *map(str, CLIPS), "--out", str(out), "--resume", "--ray", cluster,
                 "--ray-actors", "1", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(map(str, CLIPS))
    for r in rows:
        assert r.pop("sampling") == {"frames": 32}  # added by dfscan scan to every row
        assert r.pop("aggregation") == {"aggregate": "frames", "frame_agg": "max", "video_agg": "mean"}  # as well
        assert r.pop("face_search")["det_max_side"] == 960  # and how faces were found
        want = local_rows[r["path"]]
        assert _comparable(r) == want, [k for k in want if want[k] != r.get(k)]
    assert "--resume: 2 input(s) already in" in capsys.readouterr().out


def test_unreachable_cluster_is_a_usage_error(capsys):
    port = free_port()  # nothing listens there
    code = main(["scan", str(CLIPS[0]), "--ray", f"127.0.0.1:{port}", "--no-progress"])
    assert code == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err


@contextlib.contextmanager
def _nan_scores_for(path: str, detector):
    """Inside, ``detector`` scores every crop NaN (as a diverging model would) when ``path``
    is a 'nan' input: a non_finite error row after frames were decoded and faces scored."""
    if not Path(path).name.startswith("nan"):
        yield
        return
    detector.p_fake = lambda out: torch.full((len(out),), float("nan"))
    try:
        yield
    finally:
        del detector.p_fake


class _PoisonWorker(scanner.distributed._ScanWorker):
    """An actor that dies on every attempt at a 'poison' input (as a decoder segfault
    or an out-of-memory kill would), raises on a 'raise' input and scores 'nan' ones NaN."""

    def scan(self, path: str) -> tuple[dict, dict]:
        if "poison" in path:
            with open(path + ".attempts", "a") as f:
                f.write("x")
            os._exit(1)
        if "raise" in path:
            raise MemoryError("cannot allocate 12 GiB for the frame buffer")
        with _nan_scores_for(path, self.ctx.detector):
            return super().scan(path)


def test_a_video_that_crashes_its_worker_costs_no_other_video_its_attempts(cluster, monkeypatch, tmp_path):
    """Ray re-runs every task a dead actor held and counts an attempt for each: the video
    queued behind one that kills the worker every time became worker_lost without having
    run. Only the crashing video may become an error row (and one raising in the actor
    says why).

    Its counters and timings are a local scan's: the driver counted frames, faces and crops
    from rows (none for a video that failed after decoding, no NaN scores at all), and its
    own error rows had no timings (no total, missing from the video duration histogram)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    monkeypatch.setattr(scanner.distributed, "_ScanWorker", _PoisonWorker)
    shutil.copy(CLIPS[0], tmp_path / "nan.mp4")
    inputs = [str(tmp_path / "poison.mp4"), str(CLIPS[0]), str(tmp_path / "raise.mp4"), str(CLIPS[1]),
              str(tmp_path / "nan.mp4")]
    ctx = RayScanContext(ScanConfig(ray=cluster, ray_actors=1, ray_max_attempts=1,
                                    detector="test_tiny", frames=4))
    before, videos = metrics.pipeline_counts(), _videos_timed()
    try:
        rows = {r["path"]: r for r in ctx.rows(inputs)}
    finally:
        ctx.close()
    counts, videos = metrics.counts_since(before), _videos_timed() - videos
    before = metrics.pipeline_counts()
    local = _local_rows(inputs, ScanConfig(detector="test_tiny", frames=4, workers=min(64, os.cpu_count() or 1)))
    assert counts == metrics.counts_since(before) and counts["dfscan_nonfinite_scores"] > 0, counts
    assert rows[inputs[4]]["error"]["kind"] == local[inputs[4]]["error"]["kind"] == "non_finite"
    assert set(rows[inputs[0]]["timings"]) == set(local[inputs[0]]["timings"])  # a not_found row here
    assert videos == len(inputs)
    assert sorted(rows) == sorted(inputs)
    assert rows[inputs[0]]["error"]["kind"] == "worker_lost"
    assert (tmp_path / "poison.mp4.attempts").read_text() == "x"  # tried ray_max_attempts times
    assert rows[inputs[1]]["verdict"] != "error" and rows[inputs[3]]["verdict"] != "error", [r["error"] for r in rows.values()]
    err = rows[inputs[2]]["error"]
    assert err["kind"] == "internal" and "MemoryError: cannot allocate 12 GiB" in err["message"], err


@pytest.mark.parametrize("kw, match", [
    ({"ray_gpus_per_actor": 1}, r"no node of the Ray cluster has 1 CPU\(s\) and 1 GPU\(s\).*0 GPU"),
    ({"ray_cpus_per_actor": 2}, r"no node of the Ray cluster has 2 CPU\(s\).*cluster: 2 CPU"),
])
def test_actors_no_node_can_hold_are_an_error_not_a_hang(cluster, kw, match):
    """Ray waits forever for an actor no node can place: the scan hung before its first video."""
    with pytest.raises(RayUnavailable, match=match):
        RayScanContext(ScanConfig(ray=cluster, detector="test_tiny", **kw))
    assert not ray.is_initialized()  # the connection is closed again


def test_more_actors_than_the_cluster_holds_start_what_fits(cluster):
    ctx = RayScanContext(ScanConfig(ray=cluster, ray_actors=5, detector="test_tiny", frames=4))
    try:
        assert ctx.workers == 2  # two one-CPU nodes (five actors waited forever for CPUs)
        assert [r["verdict"] for r in ctx.rows([str(CLIPS[0])])] != ["error"]
    finally:
        ctx.close()
