"""Decode the first videos of a scan while the model loads.

Importing torch and preparing the detector, its engine and MTCNN take seconds on
a small CPU machine, while decoding needs only PyAV. :func:`prestart` opens the
first videos of a scan in decode threads (bounded queues, like the pipeline's
own) *before* the scan context is built; the pipeline then consumes those
threads instead of opening the videos again (``ScanContext.prestarted``).

This module must not import torch (``tests/test_startup.py`` checks it).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .cpus import usable_cpus
from .decode import Frame, FrameSampler
from .identity import FileIdentity, file_identity
from .streaming import BoundedPrefetch

log = logging.getLogger("dfscan.startup")
_IMPORTED_AT = time.time()


def process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; else since this import)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED_AT


_first_logged = False


def _traced(sampler: FrameSampler) -> Iterator[Frame]:
    """``sampler``'s frames; logs when the process's first frame comes out."""
    global _first_logged
    for fr in sampler:
        if not _first_logged:
            _first_logged = True
            log.info("first frame decoded %.3f s after process start (%s)", process_age_s(), sampler.path.name)
        yield fr


@dataclass
class Prestarted:
    """A video whose decode thread started before the scan context existed."""

    sampler: FrameSampler
    frames: BoundedPrefetch
    identity: FileIdentity | None = None  # stat'ed before the decode thread opened it (the row's start)

    def take(self, produce: Callable[[], object]) -> BoundedPrefetch:
        """The running decode thread; ``produce`` (the pipeline's per-video set-up,
        e.g. hashing the file) runs here first, so its errors are the pipeline's."""
        try:
            produce()
        except BaseException:
            self.frames.close()
            raise
        return self.frames


def prestart_count(cfg, n_paths: int) -> int:
    """How many videos the scan will open first: its workers (as
    :func:`scanner.pipeline.resolve_workers` decides, without importing torch)."""
    if getattr(cfg, "ray", None):
        return 0  # remote workers decode on their own nodes
    workers = cfg.workers or (1 if cfg.device.startswith("cuda") else min(usable_cpus(), 8))
    return max(0, min(workers, n_paths))


def prestart(paths: Sequence[str | Path], cfg) -> dict[str, Prestarted]:
    """Start decoding the first videos of ``paths`` (keys: ``str(path)``)."""
    out: dict[str, Prestarted] = {}
    for p in list(paths)[: prestart_count(cfg, len(paths))]:
        if str(p) in out:
            continue
        ident = file_identity(p)  # before any read, so a change during this early decode is seen
        sampler = FrameSampler(p, cfg.frames, cfg.fps, cfg.det_max_side, cfg.seek)
        frames = BoundedPrefetch(lambda s=sampler: _traced(s), maxsize=cfg.queue_frames, name="decode")
        out[str(p)] = Prestarted(sampler, frames, ident)
    return out


def close_all(prestarted: dict[str, Prestarted] | None) -> None:
    """Stop decode threads the scan never consumed (failed set-up, interrupted scan).

    All are asked to stop before any is waited for: closed one after another, each in a long
    read, a model that failed to load was reported up to 5 s per prestarted video late."""
    for pre in (prestarted or {}).values():
        pre.frames.stop()
    for pre in (prestarted or {}).values():
        pre.frames.close()
    if prestarted:
        prestarted.clear()
