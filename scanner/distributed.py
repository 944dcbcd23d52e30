"""Scans spread over a Ray cluster (``dfscan scan --ray ADDRESS``).

Each Ray actor builds the pipeline once (:func:`~scanner.pipeline.build_context`:
detector, engine, face detector) and scans one video at a time; rows stream back
to the driver, which alone writes the sinks, so ``--resume`` and "one row per
input" hold exactly as in a local scan. Videos are handed out one at a time per
actor (``RAY_IN_FLIGHT``), so a slow node takes fewer.

A worker that dies mid-scan (killed, out of memory, node lost) is restarted by
Ray (``max_restarts``) and the driver sends the video it held again once the
restarted actor answers; a video is attempted at most ``ray_max_attempts``
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
import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Iterator

from . import metrics
from .config import ScanConfig
from .cpus import usable_cpus
from .ray_cluster import RayUnavailable, _actor_count, _free, _ray, _remote_error, connect  # noqa: F401 (re-exported)

log = logging.getLogger("dfscan")
# Videos held per actor: one. Every video an actor holds fails with it when it dies; with
# two held, the one queued behind a video that crashes the worker each time used up its
# attempts without ever running (an innocent worker_lost row). With one, the failed video
# is the one that was running. The next is sent as soon as a row arrives, before it is written.
RAY_IN_FLIGHT = 1
# How long the scan waits when every actor is being restarted (none holds a video): an
# actor whose node is gone for good is never placed again, and the scan hung forever.
RESTART_WAIT_S = 600.0
# ray.wait in steps this long: SIGINT/SIGTERM only set ``stop`` (finished rows are still
# written, as in a local scan), and one wait without a limit would never see it.
STOP_POLL_S = 0.5
# Once one actor has started, how long the others are waited for (at least; or as long as the
# first took) before the scan begins without them: Ray places an actor only where its CPUs are
# free, and on a cluster shared with other jobs waiting for all of them hung the scan until
# those jobs ended. Late ones join when Ray places them (rows()).
START_GRACE_S = 30.0
# Fields that make no sense inside a worker (the driver owns outputs, metrics and Ray).
# metrics_push may hold user:password@: never shipped to every actor on every node.
DRIVER_ONLY = {"out": None, "resume": False, "metrics_port": None, "metrics_push": None,
               "progress": False, "ray": None, "workers": 1}


class _ScanWorker:
    """Body of the Ray actor: one pipeline, videos scanned one after another."""

    def __init__(self, cfg: dict, threads: int):
        from .pipeline import build_context

        # build_context gives torch (and ONNX Runtime) cpu_count // workers threads; an
        # actor owns only its CPUs, so "workers" is chosen to leave it ``threads`` of them.
        cfg["workers"] = max(1, min(64, usable_cpus() // max(1, threads)))
        self.ctx = build_context(ScanConfig(**cfg))

    def info(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "engine_info": self.ctx.engine_info,
                "detector": self.ctx.detector.name, "weights_hash": self.ctx.detector.weights_hash,
                "threshold": self.ctx.threshold}

    def scan(self, path: str) -> tuple[dict, dict]:
        """The row of ``path`` and what scanning it added to the pipeline's counters: this
        process's registry is not scraped, the driver adds them to its own."""
        from .pipeline import scan_video

        before = metrics.pipeline_counts()
        row = scan_video(path, self.ctx)
        return row, metrics.counts_since(before)


