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


def _gpu_module(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"gpu_{name}", ROOT / "bench" / "gpu" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pack_lays_wheels_out_as_site_packages(tmp_path):
    """The xz archive run.sh unpacks holds each wheel's files as pip --target would place them."""
    import tarfile
    import zipfile

    pack = _gpu_module("pack")
    whl = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("demo/__init__.py", "X = 1\n")
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
        z.writestr("demo-1.0.data/purelib/demo_extra.py", "Y = 2\n")
        z.writestr("demo-1.0.data/scripts/demo-cli", "#!/bin/sh\n")
    pack.pack([whl], tmp_path / "site.tar.xz")
    with tarfile.open(tmp_path / "site.tar.xz") as t:
        t.extractall(tmp_path / "site", filter="data")
    names = sorted(str(p.relative_to(tmp_path / "site")) for p in (tmp_path / "site").rglob("*") if p.is_file())
    assert names == ["demo-1.0.dist-info/METADATA", "demo/__init__.py", "demo_extra.py"]
    assert (tmp_path / "site" / "demo_extra.py").read_text() == "Y = 2\n"
    # what the device lacks is pinned to the versions installed here
    assert "fastapi==" + __import__("fastapi").__version__ in pack.pinned()


def test_run_without_shared_media_makes_clips_from_the_tree(tmp_path, monkeypatch):
    import av

    run = _gpu_module("run")
    monkeypatch.setenv("DFSCAN_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setattr(run, "tree_clips", lambda: [tmp_path / "stand-in.mp4"])
    assert run.bench_clips() == [str(tmp_path / "stand-in.mp4")]
    clip = run._panned_group(ROOT / "tests" / "data" / "multiface.jpg", tmp_path / "g.mp4", seconds=0.4)
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (1080, 1920, 3)
    assert abs(frames[0].astype(int) - frames[-1]).mean() > 1  # the picture moves


def test_run_says_what_to_carry_when_dfscan_cannot_import(tmp_path):
    code = ("import sys, runpy; sys.modules['av'] = None; sys.argv = ['run.py']; "
            f"runpy.run_path({str(ROOT / 'bench' / 'gpu' / 'run.py')!r}, run_name='__main__')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DFSCAN_GPU_RESULTS": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and "cannot import: av" in p.stdout and "bench/gpu/pack.py" in p.stdout
    assert json.loads((tmp_path / "gpu_run_cuda.json").read_text())["missing"][0].startswith("av ")


def test_every_result_of_the_plan_is_packed_for_the_way_back():
    """On the lent machine only $OUT comes back: run.sh's archive glob must take every JSON
    the plan writes (it once missed engines_cuda_fp32_*.json)."""
    import fnmatch
    import re

    run = _gpu_module("run")
    glob = re.search(r'tar -czf "\$OUT/gpu_results.tgz" (\S+)', (ROOT / "bench/gpu/run.sh").read_text()).group(1)
    written = [s["json"] for s in run.steps(["c.mp4"]) if s["json"]] + ["gpu_run_cuda.json"]
    assert len(written) > 8  # more than $OUT may return one by one
    missed = [j for j in written if not fnmatch.fnmatch(f"bench/results/{j}", glob)]
    assert not missed, f"{glob} misses {missed}"


def test_pack_carries_a_stand_in_for_kornia_rs_that_kornia_loads_with(tmp_path):
    """kornia_rs's 14 MiB native module does not travel; kornia (and dfscan's alignment)
    still import with the stand-in first on the path, and a use of it says why it fails."""
    import subprocess
    import sys
    import tarfile
    import zipfile

    pack = _gpu_module("pack")
    whl = tmp_path / "kornia_rs-0.2.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("kornia_rs/__init__.py", "raise ImportError('the real one')\n")
        z.writestr("kornia_rs/kornia_rs.cpython-312-x86_64-linux-gnu.so", b"\0" * 64)
        z.writestr("kornia_rs-0.2.0.dist-info/METADATA", "Name: kornia_rs\n")
    pack.pack([whl], tmp_path / "site.tar.xz")
    with tarfile.open(tmp_path / "site.tar.xz") as t:
        assert sorted(t.getnames()) == ["kornia_rs-0.2.0.dist-info/METADATA", "kornia_rs/__init__.py"]
        t.extractall(tmp_path / "site", filter="data")
    code = ("import kornia_rs, torch; assert kornia_rs.__file__.startswith(%r)\n"
            "from scanner.align import warp_affine\n"
            "print(tuple(warp_affine(torch.rand(1, 3, 8, 8), torch.eye(2, 3)[None], (8, 8)).shape))\n"
            "try:\n    kornia_rs.io.read_image\nexcept RuntimeError as e:\n    print(e)\n") % str(tmp_path / "site")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path / 'site'}:{ROOT}"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "(1, 3, 8, 8)" in p.stdout and "kornia_rs was not carried to this machine" in p.stdout
