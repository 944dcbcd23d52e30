"""Expand command-line inputs into a list of video paths.

Accepted: files (any extension when named explicitly), folders (recursive, by
video extension), glob patterns, and text files of paths (``.txt``/``.list``,
one per line, ``#`` comments, relative to the list file). A path that does not
exist is kept, so it yields an ``error`` row instead of vanishing silently.
"""
from __future__ import annotations

import glob
import os
from importlib import resources
from pathlib import Path
from typing import Iterable

from .decode import is_video_path
from .resume import input_key

LIST_SUFFIXES = (".txt", ".list", ".lst")


def bundled_samples() -> list[Path]:
    """The real sample clips shipped inside the package (the embedded default)."""
    root = Path(str(resources.files("scanner") / "samples"))
    return sorted(p for p in root.iterdir() if is_video_path(p))


def _walk(folder: Path) -> list[Path]:
    found = []

    def unlisted(e: OSError) -> None:
        # A folder that cannot be listed (no permission, removed meanwhile) is an input of
        # its own, so its error row says why: os.walk skipped it without a word, and every
        # video under it was missing from the results of a scan that exited 0.
        if e.filename is not None:
            found.append(Path(e.filename))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlisted):
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if is_video_path(Path(f))]
    return found


def _read_list(path: Path) -> list[Path]:
    out = []
    # utf-8-sig: a BOM (Notepad, Excel) would otherwise become part of the first path;
    # surrogateescape: a non-UTF-8 file name maps back to its bytes, as os paths do.
    # Lines end at \n, \r\n or \r only (text mode): str.splitlines also splits at U+2028,
    # U+0085 or \x1c, which a file name may hold (e.g. a list made from a scan's JSONL).
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        lines = f.read().split("\n")
    for line in lines:
        entry = _list_entry(line, path.parent)
        if entry is not None:
            out.append(entry)
    return out


def _list_entry(line: str, folder: Path) -> Path | None:
    """The path a list line names; None for a blank or ``#`` comment line.

    Surrounding blanks and a leading ``#`` are list syntax, unless the line as written names
    a file: ``#shorts.mp4`` (hashtags in downloaded titles) was dropped as a comment without
    a row, and `` intro.mp4`` was read as ``intro.mp4`` (another file, or not_found).
    """
    def at(text: str) -> Path:
        p = Path(text)
        return p if p.is_absolute() else folder / p

    if line and os.path.lexists(at(line)):
        return at(line)
    line = line.strip()
    return at(line) if line and not line.startswith("#") else None


def _expand(item: str) -> tuple[list[Path], bool]:
    """The paths ``item`` names, and whether it is a folder or pattern (may name none)."""
    # os.path's tests, not Path's: Path.is_dir() raises PermissionError for a name inside a
    # folder that cannot be searched, and the whole scan ended in a traceback without a row.
    p = Path(item)
    if os.path.isdir(p):
        return _walk(p), True
    if os.path.isfile(p) and p.suffix.lower() in LIST_SUFFIXES:
        try:
            return _read_list(p), False
        except OSError:  # unreadable: the list is an input of its own, its row says why
            return [p], False
    if not os.path.exists(p) and glob.has_magic(item):
        found: list[Path] = []
        for m in sorted(glob.glob(item, recursive=True)):
            mp = Path(m)
            found += _walk(mp) if os.path.isdir(mp) else [mp] if is_video_path(mp) else []
        return found, True
    return [p], False


def expand_inputs(items: Iterable[str], aliases: list[tuple[Path, Path]] | None = None,
                  unmatched: list[str] | None = None) -> list[Path]:
    """Ordered, de-duplicated video paths for ``items`` (see module doc).

    Two names of one file (a symlink, a folder reached through a symlinked folder) are one
    input, kept under the first name, as ``--resume`` matches inputs: they were scanned
    twice and made two rows. ``aliases``, when given, receives ``(dropped, kept)`` pairs;
    ``unmatched`` the folders and patterns that named no video (a missing file is kept as an
    input and gets its row; a pattern like ``clips/*.MP4`` vanished without a word).
    """
    paths: list[Path] = []
    for item in items:
        found, pattern = _expand(item)
        if pattern and not found and unmatched is not None:
            unmatched.append(item)
        paths += found
    first: dict[str, Path] = {}
    for p in paths:
        kept = first.setdefault(input_key(p), p)
        if kept is not p and aliases is not None and os.path.abspath(kept) != os.path.abspath(p):
            aliases.append((p, kept))
    return list(first.values())