class RayScanContext:
    """Driver side of a Ray scan: the actors, their engine description, :meth:`rows`.

    Quacks like :class:`~scanner.pipeline.ScanContext` where ``dfscan scan`` reports
    on it (``cfg``, ``detector.name/weights_hash``, ``threshold``, ``engine_info``,
    ``workers``).
    """

    def __init__(self, cfg: ScanConfig):
        ray = _ray()
        self.cfg = cfg
        self.stop = threading.Event()  # set by dfscan scan's first SIGINT/SIGTERM
        self._started = connect(cfg.ray)
        try:
            n = _actor_count(ray, cfg)
        except RayUnavailable:
            self.close()  # stops the private cluster connect() started
            raise
        cpus, gpus = cfg.ray_cpus_per_actor, cfg.ray_gpus_per_actor
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=-1,
                            max_task_retries=0)(_ScanWorker)  # attempts: see _lost
        wcfg = cfg.model_dump(exclude={k for k in cfg.model_dump() if k.startswith("ray")})
        wcfg.update({k: v for k, v in DRIVER_ONLY.items() if k in wcfg})
        if wcfg.get("weights") and os.path.exists(wcfg["weights"]):  # absolute, as the inputs: a
            wcfg["weights"] = os.path.abspath(wcfg["weights"])  # worker's cwd is not the driver's
        self.actors = [remote.remote(wcfg, max(1, int(cpus))) for _ in range(n)]
        try:
            self.actor_info = self._start_actors(ray)
        except ray.exceptions.RayError as e:
            self.close()
            raise RayUnavailable(f"Ray workers could not build the pipeline: {_remote_error(e)}") from e
        except BaseException:  # interrupted while waiting for the cluster: no actor left behind
            self.close()
            raise
        try:
            _same_model(self.actor_info)
        except RayUnavailable:
            self.close()
            raise
        first = self.actor_info[0]
        self.engine_info = dict(first["engine_info"], actors=n,
                                nodes=len({i["node"] for i in self.actor_info}))
        self.detector = SimpleNamespace(name=first["detector"], weights_hash=first["weights_hash"])
        self.threshold = first["threshold"]
        self.workers = n
        # Locally build_context fills dfscan_build_info; here the actors did, in registries
        # nobody scrapes: the driver's (scraped, pushed) had none and the dashboard's panel was empty.
        metrics.set_build_info(first["detector"], self.engine_info.get("backend", cfg.engine), cfg.device)

    def _start_actors(self, ray) -> list[dict]:
        """Infos of the actors that started (waiting, stop-aware, for the first); the
        others' first info calls go to ``_starting`` and are awaited as pings by rows()."""
        refs = [a.info.remote() for a in self.actors]
        t0, warned, ready = time.monotonic(), False, []
        while not ready:
            ready = ray.wait(refs, num_returns=1, timeout=STOP_POLL_S)[0]
            if not ready and not warned and time.monotonic() - t0 > START_GRACE_S:
                warned = True
                log.warning("Ray scan: no scan actor has started after %.0f s; the cluster's free "
                            "resources now: %s (other jobs may hold them); waiting", START_GRACE_S,
                            _free(ray))
        grace = max(START_GRACE_S, time.monotonic() - t0)
        ready = ray.wait(refs, num_returns=len(refs), timeout=grace)[0]
        late = [k for k, r in enumerate(refs) if not any(r is x for x in ready)]  # wait returns the refs given
        self._starting = {refs[k]: k for k in late}
        if late:
            log.warning("Ray scan: %d of %d scan actors started within %.0f s; scanning with those, "
                        "the others join when Ray places them (free now: %s)",
                        len(ready), len(refs), grace, _free(ray))
        return ray.get([r for k, r in enumerate(refs) if k not in late])

    def pids(self) -> list[int]:
        """Current process id of every actor (changes when Ray restarts one). An actor still
        restarting is waited for: its actors take no task retries (see _lost), so a plain call
        failed with ActorUnavailableError when asked right after a restart (a CI flake)."""
        ray = _ray()
        calls = [a.info.options(max_task_retries=-1).remote() for a in self.actors]
        return [i["pid"] for i in ray.get(calls)]

    def rows(self, paths: Iterable[str | Path]) -> Iterator[dict]:
        """One row per path, in completion order; lost workers' videos are rescanned.

        ``paths`` is consumed lazily: at most ``RAY_IN_FLIGHT`` videos per actor are out.
        """
        # retry: (path, attempts so far, when first sent or None); the time makes error rows'
        # timings total, as a local scan's
        self._todo, self._retry = iter(paths), deque()
        self._gone = ""  # why the last actor was lost for good, for the rows left without one
        self._load = [0] * len(self.actors)
        self._pending = {}  # ObjectRef -> (actor index, path as given or None: a ping, attempts, sent)
        self.videos_sent = [0] * len(self.actors)  # per actor (logged at the end: how the load spread)
        for ref, k in getattr(self, "_starting", {}).items():  # not placed yet: their first info is a ping
            self._pending[ref], self._load[k] = (k, None, 0, None), RAY_IN_FLIGHT
        self._starting = {}
        self._submit()
        # Pings of an actor Ray cannot place again (its node gone) must not hold the scan open.
        while self._pending and (self._scanning() or self._more()) and not self.stop.is_set():
            ref = self._next_done(None if self._scanning() else RESTART_WAIT_S)  # only pings out
            if ref is None:
                if not self.stop.is_set():
                    self._gone = f"no actor came back within {RESTART_WAIT_S:.0f} s of its restart"
                    log.error("Ray scan: %s; the videos left get worker_lost rows", self._gone)
                break
            row = self._result(ref, *self._pending.pop(ref))
            self._submit()  # the freed actor's next video goes out before this row is written
            if row is not None:
                metrics.record_row(row)
                yield row
        if self.stop.is_set():  # interrupted: videos still running are abandoned (no row), as locally
            yield from self._finished()
            return
        for path, _, sent in [*self._retry, *((str(p), 0, None) for p in self._todo)]:  # no actor left
            row = self._error_row(path, "worker_lost", "no Ray scan actor is left to scan it"
                                   + (f" ({self._gone})" if self._gone else ""), sent)
            metrics.record_row(row)
            yield row

    def _finished(self) -> Iterator[dict]:
        """After a stop, the rows of videos that finished but were not received yet, as a local
        scan yields its finished videos' rows: they were dropped (rows that came back while
        the driver wrote another one), and --resume scanned those videos again."""
        ready = _ray().wait(list(self._pending), num_returns=len(self._pending), timeout=0)[0] \
            if self._pending else []
        for ref in ready:
            if self._pending[ref][1] is None:  # a restarted actor's answer: no video
                continue
            row = self._result(ref, *self._pending.pop(ref))
            if row is not None:  # None: its worker died, the video goes without a row
                metrics.record_row(row)
                yield row

    def _next_done(self, wait_s: float | None):
        """The next finished task; None after ``wait_s`` seconds (None: no limit) or on ``stop``."""
        ray = _ray()
        end = None if wait_s is None else time.monotonic() + wait_s
        while not self.stop.is_set():
            step = STOP_POLL_S if end is None else max(0.0, min(STOP_POLL_S, end - time.monotonic()))
            ready = ray.wait(list(self._pending), num_returns=1, timeout=step)[0]
            if ready:
                return ready[0]
            if end is not None and time.monotonic() >= end:
                return None
        return None

    def _scanning(self) -> bool:
        return any(path is not None for _, path, _, _ in self._pending.values())

    def _more(self) -> bool:
        """Whether a video is still to be sent (looks ahead one input into the retry queue)."""
        if not self._retry:
            path = next(self._todo, None)
            if path is not None:
                self._retry.append((str(path), 0, None))
        return bool(self._retry)

    def _submit(self) -> None:
        while min(self._load) < RAY_IN_FLIGHT and self._more():
            path, attempts, sent = self._retry.popleft()
            k = self._load.index(min(self._load))  # the least busy actor
            ref = self.actors[k].scan.remote(os.path.abspath(path))
            self._pending[ref] = (k, path, attempts, time.perf_counter() if sent is None else sent)
            self._load[k] += 1
            self.videos_sent[k] += 1

    def _result(self, ref, k: int, path: str | None, attempts: int, sent: float | None) -> dict | None:
        """The row of a finished task (its pipeline counts added to the driver's metrics);
        None for a ping or a video sent out again."""
        ray = _ray()
        if path is None:  # the restarted actor answers: it takes videos again
            try:
                odd = self._other_model(ray.get(ref))
                lost = odd and f"a restarted actor uses another model ({odd})"  # its rows would be refused
            except ray.exceptions.RayError as e:  # dead for good (its restart failed): stays idle
                lost = f"a lost actor could not start again: {_remote_error(e)}"
            if lost:  # kept: the videos left when no actor is, get rows that say why
                self._gone = lost
                log.error("Ray scan: %s; it gets no more videos", lost)
            else:
                self._load[k] = 0
            return None
        self._load[k] -= 1
        try:
            row, counts = ray.get(ref)
        except ray.exceptions.RayActorError as e:  # the actor died while holding this video
            return self._lost(k, path, attempts + 1, sent, e)
        except ray.exceptions.RayError as e:  # scan_video returns error rows; this is a bug
            return self._error_row(path, "internal", _remote_error(e), sent)
        metrics.add_counts(counts)
        row["path"] = path  # as given, like a local scan's rows (the worker got it absolute)
        _worker_view(row)
        return self._own_model(row)

    def _other_model(self, got: dict) -> str:
        """How the model of ``got`` (an actor's info or row) differs from this scan's; ''."""
        want = dict(zip(MODEL_FIELDS, (self.detector.name, self.detector.weights_hash, self.threshold)))
        return ", ".join(f"{k} {got[k]}, not {v}" for k, v in want.items() if k in got and got[k] != v)

    def _own_model(self, row: dict) -> dict:
        """``row``, or an ``internal`` error row when another model scored it (an actor Ray
        restarted on a node whose weights file differs): its verdict, under another
        weights_hash, went into this scan's outputs as if this scan's model gave it."""
        odd = self._other_model(row)
        if not odd:
            return row
        out = self._error_row(row["path"], "internal", f"scored by a Ray worker with another model "
                              f"({odd}): every node needs the same weights files", None)
        out["timings"] = row.get("timings") or out["timings"]
        return out

    def _lost(self, k: int, path: str, attempts: int, sent: float, e: Exception) -> dict | None:
        """Retry ``path`` unless out of attempts; ``k`` gets no video until it answers again.

        Ray's own task retries counted an attempt for every video a dead actor held, and a
        video sent while the actor was restarting failed at once: videos that never ran
        became worker_lost rows. Attempts are counted here, for the video that was running.
        """
        self._load[k] = RAY_IN_FLIGHT
        ping = self.actors[k].info.options(max_task_retries=-1).remote()  # waits for the restart
        self._pending[ping] = (k, None, 0, None)
        if attempts < self.cfg.ray_max_attempts:
            self._retry.append((path, attempts, sent))
            return None
        return self._error_row(path, "worker_lost", f"the Ray worker died on each of {attempts} "
                               f"attempts ({type(e).__name__})", sent)

    def _error_row(self, path: str, kind: str, message: str, sent: float | None) -> dict:
        """A row for a video no worker returned one for. Its timings hold the total from when
        it was first sent (never sent: zero), as a local error row's: with none it had no
        total in the outputs and was missing from dfscan_video_duration_seconds."""
        from .rows import error_row  # the one error-row layout (fields as local scans)

        return error_row(path, self, kind, message, time.perf_counter() if sent is None else sent)

    def close(self) -> None:
        ray = _ray()
        if any(getattr(self, "videos_sent", [])):
            log.info("Ray scan: videos sent per actor: %s", self.videos_sent)
        for a in getattr(self, "actors", []):
            ray.kill(a, no_restart=True)
        self.actors = []
        if self._started:
            ray.shutdown()


