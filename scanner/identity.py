"""Which file a row describes: its identity when the row starts and when it ends.

A batch row's size is read when the row starts, its SHA-256 later and the decoder
opens the path after that (twice or three times: index, decode, refetch). A file
still being copied, renamed over or truncated meanwhile gave a row whose size, hash
and verdict described different files, with no error. Every read of the path happens
between two ``stat`` calls; when they differ the row is a ``changed`` error, never a
verdict. Costs one ``stat`` (the row already made one for its size), no read.

This module must not import torch (:mod:`scanner.warmstart` uses it).
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import NamedTuple

ADVICE = "no verdict: rescan it once the file is complete"


class FileIdentity(NamedTuple):
    """What ``stat`` says about a regular file. ``ctime`` is kept because only it moves
    when bytes are rewritten and the modification time is set back (``rsync --inplace
    --times``, ``touch -r``); a chmod or a new hard link moves it too, a rare rescan."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int


def file_identity(path: str | Path) -> FileIdentity | None:
    """``path``'s identity (symlinks followed, as the decoder opens it), or None when it
    cannot be stat'ed or is no regular file (a FIFO or device is refused elsewhere)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def describe_change(before: FileIdentity | None, after: FileIdentity | None) -> str | None:
    """What changed between two identities of one path (None: no regular file there),
    or None when nothing did: a path that stays missing or a FIFO keeps its own error."""
    if before == after:
        return None
    if before is None:
        what = "it appeared (as a regular file) after the scan of it started"
    elif after is None:
        what = "it was removed, renamed away or replaced by something not a regular file"
    elif (after.dev, after.ino) != (before.dev, before.ino):
        what = "it was replaced by another file (renamed or copied over it)"
    elif after.size != before.size:
        what = f"its size went from {before.size} to {after.size} bytes (still being written or copied?)"
    elif after.mtime_ns != before.mtime_ns:
        what = "it was modified (same size, new modification time)"
    else:
        what = ("its status changed (ctime moved: rewritten with its modification time set back, "
                "or its permissions or links changed)")
    return f"the file changed while it was scanned: {what}; {ADVICE}"


def changed_since(path: str, size: int | None, written_ns: int | None) -> str | None:
    """Why the file ``path`` is not the one its row (of ``size`` bytes, in an output last
    written at ``written_ns``) describes, or None (``--resume``, :mod:`scanner.resume`).

    A stat only, no read: a size that differs, or a modification after the output's last
    row (not one dated in the future, which says nothing). A file gone since keeps its row.
    Why not ctime: a chmod or a new hard link (a snapshot by hard links) moves it, and
    every input would be scanned again."""
    ident = file_identity(path)
    if ident is None:
        return None
    if size is not None and ident.size != size:
        return f"its size is {ident.size} bytes, its row's {size}"
    if written_ns is not None and written_ns < ident.mtime_ns <= time.time_ns():
        return "modified after the output's last row was written"
    return None
