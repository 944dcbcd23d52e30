"""Scores of labelled files from one scan's JSONL (``dfscan eval --from-jsonl``): reading the
rows (one scan's, see :class:`_OneScan`), and matching them to the labelled files by path, else by
file name, never lending a score to another file or to a file changed since its scan."""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

from engines.errors import DfscanError

from ..resume import COMPAT_FIELDS  # the fields that make two rows' scores comparable
from .labelled import Item

log = logging.getLogger(__name__)


class _OneScan:
    """Refuses a JSONL that is not one scan's output: a second row for an input (which one
    would count?), or scores from another detector, weights, sampling or aggregation (concatenated
    or resumed with other settings)."""

    def __init__(self, jsonl: Path):
        self.jsonl, self.lines, self.scored_by = jsonl, {}, None
        self.first: dict = {}  # the first scored row's COMPAT_FIELDS
        self.engines: set = set()

    def check(self, n: int, row: dict) -> None:
        path = str(Path(row["path"]).resolve())
        if path in self.lines:
            raise DfscanError(f"{self.jsonl}:{n}: {row['path']} already has a row (line {self.lines[path]}); "
                              "evaluate one scan's output, one row per input")
        self.lines[path] = n
        if row.get("verdict") == "error":
            return
        by = tuple(json.dumps(row.get(k), sort_keys=True) for k in COMPAT_FIELDS)
        if self.scored_by is None:
            self.scored_by, self.first = (n, by), {k: row.get(k) for k in COMPAT_FIELDS}
        self.engines.add(row.get("engine"))
        if by != self.scored_by[1]:
            raise DfscanError(f"{self.jsonl}:{n}: scored by another detector, weights, sampling or aggregation "
                              f"than line {self.scored_by[0]} ({', '.join(COMPAT_FIELDS)}); evaluate one scan's output")

    def settings(self) -> dict:
        """What the rows say of how they were scored (field names as in rows; None where no row
        says): the COMPAT_FIELDS they share, and their engine (a list when a resumed scan changed it)."""
        engines = sorted(self.engines - {None})
        return {**{k: self.first.get(k) for k in COMPAT_FIELDS},
                "engine": engines[0] if len(engines) == 1 else (engines or None), "perturb": None}


_MATCH_FIELDS = ("path", "size_bytes", "sha256")  # what _same_file and name matching read of a row


def _jsonl_scores(jsonl: Path, key: str, unscored: dict | None = None,
                  settings: dict | None = None) -> dict[str, tuple[dict, float]]:
    """Resolved path -> (row's _MATCH_FIELDS, finite score) of one scan's JSONL (see :class:`_OneScan`);
    ``unscored``, when given, gets resolved path -> _MATCH_FIELDS of every row without a score
    (no face, error, non-finite); ``settings`` gets :meth:`_OneScan.settings`."""
    out, one = {}, _OneScan(jsonl)
    with open(jsonl, encoding="utf-8") as f:  # as the scan wrote it, whatever the locale
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DfscanError(f"{jsonl}:{n}: invalid JSON: {e}") from e
            if not isinstance(row, dict) or not isinstance(row.get("path", ""), str):
                raise DfscanError(f"{jsonl}:{n}: not a result row (a JSON object with a string path)")
            if "path" not in row:
                continue
            one.check(n, row)
            # Only what matching needs: whole rows (per-frame details) held ~10x the file in memory.
            path, fields = str(Path(row["path"]).resolve()), {k: row.get(k) for k in _MATCH_FIELDS}
            score = _row_score(jsonl, n, row, key)
            if score is not None:
                out[path] = (fields, score)
            elif unscored is not None:
                unscored[path] = fields
    if settings is not None:
        settings.update(one.settings())
    return out


def _row_score(jsonl: Path, n: int, row: dict, key: str) -> float | None:
    """The row's finite ``key``, or None (no face, error, non-finite)."""
    if row.get(key) is None:
        return None
    try:
        if isinstance(row[key], bool):  # a JSON true is an int to Python: P(fake) = 1
            raise TypeError
        score = float(row[key])
    except (TypeError, ValueError) as e:
        raise DfscanError(f"{jsonl}:{n}: {key} is not a number: {row[key]!r}") from e
    if not math.isfinite(score):  # never read as a verdict either way: excluded, like an error row
        log.warning("%s:%d: %s has a non-finite %s (%s): excluded", jsonl, n, row["path"], key, score)
        return None
    return score


