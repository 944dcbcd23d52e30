"""On-disk cache of built engine artifacts (ONNX files, TensorRT programs).

Layout: ``<root>/<key>/meta.json`` + ``<root>/<key>/<artifact>``. The key is the
SHA-256 of the fields that decide whether an artifact can be reused (weights,
input spec, precision, backend, batch sizes, library versions, device
architecture, the dfscan version and a hash of the detector's and backend's
source code, so an upgrade never reuses an artifact built by older code). ``meta.json`` stores those fields and the artifact's SHA-256; on
every load both are re-checked, and an entry that does not match exactly is
deleted and rebuilt, never trusted. Lookup and store hand back the artifact's bytes
with their checksum (:class:`Artifact`): each artifact is read and hashed once per
engine start, and what is loaded is what was hashed.

Default root: ``$DFSCAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/dfscan/engines``,
else ``~/.cache/dfscan/engines``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .detector import Detector
from .errors import EngineError

log = logging.getLogger(__name__)
META = "meta.json"
FORMAT = 2
# A build folder untouched this long was left by a crashed build (engines take minutes).
STALE_BUILD_S = 6 * 3600.0
# An entry's folder name: a cache key (:func:`cache_key`, a SHA-256 hex digest). Nothing else
# under the root is an entry: `engines clear --all` with --cache-dir set to a home folder
# deleted Documents/ and every other folder there.
_KEY_NAME = re.compile(r"[0-9a-f]{64}")
TRT_DIR = ".ort-trt"  # ONNX Runtime's own TensorRT engine files, one folder per ONNX file
_ENGINES_DIR = Path(__file__).resolve().parent


def cache_root() -> Path:
    """Where dfscan keeps every cache: ``$XDG_CACHE_HOME/dfscan`` (default ``~/.cache/dfscan``).

    The one resolver for batch, live and research commands (engines, features).
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "dfscan"


def default_cache_dir() -> Path:
    """The engine cache: ``$DFSCAN_CACHE_DIR``, else ``cache_root()/engines``."""
    env = os.environ.get("DFSCAN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return cache_root() / "engines"


def state_dict_hash(model: torch.nn.Module, n: int = 16) -> str:
    """SHA-256 (first ``n`` hex digits) of every parameter/buffer name, shape, dtype and value.

    Hashing the tensors (not the weights file) also covers randomly initialised
    test detectors and weights converted in memory.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:n]


def device_arch(device: str | torch.device) -> str:
    """``"cpu"`` or e.g. ``"sm_90 NVIDIA H100 80GB HBM3"`` (engines are arch-specific)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return "cpu"
    major, minor = torch.cuda.get_device_capability(dev)
    return f"sm_{major}{minor} {torch.cuda.get_device_name(dev)}"


def _sha256(data: bytes) -> str:
    """Checksum of artifact bytes: taken by lookup (a hit) or store (a miss) only, once per
    engine start; callers reuse it from the :class:`Artifact` rather than hash again."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A checked entry's artifact: ``data`` is the very bytes whose SHA-256 is ``sha256``.

    Loaders take ``data``, never the file by name again: a file swapped after the check (an
    entry of a shared cache renamed away and replaced) would run under the stored parity of
    the checked one, and reading it again only to re-hash it cost every start a pass."""

    path: Path
    data: bytes = field(repr=False)  # megabytes: not for logs
    meta: dict  # the entry's metadata as validated (fields, checksum, stored parity)

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]


def package_version(name: str) -> str:
    """Installed version of distribution ``name`` (its module's ``__version__`` when
    already imported), without importing it: ``import onnx`` alone costs ~0.12 s of
    every scan start, and an engine cache hit needs only its version."""
    mod = sys.modules.get(name)
    if getattr(mod, "__version__", None):
        return mod.__version__
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def dfscan_version() -> str:
    """Installed dfscan version (``"unknown"`` when running from an uninstalled tree)."""
    return package_version("dfscan")


