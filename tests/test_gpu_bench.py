"""bench/gpu/run.sh: on a machine without CUDA it exits 0 saying why, touching nothing;
its plan's dfscan commands are valid for the current command line, within 8 minutes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from scanner.cli import build_parser, selected_command


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the no-CUDA path")
def test_run_sh_without_cuda_exits_0_and_says_why(tmp_path):
    before = {p.name for p in (ROOT / "bench" / "results").iterdir()}
    env = {**os.environ, "PYTHON": sys.executable}
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "run.sh")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "no CUDA run" in p.stdout and "sees no CUDA device" in p.stdout
    assert {p.name for p in (ROOT / "bench" / "results").iterdir()} == before


def test_run_sh_without_python_exits_0(tmp_path):
    env = {**os.environ, "PYTHON": "no-such-python-here"}
    p = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "run.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "not found" in p.stdout


def test_plan_commands_parse_and_fit_the_time_budget():
    p = subprocess.run([sys.executable, "bench/gpu/run.py", "--plan"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    names = {s["name"] for s in plan}
    assert {"gpu_tests", "nvdec", "pipeline", "live_capacity"} <= names
    assert {"fp32", "fp16", "bf16"} <= {n.split("_")[1] for n in names if n.startswith("engines_")}
    assert sum(s["budget"] for s in plan) <= 8 * 60 - 20  # 20 s for start-up and wheel installs
    # every shipped detector is benchmarked (a newly shipped one cannot be left out)
    from scanner.cli_engines import _default_detectors

    fp32 = next(s["cmd"] for s in plan if s["name"] == "engines_fp32_fast")
    shipped = fp32[fp32.index("--detectors") + 1:fp32.index("--engines")]
    assert sorted(shipped) == sorted(_default_detectors())
    for s in plan:
        cmd = s["cmd"]
        if cmd[1:3] == ["-m", "scanner.cli"]:
            argv = cmd[3:]
            args = build_parser(selected_command(argv)).parse_args(argv)  # exits on a bad option
            assert args.device == "cuda"
        elif cmd[1].endswith(".py"):
            assert (ROOT / cmd[1]).is_file()
