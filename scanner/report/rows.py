"""Result rows for the report: reading a JSONL file and summarising a run.

The report is always rendered from the rows as written by the scan (the JSONL
file), never from in-memory state, so a report regenerated after ``--resume``
or from an archived file shows every video the file holds.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

VERDICTS = ("fake", "real", "no_face", "error")


def load_rows(path: str | Path) -> tuple[list[dict], int]:
    """Rows of a JSONL results file (see :func:`index_rows`) and the unreadable line count."""
    with open(path, "rb") as f:
        entries, bad = index_rows(f)
        return [read_row(f, off) for off, _ in entries], bad


def index_rows(f, why: dict | None = None) -> tuple[list[tuple[int, dict]], int]:
    """``[(byte offset, slim row (:func:`slim_row`)), ...]`` and the unreadable line count.

    ``f``: the results file opened in binary mode, the handle the rows are then read from,
    as a results file can be replaced meanwhile (``scan --retry-errors`` rewrites it), and
    offsets into another open of it would read other rows.

    Only slim rows stay in memory (the rest, per-frame details included, is read again,
    one row at a time, with :func:`read_row`), so a report of 100,000 videos stays small.
    A later row for the same path replaces an earlier one (``--retry-errors``
    appends a new row for a rescanned input) but keeps the first one's position.
    A torn last line (a scan killed mid-write) is counted, not fatal; ``why`` gets each
    reason's count and first line numbers (see :func:`unreadable_text`).
    """
    by_path: dict[str, tuple[int, dict]] = {}
    shared: dict = {}  # see slim_row
    bad, off = 0, 0
    f.seek(0)
    for n, line in enumerate(f, 1):
        start, off = off, off + len(line)
        if not line.strip():
            continue
        row, reason = _parse(line)
        if reason is None:
            by_path[str(row["path"])] = (start, slim_row(row, shared))
            continue
        bad += 1
        if why is not None:  # bounded: a count and WHY_LINES line numbers per reason
            seen = why.setdefault(reason, [0])
            seen[0] += 1
            if len(seen) <= WHY_LINES:
                seen.append(n)
    return list(by_path.values()), bad


WHY_LINES = 3  # line numbers named per reason


def _parse(line: bytes) -> tuple[dict | None, str | None]:
    """``(row, None)`` for a result row the report can show, else ``(None, why)``.

    The report said only "N unreadable line(s) (e.g. a row torn by a kill)", whatever the
    reason: a results file cut short, another program's JSONL and a hand-edited row read alike."""
    try:
        row = json.loads(line)
    except ValueError:
        if not line.endswith(b"\n"):
            return None, "cut short at the end of the file (a row torn by a kill, or a copy cut short)"
        return None, "not JSON (a row torn, then written after, or hand-edited)"
    if not isinstance(row, dict) or "path" not in row or "verdict" not in row:
        return None, "no dfscan result row (no path and verdict: another program's, or a live event)"
    if not well_formed(row):  # a string score would crash the sort and sums
        return None, "a field of another type than dfscan writes (hand-edited, or another program's)"
    return row, None


def unreadable_text(why: dict) -> str:
    """``why`` of :func:`index_rows` as text: ``not JSON (...): line 1, 2, 3 and 15 more``."""
    parts = []
    for reason, (count, *lines) in why.items():
        more = f" and {count - len(lines)} more" if count > len(lines) else ""
        parts.append(f"{reason}: line {', '.join(map(str, lines))}{more}")
    return "; ".join(parts)


# What the header, the table, the section order and the Grad-CAM check read of a row; each
# section reads its full row again (read_row). The whole row stayed in memory less its
# frames_detail: ~5.7 KB a row (video facts, timings, aggregation), plus ~250 bytes per face
# track, so a report of a long video's many tracks, times 100,000 rows, held gigabytes.
SLIM_FIELDS = ("path", "verdict", "score", "threshold", "frames", "frames_with_faces", "faces",
               "frames_requested", "detector", "weights_hash", "engine", "precision", "sampling")
_SHARED = ("verdict", "detector", "weights_hash", "engine", "precision", "sampling")


def slim_row(row: dict, shared: dict | None = None) -> dict:
    """``row`` cut to :data:`SLIM_FIELDS`, ``timings.total`` and ``error.kind``; values
    repeated from row to row (verdict, detector, sampling ...) are one object in ``shared``."""
    out = {k: row[k] for k in SLIM_FIELDS if k in row}
    if shared is not None:
        for k in _SHARED:
            if k in out:
                out[k] = shared.setdefault((k, json.dumps(out[k], sort_keys=True)), out[k])
    total = (row.get("timings") or {}).get("total")
    if total is not None:
        out["timings"] = {"total": total}
    if row.get("error"):
        out["error"] = {"kind": row["error"].get("kind")}
    return out


