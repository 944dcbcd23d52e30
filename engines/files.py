"""Whole-file writes: a reader sees the old file or the new one, never a torn one.

Results, checkpoints and caches are written to a temporary file beside their
destination and renamed over it (``os.replace`` is atomic on one file system),
so a kill or a full disk mid-write keeps the previous file intact.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error the
    file written there replaces ``path`` whole (else it is removed and ``path`` is kept).

    Writers that add a suffix (``np.save``, ``np.savez``) must be given an open file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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