# What an actor's info and every row say of the model that judged: all must be the scan's.
MODEL_FIELDS = ("detector", "weights_hash", "threshold")


def _same_model(infos: list[dict]) -> None:
    """Refuse actors that built different models (another weights file at the same path on
    some node): the scan reported the first actor's weights_hash and one output mixed the
    verdicts of both models, the same video judged differently by node."""
    first = infos[0]
    for info in infos[1:]:
        for k in MODEL_FIELDS:
            if info[k] != first[k]:
                raise RayUnavailable(f"Ray scan actors built different models: {k} {first[k]} on node "
                                     f"{first['node']}, {info[k]} on node {info['node']}; every node "
                                     "needs the same dfscan and weights files (one image, or the "
                                     "weights on the shared volume)")


def _worker_view(row: dict) -> None:
    """Say so when a worker could not find or read a file this driver reads: a node without
    the inputs' mount gave 'file not found' rows for files that exist, with no hint why."""
    err = row.get("error") or {}
    if err.get("kind") in ("not_found", "permission") and os.access(row["path"], os.R_OK):
        err["message"] += (" (on a Ray worker; this driver can read it: every node must see "
                           "the inputs at the same paths)")


def open_context(cfg: ScanConfig, inputs: int | None = None):
    """The scan context for ``cfg``: a Ray one with ``cfg.ray``, else a local one
    (``inputs``: the number of videos to scan, when known: no more local workers)."""
    if cfg.ray:
        return RayScanContext(cfg)
    from .pipeline import build_context

    return build_context(cfg, inputs)


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
