"""Whole-file writes: a reader sees the old file or the new one, never a torn one.

Results, checkpoints and caches are written to a temporary file beside their
destination and renamed over it (``os.replace`` is atomic on one file system),
so a kill or a full disk mid-write keeps the previous file intact. The temporary file
of a writer killed outright (SIGKILL) is removed by a later replacement of that file.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# A temp file untouched this long, of a pid not alive here, is a killed writer's. The age
# guard: a pid means nothing across hosts (NFS) or containers sharing the folder.
STALE_TEMP_S = 600
_TEMP = re.compile(r"\.(?P<stem>.+)\.(?P<pid>\d+)\.tmp", re.S)  # the pid is the last part
_temps_seen: dict[str, dict[str, list[str]]] = {}  # folder -> stem -> temp names, one listing


def temp_beside(path: Path) -> Path:
    """``.NAME.PID.tmp`` beside ``path``, NAME cut at 200 bytes (``path``'s own may use all
    255 a name can have)."""
    return path.with_name(f".{_stem(path)}.{os.getpid()}.tmp")


def _stem(path: Path) -> str:
    return os.fsdecode(os.fsencode(path.name)[:200])


def remove_stale_temps(path: Path) -> None:
    """Remove ``path``'s temp files (see :func:`temp_beside`) left by a killed writer.

    A SIGKILL (or power loss) skips the ``finally`` that removes them, and each run's pid
    names a new one, so they stayed forever. Only this target's, of a pid not alive here,
    untouched for :data:`STALE_TEMP_S`; the folder is listed once per process (a folder of
    100,000 cached features would otherwise be listed for each one written)."""
    for name in _temps_in(path.parent).pop(_stem(path), []):
        pid = int(_TEMP.fullmatch(name)["pid"])
        with contextlib.suppress(OSError):
            st = os.lstat(path.parent / name)
            if pid != os.getpid() and not _alive(pid) and time.time() - st.st_mtime > STALE_TEMP_S:
                os.unlink(path.parent / name)


def _temps_in(folder: Path) -> dict[str, list[str]]:
    key = os.fspath(folder)
    if key not in _temps_seen:
        found: dict[str, list[str]] = {}
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                m = _TEMP.fullmatch(name)
                if m:
                    found.setdefault(m["stem"], []).append(name)
        _temps_seen[key] = found
    return _temps_seen[key]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process
        return True
    return True


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error the
    file written there replaces ``path`` whole (else it is removed and ``path`` is kept).

    Writers that add a suffix (``np.save``, ``np.savez``) must be given an open file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """``path`` replaced whole by ``text`` (UTF-8)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj, path: str | Path, indent: int = 2, **kw) -> Path:
    """``obj`` as indented JSON with a final newline, replacing ``path`` whole."""
    return write_text(path, json.dumps(obj, indent=indent, **kw) + "\n")


def write_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """``tensors`` (name -> contiguous CPU tensor) as safetensors, replacing ``path`` whole.

    Serialised in memory and written here, not with ``safetensors.torch.save_file``: that
    creates its file with mode 0600 whatever the umask, so weights trained by one user
    (or written for a service account) could not be read by another."""
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
