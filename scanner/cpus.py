"""How many CPUs this process may use (no torch import: :mod:`scanner.warmstart` uses it).

``os.cpu_count()`` is the machine's count: under ``taskset``/a cpuset, or in a container
limited to 2 CPUs on a 64-core node, a scan started 8 workers of 8 torch threads each
(64 threads on 2 CPUs, throttled by the quota). Here: the affinity mask, capped by a
cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), rounded up, at least 1.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def usable_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process may run on (see module docstring)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_quota(cgroup)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def cgroup_quota(cgroup: Path = CGROUP) -> float | None:
    """CPUs' worth of time the cgroup quota allows (``2.5`` for 250 ms per 100 ms), or None."""
    try:  # v2: "max 100000" (no limit) or "250000 100000"
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
    except (OSError, ValueError):
        pass
    try:  # v1: -1 is no limit
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None