def _code_files(cls: type) -> set[Path]:
    """Source files under ``engines/`` that define ``cls`` and its bases; a detector in
    a sub-package (e.g. ``detectors/adm/``) brings every file of that package."""
    files: set[Path] = set()
    for c in cls.__mro__:
        mod = sys.modules.get(c.__module__)
        f = Path(getattr(mod, "__file__", None) or "").resolve()
        if not f.is_file() or _ENGINES_DIR not in f.parents:
            continue
        files.add(f)
        if f.parent.parent != _ENGINES_DIR and f.parent != _ENGINES_DIR:
            files.update(f.parent.glob("*.py"))
    return files


def _packages(classes) -> set[str]:
    """Top-level packages outside dfscan and torch (versioned by the key) that define
    ``classes`` or their bases: e.g. a probe's timm or facenet-pytorch backbone."""
    mods = {c.__module__.split(".")[0] for cls in classes for c in cls.__mro__}
    return mods - {"engines", "scanner", "torch", "builtins", "__main__"}


def code_hash(*classes: type, n: int = 16) -> str:
    """SHA-256 (first ``n`` hex digits) of the source of ``classes`` (see :func:`_code_files`),
    and the version of each other package defining one of them."""
    h = hashlib.sha256()
    for f in sorted(set().union(*(_code_files(c) for c in classes))):
        h.update(f.relative_to(_ENGINES_DIR).as_posix().encode() + b"\0" + f.read_bytes())
    for pkg in sorted(_packages(classes)):
        h.update(f"{pkg}=={package_version(pkg)}\0".encode())
    return h.hexdigest()[:n]


def model_code_hash(detector: Detector) -> str:
    """:func:`code_hash` of the class of every submodule of ``detector``, not only its own:
    a probe's backbone (``engines/backbones/``, timm, facenet-pytorch) is traced into the
    artifact too, and a change there kept the key, so an engine of the older graph was served."""
    return code_hash(*{type(m) for m in detector.modules()})


def key_fields(detector: Detector, backend: str, cfg_fields: dict, versions: dict, device,
               code: str | None = None) -> dict:
    """Everything an artifact depends on, as a JSON-able dict (``code``: source hash of
    the backend and export code, added to the detector's own)."""
    return {
        "format": FORMAT,
        "dfscan": dfscan_version(),
        "code": model_code_hash(detector) + (f"+{code}" if code else ""),
        "detector": detector.name,
        "detector_class": f"{type(detector).__module__}.{type(detector).__qualname__}",
        "weights": state_dict_hash(detector),
        "input_spec": detector.spec.to_dict(),
        "backend": backend,
        **cfg_fields,
        "versions": dict(sorted(versions.items())),
        "arch": device_arch(device),
    }


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class CacheUnwritable(EngineError):
    """No entry can be written under the cache root (read-only or full file system, no
    permission, a path that is not a folder): callers build without the cache."""


def _os_error(e: BaseException) -> OSError | None:
    """``e`` or the error it was raised from, when that is an OSError (a backend's export
    wraps a failed write in an EngineError)."""
    for x in (e, e.__cause__):
        if isinstance(x, OSError):
            return x
    return None


def _foreign(*paths: Path) -> str | None:
    """Why files another user could have written are not to be trusted, else None
    (a shared, world-writable ``DFSCAN_CACHE_DIR`` would let anyone plant an entry)."""
    if not hasattr(os, "getuid"):
        return None
    for p in paths:
        if p.stat().st_uid != os.getuid():
            return "entry owned by another user"
    # Entries are made by mkdtemp (0700); the files' own modes follow the umask and do not
    # matter inside a folder only its owner can write. Group write is allowed: Kubernetes'
    # fsGroup makes every volume folder group-writable at each mount (a rebuild per pod).
    if paths[0].stat().st_mode & stat.S_IWOTH:
        return "entry writable by other users"
    return None


