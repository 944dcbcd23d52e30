"""CPUs a scan may use: affinity mask and container quota, not the machine's count."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.cpus import cgroup_quota, usable_cpus

ROOT = Path(__file__).resolve().parents[1]


def test_cgroup_v2_and_v1_quotas_are_read(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert cgroup_quota(v2) == 2.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1.parent) == 0.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(v1.parent) is None
    assert cgroup_quota(tmp_path / "none") is None


def test_a_quota_caps_the_usable_cpus_rounded_up(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))  # a 64-core node
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a container limited to 1.5 CPUs
    assert usable_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("1000 100000\n")  # 0.01 CPU: still one
    assert usable_cpus(tmp_path) == 1


@pytest.mark.skipif(shutil.which("taskset") is None or (os.cpu_count() or 1) < 2, reason="needs taskset, 2 CPUs")
def test_a_scan_pinned_to_one_cpu_uses_one_worker_and_one_thread():
    """os.cpu_count() ignores the affinity mask: pinned to one CPU with taskset (or a cpuset), a scan
    started one worker per machine core, each with cores/workers torch threads."""
    code = ("from scanner.config import ScanConfig; from scanner.pipeline import build_context; import torch; "
            "c = build_context(ScanConfig(detector='test_tiny'), inputs=4); print(c.workers, torch.get_num_threads())")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["1", "1"], out.stdout + out.stderr
