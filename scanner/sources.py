"""Expand command-line inputs into a list of video paths.

Accepted: files (any extension when named explicitly), folders (recursive, by
video extension, extensionless files by their first bytes: :mod:`scanner.folder_walk`),
glob patterns, and text files of paths (``.txt``/``.list``, one per line, ``#``
comments, relative to the list file). A path that does not exist is kept, so it
yields an ``error`` row instead of vanishing silently; the files a folder or pattern
held that were left out as not video are counted (:class:`~scanner.folder_walk.Skipped`).

A URL (``scheme://...``, on the command line or a list's line) is refused before any
work, its credentials masked: it was taken as a path ('http://h/x.mp4' became
'http:/h/x.mp4', a not_found row). Live streams are ``dfscan watch``'s.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from stat import S_ISDIR
from typing import Iterable
from urllib.parse import unquote, urlsplit

from .config import ConfigError
from .decode import is_video_path
from .folder_walk import Skipped, is_video_file, walk_videos
from .live.urls import is_url, mask_credentials
from .resume import input_key

LIST_SUFFIXES = (".txt", ".list", ".lst")


def bundled_samples() -> list[Path]:
    """The real sample clips shipped inside the package (the embedded default)."""
    root = Path(str(resources.files("scanner") / "samples"))
    return sorted(p for p in root.iterdir() if is_video_path(p))


def _walk(folder: Path, skipped: Skipped | None) -> list[Path]:
    found: list[Path] = []

    def unlisted(e: OSError) -> None:
        # A folder that cannot be listed (no permission, removed meanwhile) is an input of
        # its own, so its error row says why: os.walk skipped it without a word, and every
        # video under it was missing from the results of a scan that exited 0.
        if e.filename is not None:
            found.append(Path(e.filename))

    for path in walk_videos(folder, skipped, unlisted=unlisted):  # lazy: unlisted ones in walk order
        found.append(path)
    return found


def _pattern_walk(pattern: str) -> tuple[list[Path], list[Path]]:
    """What ``pattern`` matches (as ``glob.glob(pattern, recursive=True)``, sorted), and the
    folders it would have to list, or pass through, and cannot.

    Why not glob: its ``**`` follows symbolic links to folders with no memory of where it has
    been, so a link back up (``ln -s .. up``) was walked 40 levels deep, each level one more
    name for every file, and two such links in a tree made 2**40 names: the scan hung before
    its first row. Here a folder is entered once per pattern position (its device and inode),
    so a loop ends where it closes. Blocked folders: glob skips them without a word, so the
    videos under them had no row and the scan exited 0; each becomes an input of its own whose
    error row says why, as in :func:`_walk`. Only folders a match could lie under are looked at
    (``a*/x.mp4`` never needs ``b/``).
    """
    p = Path(pattern)
    parts = p.parts[1:] if p.anchor else p.parts
    dirs_only = pattern.endswith(os.sep)  # `clips/*/`: glob matches folders only
    matched: list[str] = []
    blocked: list[Path] = []
    seen: set[tuple[int, int, frozenset[int]]] = set()
    todo = [(p.anchor, _closure({0}, parts)[0])]
    while todo:
        folder, states = todo.pop()
        try:
            st = os.stat(folder or os.curdir)
        except PermissionError:  # a name leading through a folder that cannot be searched
            blocked.append(Path(folder))
            continue
        except OSError:  # gone or a dangling link: glob finds nothing there either
            continue
        if (st.st_dev, st.st_ino, states) in seen or not S_ISDIR(st.st_mode):
            continue  # seen: a symlink cycle ends here
        seen.add((st.st_dev, st.st_ino, states))
        names, listed = _pattern_children(folder, states, parts)
        if not listed:
            blocked.append(Path(folder))
        nexts = [(os.path.join(folder, n), d, _step(n, states, parts)) for n, d in names]
        matched += [child for child, d, (_, end) in nexts if end and (not dirs_only or d and os.path.isdir(child))]
        todo += reversed([(child, s) for child, d, (s, _) in nexts if s and d])  # popped in sorted order
    return [Path(m) for m in sorted(matched)], blocked


def _pattern_children(folder: str, states: frozenset[int], parts: tuple[str, ...]) -> tuple[list[tuple[str, bool]], bool]:
    """The names under ``folder`` glob looks at for ``states``, each with whether it may be a
    folder (a file is not stat'ed again), and whether it could look at them all.

    A wildcard needs the folder listed; a literal name is only looked up (glob's lexists),
    which a folder without read but with search permission allows: no error there, and
    ``**/clip.mp4`` still finds its ``clip.mp4`` (glob's lookup did) besides the error."""
    wanted = sorted({parts[i] for i in states})
    if any(glob.has_magic(w) for w in wanted):
        try:
            with os.scandir(folder or os.curdir) as entries:
                return sorted((e.name, _maybe_dir(e)) for e in entries), True
        except OSError:  # any reason, as in _walk: the folder's own row tells which
            names, _ = _pattern_children(folder, frozenset(i for i in states if not glob.has_magic(parts[i])),
                                         parts)
            return names, False
    found = []
    for name in wanted:
        try:
            os.lstat(os.path.join(folder, name))
        except PermissionError:
            return [], False
        except OSError:  # absent: nothing to match there
            continue
        found.append((name, True))  # stat'ed when visited
    return found, True


def _maybe_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # kept: stat'ed when visited, where a denial is reported
        return True


def _closure(states: set[int], parts: tuple[str, ...]) -> tuple[frozenset[int], bool]:
    """``states`` (indices of the pattern part to match next) with those a ``**`` may skip
    to, as it matches zero folders too, less the end state; and whether the end is among
    them (the path reached is a match)."""
    out, todo = set(states), list(states)
    while todo:
        i = todo.pop()
        if i < len(parts) and parts[i] == "**" and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    end = len(parts) in out
    out.discard(len(parts))
    return frozenset(out), end


def _step(name: str, states: frozenset[int], parts: tuple[str, ...]) -> tuple[frozenset[int], bool]:
    """The states in entry ``name`` of a folder in ``states`` (empty: nothing to match below),
    and whether ``name`` itself is a match."""
    nxt = set()
    for i in states:
        if parts[i] == "**":
            if not name.startswith("."):  # glob's ** skips hidden names
                nxt.add(i)
        elif _part_matches(name, parts[i]):
            nxt.add(i + 1)
    return _closure(nxt, parts)


def _part_matches(name: str, part: str) -> bool:
    if not glob.has_magic(part):
        return name == part
    # As glob: a wildcard matches a leading dot only where the pattern part has one.
    return (part.startswith(".") or not name.startswith(".")) and _wildcard(part)(name) is not None


@lru_cache(maxsize=64)
def _wildcard(part: str):
    # Compiled once per pattern part (as glob's fnmatch.filter): fnmatch.fnmatch per name made
    # a 100,000-file folder take seconds to match.
    return re.compile(fnmatch.translate(part)).match


def url_refused(url: str, where: str = "", local: bool = False) -> ConfigError:
    """The error for a URL given to scan (``where``: ", line N of LIST"), credentials masked.

    ``local``: a file or folder of that name exists here (``http:/x/a.mp4``); the hint only
    spoke of streams and downloads, and the way to scan it, ``./NAME``, went unsaid."""
    hint = "for a live stream: dfscan watch URL; an archived file: download it first"
    if local:
        hint = f"a local file has that name: put ./ before it to scan the file; {hint}"
    if url[:7].lower() == "file://":  # refused too, rather than read: say which path it means
        try:
            parts = urlsplit(url)
        except ValueError:  # 'file://[x': mask_credentials says '<invalid url>'
            parts = None
        local = unquote(parts.path) if parts and parts.netloc.lower() in ("", "localhost") else ""
        hint = f"give the file's path itself{': ' + local if local else ''}"
    return ConfigError(f"scan reads local files and folders, not URLs: {mask_credentials(url)}{where} ({hint})")


def _read_list(path: Path) -> list[Path]:
    out = []
    # utf-8-sig: a BOM (Notepad, Excel) would otherwise become part of the first path;
    # surrogateescape: a non-UTF-8 file name maps back to its bytes, as os paths do.
    # Lines end at \n, \r\n or \r only (text mode): str.splitlines also splits at U+2028,
    # U+0085 or \x1c, which a file name may hold (e.g. a list made from a scan's JSONL).
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        if "\0" in line:  # no file name holds one; os.path.realpath raised a traceback
            raise ConfigError(f"line {n} of {path} holds a NUL byte, which no file name can: a list of "
                              "paths is UTF-8 text (save a UTF-16 one, e.g. from PowerShell's '>', as UTF-8)")
        if is_url(line.strip()):
            raise url_refused(line.strip(), f", line {n} of {path}",
                              os.path.lexists(path.parent / line.strip()))
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


def _expand(item: str, skipped: Skipped | None) -> tuple[list[Path], bool]:
    """The paths ``item`` names, and whether it is a folder, pattern or list (may name none)."""
    # os.path's tests, not Path's: Path.is_dir() raises PermissionError for a name inside a
    # folder that cannot be searched, and the whole scan ended in a traceback without a row.
    p = Path(item)
    if os.path.isdir(p):
        return _walk(p, skipped), True
    if os.path.isfile(p) and p.suffix.lower() in LIST_SUFFIXES:
        try:  # True: a list naming no file is said in a warning line, as an empty folder is
            return _read_list(p), True
        except OSError:  # unreadable: the list is an input of its own, its row says why
            return [p], False
    if not os.path.exists(p) and glob.has_magic(item):
        found: list[Path] = []
        matches, blocked = _pattern_walk(item)
        for mp in matches:
            if os.path.isdir(mp):
                found += _walk(mp, skipped)
            elif is_video_file(mp):
                found.append(mp)
            elif skipped is not None:
                skipped.add(mp)
        found += blocked
        if not found and not any(c in item for c in "*?") and is_video_path(p):
            # `Interview [2019].mp4`, moved or mistyped: a file name, not a pattern; it got
            # only a warning line, no not_found row, and the scan could exit 0.
            return [p], False
        return found, True
    return [p], False


def expand_inputs(items: Iterable[str], aliases: list[tuple[Path, Path]] | None = None,
                  unmatched: list[str] | None = None, skipped: Skipped | None = None) -> list[Path]:
    """Ordered, de-duplicated video paths for ``items`` (see module doc).

    Two names of one file (a symlink, a folder reached through a symlinked folder) are one
    input, kept under the first name, as ``--resume`` matches inputs: they were scanned
    twice and made two rows. ``aliases``, when given, receives ``(dropped, kept)`` pairs;
    ``unmatched`` the folders and patterns that named no video (a missing file is kept as an
    input and gets its row; a pattern like ``clips/*.MP4`` vanished without a word);
    ``skipped`` counts the files folders and patterns held that were not taken as video.
    A URL among ``items`` or in a list raises :class:`~scanner.config.ConfigError`.
    """
    items = list(items)
    for item in items:  # all refused before any folder is walked
        if not item:  # Path('') is '.': `dfscan scan "$DIR"` with DIR unset scanned the current folder
            raise ConfigError("an empty PATH names no file (an unset shell variable?); give . for the current folder")
        if is_url(item):
            raise url_refused(item, local=os.path.lexists(item))
    paths: list[Path] = []
    for item in items:
        found, pattern = _expand(item, skipped)
        if pattern and not found and unmatched is not None:
            unmatched.append(item)
        paths += found
    first: dict[str, Path] = {}
    for p in paths:
        kept = first.setdefault(input_key(p), p)
        if kept is not p and aliases is not None and os.path.abspath(kept) != os.path.abspath(p):
            aliases.append((p, kept))
    return list(first.values())