def _size_differs(path: Path, row: dict) -> bool:
    """Whether ``row`` records a size that ``path`` no longer has (edited, re-encoded or
    replaced since the scan; gone counts too): its score is another file's."""
    if row.get("size_bytes") is None:
        return False
    try:
        return row["size_bytes"] != path.stat().st_size
    except OSError:
        return True


def _same_file(path: Path, row: dict) -> bool:
    """Whether ``path`` holds the bytes ``row`` was scanned from (as far as the row records)."""
    from ..pipeline import file_sha256

    return not _size_differs(path, row) and (not row.get("sha256") or row["sha256"] == file_sha256(path))


def _match_rows(items: list[Item], rows: dict[str, dict]) -> tuple[dict[int, str], list[int]]:
    """(item index -> resolved path of its row, indices of changed items) (``rows``: resolved
    path -> _MATCH_FIELDS): by resolved path, else by file name, but only a row no other item
    matched, the only row of that name (scored or not) for the only item of that name, and of
    the same size and SHA-256. A row of the item's own path whose size the file no longer has
    matches nothing: the item changed since the scan (size only: hashing every file is too slow)."""
    matched, stale = {}, set()
    for i, it in enumerate(items):
        p = str(it.path.resolve())
        if p in rows and _size_differs(it.path, rows[p]):
            stale.add(i)
        elif p in rows:
            matched[i] = p
    claimed = set(matched.values()) | {str(items[i].path.resolve()) for i in stale}
    by_name = defaultdict(list)
    for p, row in rows.items():
        if p not in claimed:
            by_name[Path(row["path"]).name].append(p)
    wanted = defaultdict(int)
    for i, it in enumerate(items):
        wanted[it.path.name] += i not in matched and i not in stale
    for i, it in enumerate(items):
        cands = by_name.get(it.path.name, ())
        if (i not in matched and i not in stale and len(cands) == 1 and wanted[it.path.name] == 1
                and _same_file(it.path, rows[cands[0]])):
            matched[i] = cands[0]
    return matched, sorted(stale)


def scores_from_jsonl(items: list[Item], jsonl: Path, key: str = "score", rowless: list | None = None,
                      settings: dict | None = None, changed: list | None = None) -> dict[int, float]:
    """Scores of ``items`` from a scan JSONL: rows matched by resolved path, else by file
    name (scanned from another folder; see :func:`_match_rows`): a same-named different
    video must never lend its score.

    ``rowless``, when given, gets the indices of items no row matches by those same rules:
    never scanned (another set's JSONL, a scan cut short), unlike a no_face or error row;
    ``changed`` those whose row records another size than the file has now (changed since the
    scan: its score is not this file's); ``settings`` how the rows say they were scored
    (:meth:`_OneScan.settings`)."""
    _refuse_labelled_faces(items, jsonl)
    unscored: dict[str, dict] = {}
    scored = _jsonl_scores(jsonl, key, unscored, settings)
    matched, stale = _match_rows(items, {**unscored, **{p: fields for p, (fields, _) in scored.items()}})
    if rowless is not None:
        has_row = set(matched) | set(stale)
        rowless += [i for i in range(len(items)) if i not in has_row]
    if changed is not None:
        changed += stale
    return {i: scored[p][1] for i, p in matched.items() if p in scored}


def _refuse_labelled_faces(items: list[Item], jsonl: Path) -> None:
    """An item with landmarks labels one face of its image; a scan row scores the faces the scan
    found in the whole file. Its score is not that face's, and an image listed with two landmark
    sets (two faces, perhaps one real and one fake) took the one row's score twice."""
    marked = [it for it in items if it.landmarks is not None]
    if marked:
        raise DfscanError(f"{marked[0].path} (and {len(marked) - 1} more) is labelled by face landmarks: "
                          f"a row of {jsonl} scores the faces its scan found in the whole file, not that "
                          "face; evaluate these without --from-jsonl")
