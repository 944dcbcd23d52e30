"""Every command works after the README's install (`pip install -e .`, no test extra).

Two checks (issue 11, item 6):

* statically, every third-party module that dfscan's code imports is provided by
  a *core* dependency, or is optional (its import is guarded and reported);
* for real, the README's command set runs in a fresh interpreter in which the
  test-only packages cannot be imported (an import hook blocks them), so a
  command that needs one fails here exactly as it would for a user.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import DATA, ROOT

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Optional by design: an extra of their own, or installed separately (README), and
# imported behind a guard that names what to install.
OPTIONAL = {"tensorrt", "torch_tensorrt", "timm", "ray", "facenet_pytorch", "h5py", "tomli", "pynvml"}


def _dist_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _guarded(node: ast.Try) -> bool:
    names = set()
    for h in node.handlers:
        t = h.type
        for e in (t.elts if isinstance(t, ast.Tuple) else [t]):
            names.add(getattr(e, "id", None))
    return bool(names & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException", None})


def _top_imports(path: Path) -> set[str]:
    """Top-level names of the unguarded imports of ``path`` (anywhere in it)."""
    guarded = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and _guarded(node):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party_imports() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for pkg in ("scanner", "engines"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for name in _top_imports(f) - set(sys.stdlib_module_names) - {"scanner", "engines", "__future__"}:
                found.setdefault(name, []).append(str(f.relative_to(ROOT)))
    return found


def _installed_with(dists: set[str]) -> set[str]:
    """``dists`` and everything they require (unconditionally), as installed here."""
    todo, seen = list(dists), set()
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        try:
            reqs = metadata.requires(d) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_dist_name(r) for r in reqs if "extra ==" not in r]
    return seen


def _test_only_modules() -> set[str]:
    """Import names of packages that only the ``test`` extra installs."""
    core = {_dist_name(r) for r in PYPROJECT["project"]["dependencies"]}
    test_only = {_dist_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]} - core
    mods = {m for m, dists in metadata.packages_distributions().items()
            if {d.lower().replace("_", "-") for d in dists} & test_only}
    return {m for m in mods if not m.startswith("_")} | {"pytest", "_pytest"}


def test_every_import_is_a_core_dependency():
    core = _installed_with({_dist_name(r) for r in PYPROJECT["project"]["dependencies"]})
    provided = metadata.packages_distributions()
    missing = {}
    for name, files in _third_party_imports().items():
        dists = {d.lower().replace("_", "-") for d in provided.get(name, [])}
        if name not in OPTIONAL and not dists & core:
            missing[name] = files[:3]
    assert not missing, f"imported but not a core dependency of pyproject.toml: {missing}"


def test_floors_the_code_needs():
    deps = {_dist_name(r): r for r in PYPROJECT["project"]["dependencies"]}
    assert re.search(r">=\s*14\.1", deps["av"])  # VideoFrame.rotation
    assert re.search(r">=\s*0\.2\d", deps["prometheus-client"])  # start_http_server returns the server


BLOCKER = """
import sys
from importlib.abc import MetaPathFinder
BLOCKED = set({blocked!r})
class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (test-only package, blocked)")
        return None
sys.meta_path.insert(0, Block())
from scanner.cli import main
rc = 0
for argv in {commands!r}:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code or 0
    print("RC", argv[0], code, flush=True)
    rc |= bool(code)
sys.exit(int(rc))
"""


def _run_blocked(commands: list[list[str]], tmp_path: Path) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=sorted(_test_only_modules()), commands=commands)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "MPLBACKEND": "Agg",
                                            "PYTHONPATH": str(ROOT)})


def test_readme_commands_without_the_test_extra(tmp_path):
    assert _test_only_modules() >= {"pytest"}
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label\n{DATA / 'd1.mp4'},real\n{DATA / 'd2.mp4'},fake\n")
    scan = tmp_path / "scan.jsonl"
    commands = [[c, "--help"] for c in ("scan", "detectors", "bench", "engines", "probe", "eval",
                                         "separability", "synth", "watch", "serve", "report", "train")]
    commands += [
        ["scan", str(DATA / "d1.mp4"), str(DATA / "d2.mp4"), "--detector", "test_tiny", "--frames", "2",
         "--out", str(scan), "--no-progress"],
        ["detectors"],
        ["synth", str(DATA / "d1.mp4"), "--out", str(tmp_path / "synth"), "--frames", "1", "--size", "64"],
        ["eval", str(labels), "--from-jsonl", str(scan), "--out", str(tmp_path / "eval.json")],
    ]
    r = _run_blocked(commands, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "No module named" not in r.stderr
    assert json.loads((tmp_path / "eval.json").read_text())
    assert (tmp_path / "eval.png").exists()  # matplotlib is a core dependency: the plot is drawn
    assert any((tmp_path / "synth").rglob("*.png")) or any((tmp_path / "synth").rglob("*.jpg"))


SCRIPT_BLOCKED = """
import runpy, sys
from importlib.abc import MetaPathFinder
class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)")
        return None
sys.meta_path.insert(0, Block())
sys.argv = {argv!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("blocked,chromium,needs", [(["playwright"], "/usr/bin/chromium", "Playwright"),
                                                    ([], "/nonexistent/chromium", "Chromium")])
def test_screenshots_without_playwright_or_chromium_is_one_line(tmp_path, blocked, chromium, needs):
    """`python docs/screenshots.py` (README) without the test extra's Playwright scanned and
    rendered a report for 10 s, then ended in a ModuleNotFoundError traceback; what it needs
    is now checked first and named in one line."""
    argv = [str(ROOT / "docs/screenshots.py"), "--chromium", chromium]
    code = SCRIPT_BLOCKED.format(blocked=blocked, argv=argv)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and needs in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results.jsonl").exists()


def test_detector_choice_bench_without_its_clips_is_one_line(tmp_path):
    """`python bench/detector_choice.py` (README) with no shared media where --shared points
    ended in numpy's 'zero-size array' traceback after loading the four detectors; the missing
    clips are now named in one line."""
    r = subprocess.run([sys.executable, str(ROOT / "bench/detector_choice.py"), "--shared", str(tmp_path / "none"),
                        "--out", str(tmp_path / "dc.json")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "real clips not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dc.json").exists()
