"""Scans spread over a Ray cluster (``dfscan scan --ray ADDRESS``).

Each Ray actor builds the pipeline once (:func:`~scanner.pipeline.build_context`:
detector, engine, face detector) and scans one video at a time; rows stream back
to the driver, which alone writes the sinks, so ``--resume`` and "one row per
input" hold exactly as in a local scan. Videos are handed out a few at a time
(at most ``RAY_IN_FLIGHT`` per actor), so a slow node takes fewer.

A worker that dies mid-scan (killed, out of memory, node lost) is restarted by
Ray (``max_restarts``) and Ray resubmits the videos it held to the restarted
actor (``max_task_retries``); a video is attempted at most ``ray_max_attempts``
times (a file that crashes the decoder every time must not loop forever) and
then becomes an ``error`` row of kind ``worker_lost``. The driver holds exactly
one task per video and writes its row once, so no row is duplicated or lost.

Workers open the *same paths* as the driver: every node must see the inputs at
the same location (NFS, a cluster file system, or a bucket mounted with a FUSE
driver). The driver sends absolute paths; rows carry the path as given.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Iterator

from engines.errors import DfscanError

from . import metrics
from .config import ScanConfig

log = logging.getLogger("dfscan")
RAY_IN_FLIGHT = 2  # videos queued per actor: one scanning, one ready (no idle round trip)
# Fields that make no sense inside a worker (the driver owns outputs, metrics and Ray).
# metrics_push may hold user:password@: never shipped to every actor on every node.
DRIVER_ONLY = {"out": None, "resume": False, "metrics_port": None, "metrics_push": None,
               "progress": False, "ray": None, "workers": 1}


class RayUnavailable(DfscanError):
    """``--ray`` was given but Ray is missing or the cluster cannot be reached."""


def _ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable("--ray needs Ray: pip install 'ray>=2.9'") from e
    return ray


class _ScanWorker:
    """Body of the Ray actor: one pipeline, videos scanned one after another."""

    def __init__(self, cfg: dict, threads: int):
        from .pipeline import build_context

        # build_context gives torch (and ONNX Runtime) cpu_count // workers threads; an
        # actor owns only its CPUs, so "workers" is chosen to leave it ``threads`` of them.
        cfg["workers"] = max(1, min(64, (os.cpu_count() or 1) // max(1, threads)))
        self.ctx = build_context(ScanConfig(**cfg))

    def info(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "engine_info": self.ctx.engine_info,
                "detector": self.ctx.detector.name, "weights_hash": self.ctx.detector.weights_hash,
                "threshold": self.ctx.threshold}

    def scan(self, path: str) -> dict:
        from .pipeline import scan_video

        return scan_video(path, self.ctx)


def connect(address: str, **init_kwargs) -> bool:
    """Attach to (or start) a Ray cluster; returns True when this call started it.

    ``local`` starts a private in-process cluster, ``auto`` joins the cluster named by
    ``RAY_ADDRESS`` (or the one started on this host with ``ray start``), anything else
    is a cluster address (``host:port`` or ``ray://host:10001``).
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    _check_reachable(address)
    term = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False, **init_kwargs)
    except Exception as e:  # noqa: BLE001 - a busy host's startup timeout is a bare Exception
        raise RayUnavailable(f"cannot reach the Ray cluster {address!r}: {e}") from e
    finally:
        # ray.init installs sys.exit(15) for SIGTERM: while the actors build their
        # pipelines (minutes with real models) SIGTERM must still give exit 143.
        if term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, term)
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster {address!r}: {e}") from e


