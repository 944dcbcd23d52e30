"""Finding and joining the Ray cluster of a ``--ray`` scan (:mod:`scanner.distributed`):
connecting (fast failure on an address nobody listens on, SIGTERM kept, the job's
recorded command line masked), how many scan actors its nodes hold, what its free
resources are, and one line naming what a remote actor raised.
"""
from __future__ import annotations

import contextlib
import logging
import re
import signal
import socket
import threading

from engines.errors import DfscanError

from .config import ScanConfig

log = logging.getLogger("dfscan")


class RayUnavailable(DfscanError):
    """``--ray`` was given but Ray is missing or the cluster cannot be reached."""


def _ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable("--ray needs Ray: pip install 'ray>=2.9'") from e
    return ray


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
        with _masked_entrypoint(ray):
            ray.init(address=address, log_to_driver=False, configure_logging=False, **init_kwargs)
    except Exception as e:  # noqa: BLE001 - a busy host's startup timeout is a bare Exception
        raise RayUnavailable(f"cannot reach the Ray cluster {address!r}: {e}") from e
    finally:
        # ray.init installs sys.exit(15) for SIGTERM: while the actors build their
        # pipelines (minutes with real models) SIGTERM must still give exit 143.
        if term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, term)
    return True


@contextlib.contextmanager
def _masked_entrypoint(ray):
    """Inside, Ray records this driver's command line with credentials masked. Why: it keeps
    the whole line as the job's entrypoint (``ray list jobs``, the dashboard), readable by
    every user of the cluster: ``--metrics-push https://user:pass@gw`` put the password there."""
    from .live.urls import mask_text

    utils = getattr(getattr(ray, "_private", None), "utils", None)
    real = getattr(utils, "get_entrypoint_name", None)
    if real is None:  # a Ray that records no entrypoint this way
        yield
        return
    utils.get_entrypoint_name = lambda: mask_text(real())
    try:
        yield
    finally:
        utils.get_entrypoint_name = real


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster {address!r}: {e}") from e


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes Ray puts in its messages


def _remote_error(e: Exception) -> str:
    """One line naming what an actor raised, taken from the exception Ray carries, not from
    its text (the remote traceback, colour codes and all): a task's RayTaskError holds it as
    ``cause``, and the ActorDiedError of an actor whose ``__init__`` raised holds that
    RayTaskError as its first argument. Anything else (an actor or a node that died): the
    first line of its text."""
    for err in (e, *e.args[:1]):
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [ln for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _free(ray) -> str:
    """The cluster's free CPUs and GPUs, for a log line."""
    try:
        free = ray.available_resources()
    except Exception:  # noqa: BLE001 - only a log line's detail
        return "unknown"
    return f"{free.get('CPU', 0):g} CPU(s), {free.get('GPU', 0):g} GPU(s)"


def _actor_count(ray, cfg: ScanConfig) -> int:
    """``cfg.ray_actors`` (default: all that fit), capped at what the cluster's nodes can hold.

    Ray waits forever for an actor no node can place (``--ray-gpus-per-actor 1`` on CPU
    nodes, more actors than CPUs): the scan hung before its first video. Actors are
    placed whole on one node, so the fit is counted per node.
    """
    cpus, gpus = cfg.ray_cpus_per_actor, cfg.ray_gpus_per_actor
    fits, total = 0, {"CPU": 0.0, "GPU": 0.0}
    for node in ray.nodes():
        res = node.get("Resources") or {}
        if node.get("Alive"):
            total = {k: v + res.get(k, 0.0) for k, v in total.items()}
            per = [res.get("CPU", 0.0) / cpus] + ([res.get("GPU", 0.0) / gpus] if gpus else [])
            fits += int(min(per) + 1e-9)  # 2 / 0.1 is 19.999...
    if not fits:
        need = f"{cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
        raise RayUnavailable(f"no node of the Ray cluster has {need} for a scan actor (cluster: "
                             f"{total['CPU']:g} CPU(s), {total['GPU']:g} GPU(s)); lower "
                             "--ray-cpus-per-actor / --ray-gpus-per-actor or add such nodes")
    if cfg.ray_actors and cfg.ray_actors > fits:
        log.warning("--ray-actors %d: the Ray cluster's nodes hold only %d actor(s) of %g CPU(s) "
                    "/ %g GPU(s); starting %d", cfg.ray_actors, fits, cpus, gpus, fits)
    return min(cfg.ray_actors or fits, fits)