class EngineCache:
    """Artifact store rooted at ``root`` (see module docstring)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str, fields: dict) -> tuple[Artifact | None, str]:
        """The artifact of a valid entry (its bytes and the metadata they were checked against:
        checksum, stored parity, both of one read, as a second read could be of an entry
        replaced since, e.g. by another process), else ``None``; plus what happened:
        ``"hit"``, ``"miss"`` or ``"rebuilt (<why>)"`` (an invalid entry is deleted first)."""
        d = self.entry_dir(key)
        if not d.exists():
            return None, "miss"
        art, problem = self._read(d, fields)
        if art is not None:
            return art, "hit"
        shutil.rmtree(d, ignore_errors=True)
        return None, f"rebuilt ({problem})"

    def _read(self, d: Path, fields: dict) -> tuple[Artifact | None, str | None]:
        """The artifact of entry ``d``, read and checked; else None and why it cannot be used."""
        try:
            meta = json.loads((d / META).read_text())
        except (OSError, ValueError) as e:
            return None, f"unreadable metadata: {type(e).__name__}"
        if not isinstance(meta, dict) or meta.get("fields") != json.loads(json.dumps(fields)):
            return None, "metadata does not match the requested engine"
        name = str(meta.get("artifact", ""))
        if name in ("", ".", "..") or Path(name).name != name:  # e.g. "../../x": not this entry's
            return None, "artifact is not a file of the entry"
        art = d / name
        if not art.is_file():
            return None, "artifact missing"
        try:
            foreign = _foreign(d, d / META, art)
            if foreign:  # a TensorRT program is loaded as code: only from entries only we could write
                return None, foreign
            data = art.read_bytes()
        except OSError as e:
            # Deleted since it was found, by another process rebuilding or clearing the entry
            # (two scans starting together): a rebuild here, not a failed engine build.
            return None, f"artifact unreadable: {type(e).__name__}"
        if _sha256(data) != meta.get("sha256"):
            return None, "artifact checksum mismatch"
        return Artifact(art, data, meta), None

    def store(self, key: str, fields: dict, name: str, write: Callable[[Path], None],
              extra: dict | None = None) -> Artifact:
        """Create the entry: ``write(path)`` writes the artifact; returns it, read and hashed once.

        Written into a temporary directory and renamed, so a crash never leaves
        a half-written entry that looks valid. :class:`CacheUnwritable` when the cache
        cannot take it (the write's own OSError, e.g. a full disk, included).
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        except OSError as e:
            raise CacheUnwritable(f"engine cache {self.root} cannot be written: {e.strerror or e}") from e
        try:
            return self._fill(tmp, key, fields, name, write, extra)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            err = _os_error(e)
            if err is not None and not isinstance(e, CacheUnwritable):
                raise CacheUnwritable(f"engine cache {self.root} cannot be written: {err.strerror or err}") from e
            raise

    def _fill(self, tmp: Path, key: str, fields: dict, name: str, write: Callable[[Path], None],
              extra: dict | None) -> Artifact:
        """Write the entry into ``tmp``, then move it to its place."""
        write(tmp / name)
        if not (tmp / name).is_file():
            raise EngineError(f"engine artifact {name} was not written")
        final = self.entry_dir(key)
        theirs, _ = self._read(final, fields)
        if theirs is not None:
            # Another process stored this key meanwhile and may be loading it: deleting its
            # entry to put ours in place made that load fail (file not found). Keep theirs.
            shutil.rmtree(tmp, ignore_errors=True)
            return theirs
        data = (tmp / name).read_bytes()  # hashed here, and loaded by the caller: one read
        meta = {"key": key, "artifact": name, "sha256": _sha256(data), "size_bytes": len(data),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "fields": fields, **(extra or {})}
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process stored the same key meanwhile: keep theirs if it is valid.
            theirs, _ = self._read(final, fields)
            if theirs is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return theirs
        return Artifact(final / name, data, meta)

    def update_meta(self, key: str, **extra) -> bool:
        """Add fields (e.g. parity numbers) to an entry's metadata; False when it cannot.

        Best effort: the parity stored here only spares the next start a check, so a
        read-only (shared) cache or a full disk must not stop a scan whose engine was
        just checked. Replaced whole, so a concurrent reader never sees torn JSON."""
        from .files import write_text

        p = self.entry_dir(key) / META
        try:
            meta = json.loads(p.read_text())
            if not isinstance(meta, dict):  # replaced by foreign JSON meanwhile
                raise ValueError("metadata is not an object")
            meta.update(extra)
            write_text(p, json.dumps(meta, indent=1, sort_keys=True))
        except (OSError, ValueError) as e:
            log.warning("engine cache %s: metadata not updated (%s)", p.parent, e)
            return False
        return True

    def list(self) -> list[dict]:
        """Summary of every entry (valid or not) under the root."""
        rows = []
        for d in sorted(self._entries()):
            try:
                meta = json.loads((d / META).read_text())
                if not isinstance(meta, dict) or not isinstance(meta.get("fields", {}), dict):
                    raise ValueError("not a metadata object")  # hand-edited or foreign JSON
                f = meta.get("fields", {})
                rows.append({
                    "key": d.name, "detector": f.get("detector"), "backend": f.get("backend"),
                    "precision": f.get("precision"), "batch_sizes": f.get("batch_sizes"),
                    "arch": f.get("arch"), "size_bytes": meta.get("size_bytes"),
                    "created": meta.get("created"), "parity": meta.get("parity"), "path": str(d),
                })
            except (OSError, ValueError) as e:
                rows.append({"key": d.name, "error": f"unreadable: {type(e).__name__}", "path": str(d)})
        return rows

    def clear(self, keys: list[str] | None = None) -> int:
        """Delete the given entries (key prefixes accepted), or all; returns how many. Only
        entries (:meth:`_entries`): a root set by mistake to a folder of other files keeps them.

        A build in progress (``.tmp-*``, see :meth:`store`) is not an entry: deleting it
        made that build fall back to running uncached. ``clear()`` removes only those a
        crashed build left (untouched for :data:`STALE_BUILD_S`), without counting them."""
        n = 0
        for d in self._entries():
            if keys is None or any(d.name.startswith(k) for k in keys):
                self._remove_trt_files(d)
                _remove(d)
                n += 1
        if keys is None:
            _remove(self.root / TRT_DIR)  # every entry's, and those of entries deleted on lookup
            for d in self._listing():
                if d.name.startswith(".tmp-") and d.is_dir() and _age_s(d) > STALE_BUILD_S:
                    shutil.rmtree(d, ignore_errors=True)  # a link: refused by rmtree, not followed
        return n

    def _remove_trt_files(self, entry: Path) -> None:
        """Delete an ``ort-trt`` entry's TensorRT engine files (``onnxrt._trt_options``: a folder
        named by the ONNX file's checksum). They stayed after `engines clear`, and an entry rebuilt
        after failing parity (same ONNX bytes) was given the TensorRT engine that had failed."""
        try:
            meta = json.loads((entry / META).read_text())
            tag = str(meta["sha256"])[:16] if meta["fields"].get("ort_tensorrt") else ""
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable, foreign
            return
        if re.fullmatch(r"[0-9a-f]{16}", tag):
            _remove(self.root / TRT_DIR / tag)

    def _listing(self) -> list[Path]:
        try:
            return list(self.root.iterdir())
        except OSError:  # no cache yet, or not a folder
            return []

    def _entries(self) -> list[Path]:
        """The entries under the root: folders named by a cache key (a link so named too, as
        lookup would follow it), nothing else the root holds (see :data:`_KEY_NAME`)."""
        return [d for d in self._listing() if _KEY_NAME.fullmatch(d.name) and (d.is_symlink() or d.is_dir())]


def _remove(entry: Path) -> None:
    """Delete an entry; a link is unlinked, never followed: what it points to is not the cache's."""
    if entry.is_symlink():
        entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(entry, ignore_errors=True)


def _age_s(path: Path) -> float:
    """Seconds since ``path`` last changed (0 when it is gone)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