class RayScanContext:
    """Driver side of a Ray scan: the actors, their engine description, :meth:`rows`.

    Quacks like :class:`~scanner.pipeline.ScanContext` where ``dfscan scan`` reports
    on it (``cfg``, ``detector.name/weights_hash``, ``threshold``, ``engine_info``,
    ``workers``).
    """

    def __init__(self, cfg: ScanConfig):
        ray = _ray()
        self.cfg = cfg
        self._started = connect(cfg.ray)
        cpus, gpus = cfg.ray_cpus_per_actor, cfg.ray_gpus_per_actor
        n = cfg.ray_actors or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        if gpus:
            n = min(n, max(1, int(ray.cluster_resources().get("GPU", 0) // gpus)))
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=-1,
                            max_task_retries=cfg.ray_max_attempts - 1)(_ScanWorker)
        wcfg = cfg.model_dump(exclude={k for k in cfg.model_dump() if k.startswith("ray")})
        wcfg.update({k: v for k, v in DRIVER_ONLY.items() if k in wcfg})
        self.actors = [remote.remote(wcfg, max(1, int(cpus))) for _ in range(n)]
        try:
            self.actor_info = ray.get([a.info.remote() for a in self.actors])
        except ray.exceptions.RayError as e:
            self.close()
            raise RayUnavailable(f"Ray workers could not build the pipeline: {e}") from e
        first = self.actor_info[0]
        self.engine_info = dict(first["engine_info"], actors=n,
                                nodes=len({i["node"] for i in self.actor_info}))
        self.detector = SimpleNamespace(name=first["detector"], weights_hash=first["weights_hash"])
        self.threshold = first["threshold"]
        self.workers = n

    def pids(self) -> list[int]:
        """Current process id of every actor (changes when Ray restarts one)."""
        ray = _ray()
        return [i["pid"] for i in ray.get([a.info.remote() for a in self.actors])]

    def rows(self, paths: Iterable[str | Path]) -> Iterator[dict]:
        """One row per path, in completion order; lost workers' videos are rescanned.

        ``paths`` is consumed lazily: at most ``RAY_IN_FLIGHT`` videos per actor are out.
        """
        ray = _ray()
        todo = iter(paths)
        load = [0] * len(self.actors)
        pending: dict = {}  # ObjectRef -> (actor index, path as given)
        while True:
            self._submit(todo, load, pending)
            if not pending:
                return
            ref = ray.wait(list(pending), num_returns=1)[0][0]
            k, path = pending.pop(ref)
            load[k] -= 1
            row = self._result(ref, path)
            _record(row)
            yield row

    def _submit(self, todo: Iterator, load: list[int], pending: dict) -> None:
        while min(load) < RAY_IN_FLIGHT:
            path = next(todo, None)
            if path is None:
                return
            k = load.index(min(load))  # the least busy actor
            pending[self.actors[k].scan.remote(os.path.abspath(path))] = (k, str(path))
            load[k] += 1

    def _result(self, ref, path: str) -> dict:
        ray = _ray()
        try:
            row = ray.get(ref)
        except ray.exceptions.RayActorError as e:  # Ray's retries on restarted actors ran out
            return self._error_row(path, "worker_lost", f"the Ray worker died on each of "
                                   f"{self.cfg.ray_max_attempts} attempts ({type(e).__name__})")
        except ray.exceptions.RayError as e:  # scan_video returns error rows; this is a bug
            return self._error_row(path, "internal", f"{type(e).__name__}: {e}".splitlines()[0])
        row["path"] = path  # as given, like a local scan's rows (the worker got it absolute)
        return row

    def _error_row(self, path: str, kind: str, message: str) -> dict:
        from .pipeline import _base_row  # the one error-row layout (fields as local scans)

        row = _base_row(Path(path), self)
        row.update(path=path, error={"kind": kind, "message": message}, timings={})
        return row

    def close(self) -> None:
        ray = _ray()
        for a in getattr(self, "actors", []):
            ray.kill(a, no_restart=True)
        self.actors = []
        if self._started:
            ray.shutdown()


def _record(row: dict) -> None:
    """Count a row in the driver's metrics (the worker's own counters are not scraped)."""
    metrics.record_row(row)
    metrics.FRAMES_DECODED.inc(row.get("frames") or 0)
    metrics.FACES_DETECTED.inc(row.get("faces") or 0)
    metrics.CROPS_INFERRED.inc(row.get("faces") or 0)


def open_context(cfg: ScanConfig):
    """The scan context for ``cfg``: a Ray one with ``cfg.ray``, else a local one."""
    if cfg.ray:
        return RayScanContext(cfg)
    from .pipeline import build_context

    return build_context(cfg)


def scan_rows(paths: Iterable[str | Path], ctx) -> Iterator[dict]:
    """Rows of ``paths`` on ``ctx`` (local threads or Ray actors)."""
    if isinstance(ctx, RayScanContext):
        try:
            yield from ctx.rows(paths)
        finally:
            ctx.close()
        return
    from .pipeline import scan_paths

    yield from scan_paths(paths, ctx=ctx)
