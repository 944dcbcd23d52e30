"""The report ``dfscan scan --out x.html`` writes: a quick table first, then thumbnails.

The quick report (no thumbnails) goes first, so a second interrupt while thumbnails are
decoded still leaves a complete table; the report with thumbnails then replaces it. When
that one cannot be written (e.g. the disk fills: it is the larger), the quick one stays
and its note and the scan's error line say so, why, and how to add the thumbnails.
"""
from __future__ import annotations

import errno
import logging
import shlex
from pathlib import Path

from .render import ReportOptions, write_report

log = logging.getLogger("dfscan")


class ReportWithoutThumbnails(Exception):
    """The report is written, but without the thumbnails it was asked for."""


def write_scan_report(source: Path, out: Path, notes: list[str], meta: dict, verify_hash: bool) -> None:
    """Render ``source`` into ``out``, quick then with thumbnails (``verify_hash``: see
    :class:`ReportOptions`). :class:`ReportWithoutThumbnails` when only the quick one
    could be written."""
    # Read only if the report with thumbnails never replaces it: on an interrupt, or when a
    # failure leaves no room to rewrite it with the reason (see _without_thumbnails).
    _quick(source, out, notes, meta, "no thumbnails: the report with them was not finished (interrupted, "
                                     "or it could not be written: the scan's error output says which); "
                                     f"{_command(source, out)} renders them")
    try:
        write_report(source, out, ReportOptions(verify_hash=verify_hash), {**meta, "notes": list(notes)})
    except Exception as e:  # an interrupt (BaseException) leaves the quick report as it is
        raise _without_thumbnails(source, out, notes, meta, e) from e


def _quick(source: Path, out: Path, notes: list[str], meta: dict, note: str) -> None:
    write_report(source, out, ReportOptions(thumbnails=False), {**meta, "notes": [*notes, note]})


def _command(source: Path, out: Path) -> str:
    return f"`dfscan report {shlex.quote(str(source))} --out {shlex.quote(str(out))}`"


def _without_thumbnails(source: Path, out: Path, notes: list[str], meta: dict,
                        e: Exception) -> ReportWithoutThumbnails:
    """The error for a report with thumbnails that failed, once the quick one says why.

    Its note said "interrupted" (wrong: nothing was) and the scan's error line that the
    report "failed to close", though a complete report without thumbnails was there."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
    todo = f"{'free space, then ' if full else ''}run {_command(source, out)} to add them"
    what = f"the report with thumbnails could not be written ({reason})"
    try:  # the failed one's temp file is gone, so its space usually holds this one
        _quick(source, out, notes, meta, f"no thumbnails: {what}; this one is the same without them; {todo}")
    except Exception as again:
        log.debug("report %s: the quick report keeps its note (%s)", out, again)
    return ReportWithoutThumbnails(f"html output {out} is written without thumbnails: {what}; {todo}")
