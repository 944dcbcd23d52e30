"""Pack what a lent GPU machine lacks into ``.gpu/``, within the device's 64 MiB.

The device copies the working tree (tracked and untracked-not-ignored files) and the
paths named in ``carry``: 64 MiB in all. Its image has torch, numpy, scikit-learn,
ONNX Runtime, ... but not PyAV, kornia, facenet-pytorch, pydantic or FastAPI; as wheels
those are ~48 MB, which does not fit beside the ~32 MB tree. So the wheels (the versions
installed here, which the tests pass with; CPython 3.12, manylinux x86-64, as
``../shared/tools/gpu-wheels.sh`` fetches them) are unpacked and packed again into one xz
archive with the x86 filter, ``.gpu/site.tar.xz`` (~28 MB; kornia_rs as a stand-in, see
:data:`STAND_INS`); ``bench/gpu/run.sh`` unpacks it into ``.site/``. The shared clips do not
fit beside it: without ``../shared`` the run makes its benchmark clips from the tree's own
footage (``bench/gpu/run.py``).

    python bench/gpu/pack.py          # writes .gpu/site.tar.xz, checks the 64 MiB budget
    # then, on the device: run(command="bash bench/gpu/run.sh", carry=[".gpu"], timeout_s=540)
"""
from __future__ import annotations

import argparse
import io
import lzma
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".gpu"
LIMIT = 64 * 2**20  # the device's limit on what travels
# Missing on the device image (library README, KINDS.md), needed by dfscan there.
PACKAGES = ["av", "kornia", "kornia_rs", "facenet-pytorch", "pydantic", "pydantic_core", "annotated-types",
            "typing-inspection", "fastapi", "starlette", "uvicorn", "opentelemetry-api"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
XZ = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 192 << 20}]


def pinned() -> list[str]:
    """``name==version`` of each package as installed here (facenet-pytorch: the README's pin)."""
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here: install dfscan first (README command 2)") from None
    return out


def download(dest: Path, python: str = "3.12") -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest),
           *pinned()]
    subprocess.run(cmd, check=True)
    return sorted(dest.glob("*.whl"))


def _site_name(name: str) -> str | None:
    """Where a wheel member goes in site-packages: as is, or out of ``*.data/{purelib,platlib}``;
    None for scripts and headers (``python -m`` needs neither)."""
    top, _, rest = name.partition("/")
    if not top.endswith(".data"):
        return name
    kind, _, rest = rest.partition("/")
    return rest if kind in ("purelib", "platlib") and rest else None


# kornia imports kornia_rs (image-file IO, a 14 MiB native module) when it loads; dfscan uses
# only kornia's tensor geometry, so a stand-in travels instead: ~4 MiB of the 64 MiB budget.
STAND_INS = {"kornia_rs": '''"""Stand-in for kornia_rs on the lent GPU machine (bench/gpu/pack.py).

kornia imports kornia_rs's image-file IO when it loads; dfscan uses none of it, and the
native module does not fit within the device's upload limit. A use says so."""


class _Absent:
    def __getattr__(self, name):
        raise RuntimeError(f"kornia_rs.io.{name}: kornia_rs was not carried to this machine "
                           "(bench/gpu/pack.py packs a stand-in); dfscan does not need it")


io = _Absent()
'''}


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), mode
    tar.addfile(ti, io.BytesIO(data))


def pack(wheels: list[Path], out: Path) -> None:
    """One ``tar.xz`` of every wheel's files laid out as site-packages (a package named in
    :data:`STAND_INS`: its stand-in and its dist-info only)."""
    stood_in = set()
    with lzma.open(out, "wb", format=lzma.FORMAT_XZ, filters=XZ) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for whl in wheels:
            with zipfile.ZipFile(whl) as z:
                for info in z.infolist():
                    name = _site_name(info.filename)
                    if info.is_dir() or name is None:
                        continue
                    if (top := name.split("/", 1)[0]) in STAND_INS:
                        stood_in.add(top)
                        continue
                    _add(tar, name, z.read(info), (info.external_attr >> 16) & 0o777 or 0o644)
        for package in sorted(stood_in):
            _add(tar, f"{package}/__init__.py", STAND_INS[package].encode())


def travel_bytes(out: Path = OUT) -> int:
    """Bytes the device copies: tracked and untracked-not-ignored files, plus ``out``."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    files = [ROOT / n.decode() for n in names if n] + [p for p in out.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in set(files) if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, help="use these .whl files (a folder) instead of downloading")
    ap.add_argument("--python", default="3.12", help="the device's Python (3.12); another for a local dry run")
    ap.add_argument("--out", type=Path, default=OUT, help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = sorted(args.wheels.glob("*.whl")) if args.wheels else download(Path(tmp), args.python)
        print(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB")
        part = out / "site.tar.xz.part"
        pack(wheels, part)
        part.replace(out / "site.tar.xz")
        (out / "wheels.txt").write_text("".join(w.name + "\n" for w in wheels))
    size, total = (out / "site.tar.xz").stat().st_size, travel_bytes(out)
    print(f"{out / 'site.tar.xz'} {size / 2**20:.1f} MiB; with the tree {total / 2**20:.1f} of {LIMIT / 2**20:.0f} MiB")
    if total > LIMIT:
        print("over the device's limit: nothing would travel (remove untracked files or large carried ones)")
        return 1
    print('device: run(command="bash bench/gpu/run.sh", carry=[".gpu"], timeout_s=540)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