NUMBERS = ("score", "threshold", "frames", "frames_with_faces", "faces", "frames_requested",
           "frames_missed", "nonfinite_scores", "size_bytes")


def _num(v) -> bool:
    """None or a finite number (the scan writes NaN/inf as null; a bool is no number)."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _face_ok(face) -> bool:
    box = face.get("box") if isinstance(face, dict) else None
    return (isinstance(box, list) and len(box) == 4 and all(_num(v) and v is not None for v in box)
            and _num(face.get("score")) and _num(face.get("prob"))
            and ("track" not in face or _int(face["track"]))  # the timeline groups by it
            and all(isinstance(a, list) and len(a) in (4, 5) and all(_num(v) and v is not None for v in a)
                    for a in face.get("artifact_boxes") or []))


def well_formed(row: dict) -> bool:
    """Whether a row has the types a scan writes for the fields the report computes with."""
    if not isinstance(row["path"], str) or not isinstance(row["verdict"], str):
        return False
    if not all(_num(row.get(k)) for k in NUMBERS):
        return False
    if not all(isinstance(row.get(k) or {}, dict) for k in ("error", "timings", "video", "sampling")):
        return False
    if not _num((row.get("timings") or {}).get("total")):
        return False
    if not isinstance((row.get("error") or {}).get("kind") or "", str):  # counted and shown by kind
        return False
    detail = row.get("frames_detail") or []
    return isinstance(detail, list) and all(
        isinstance(fr, dict) and all(_num(fr.get(k)) for k in ("index", "time_s", "score"))
        and isinstance(fr.get("faces") or [], list) and all(_face_ok(fc) for fc in fr.get("faces") or [])
        for fr in detail)


def read_row(f, offset: int) -> dict:
    """The full row at ``offset`` of a results file opened in binary mode."""
    f.seek(offset)
    return json.loads(f.readline())


def _distinct(rows: list[dict], key: str) -> list[str]:
    seen = dict.fromkeys(str(r.get(key)) for r in rows if r.get(key) is not None)
    return list(seen)


def _label(s) -> str:
    if isinstance(s, dict):  # e.g. {"frames": 32} or {"fps": 2.0}
        return ", ".join(f"{v} {k} per video" if k == "frames" else f"{k}={v}" for k, v in sorted(s.items()))
    return str(s)


def sampling_of(rows: list[dict]) -> str:
    """Human description of the frame sampling, from what the rows record."""
    vals = dict.fromkeys(_label(r["sampling"]) for r in rows if r.get("sampling"))
    if vals:
        return ", ".join(vals)
    req = _distinct(rows, "frames_requested")
    if req:
        return f"{', '.join(req)} frames per video"
    n = max((r.get("frames") or 0 for r in rows), default=0)
    return f"up to {n} frames per video" if n else "unknown"


def summarise(rows: list[dict], meta: dict | None = None) -> dict:
    """Header facts: counts by verdict, errors by kind, detectors, time."""
    meta = meta or {}
    counts = Counter(r.get("verdict") for r in rows)
    errors = Counter((r.get("error") or {}).get("kind") or "unknown"
                     for r in rows if r.get("verdict") == "error")
    detectors = dict.fromkeys(f"{r.get('detector')} ({r.get('weights_hash')})"
                              for r in rows if r.get("detector"))
    busy = sum(((r.get("timings") or {}).get("total") or 0.0) for r in rows)
    return {
        "videos": len(rows),
        # A verdict this version does not know (a newer scan's) is counted too, after ours.
        "counts": {**{v: counts.get(v, 0) for v in VERDICTS},
                   **{v: n for v, n in counts.items() if v not in VERDICTS}},
        "errors": dict(errors.most_common()),
        "detectors": list(detectors) or ["unknown"],
        "engines": _distinct(rows, "engine") or ["unknown"],
        "precision": _distinct(rows, "precision"),
        "thresholds": _distinct(rows, "threshold") or ["unknown"],
        "sampling": meta.get("sampling") or sampling_of(rows),
        "video_seconds": round(busy, 2),
        "wall_seconds": meta.get("wall_seconds"),
        "frames": sum(r.get("frames") or 0 for r in rows),
        "faces": sum(r.get("faces") or 0 for r in rows),
    }
