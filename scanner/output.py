"""Result sinks shared by batch scans and live streams: JSONL, CSV, HTML report.

Every row is written, flushed and fsync'ed as its video finishes, so a crash or
kill loses nothing already finished. NaN/Inf (JSON has no such numbers) become
null instead of losing the row. Failure policy (one place, see :class:`SinkSet`):
the *primary* output failing stops the scan with :class:`OutputError`; a
secondary sink that fails is reported, counted and disabled, and the scan ends
with a non-zero exit code.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Iterable

from engines.errors import DfscanError

from .durable import DurableFile, make_parent
from .metrics import SINK_EVENTS, SINK_FAILURES

log = logging.getLogger("dfscan")

CSV_COLUMNS = [
    "path", "verdict", "score", "threshold", "frames", "frames_with_faces", "faces",
    "frames_requested", "frames_missed", "nonfinite_scores", "orientation_deg",
    "detector", "weights_hash", "engine", "precision", "sampling", "aggregation", "face_search",
    "size_bytes", "sha256",
    "error_kind", "error",
    "decode_s", "detect_s", "align_s", "infer_s", "total_s",
]


class OutputError(DfscanError):
    """An output file cannot be written (disk full, permission, folder deleted)."""

    exit_code = 4  # scanner.cli.EXIT_OUTPUT


class Sink:
    """``write(row)`` one finished row, ``close()`` at the end."""

    name = "sink"
    path: Path | None = None

    def write(self, row: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def finite(obj):
    """``obj`` with every NaN/Inf float replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_line(row: dict) -> str:
    """One JSON line for ``row`` (non-finite numbers as null), newline included."""
    try:
        line = json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:  # NaN/Inf from a misbehaving model: keep the row, null them
        line = json.dumps(finite(row), ensure_ascii=False, allow_nan=False) + "\n"
    # A non-UTF-8 file name is a str with lone surrogates (os.fsdecode), which UTF-8 cannot
    # encode: the write failed and stopped the scan. Written as the JSON escape \udcXX
    # instead (surrogates only occur inside JSON strings), it reads back as the same name.
    line = line.encode("utf-8", "backslashreplace").decode("utf-8")
    # U+2028, U+2029 and U+0085 end a line for str.splitlines() and other Unicode-aware
    # readers: a name holding one split its row into two lines that are not JSON. Escaped
    # (they too occur only inside JSON strings), the row reads back as the same value.
    return line.translate(_LINE_BREAKS) if "\u2028" in line or "\u2029" in line or "\x85" in line else line


_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


class JsonlSink(Sink):
    """One JSON object per line; ``stream`` (e.g. stdout) instead of a file path.

    ``reopen_on_rotate``: see :class:`DurableFile` (the live service's event file only).
    """

    name = "jsonl"

    def __init__(self, path: str | Path | None = None, append: bool = False, stream: IO[str] | None = None,
                 reopen_on_rotate: bool = False):
        self.path = Path(path) if path is not None else None
        self._file = DurableFile(self.path, append, reopen_on_rotate=reopen_on_rotate) \
            if self.path is not None else None
        self._stream = stream if stream is not None else sys.stdout

    def write(self, row: dict) -> None:
        if self._file is not None:
            self._file.append(json_line(row))
        else:
            self._stream.write(json_line(row))
            self._stream.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def sampling_label(row: dict, key: str = "sampling") -> str | None:
    """``row[key]`` (``sampling``, ``aggregation``, ``face_search``) as ``k=v,...``: the text
    --resume compares."""
    s = row.get(key)
    if not isinstance(s, dict):
        return s
    return ",".join(f"{k}={v}" for k, v in sorted(s.items()))


def flat_row(row: dict) -> dict:
    t = row.get("timings") or {}
    err = row.get("error") or {}
    out = {k: row.get(k) for k in CSV_COLUMNS}
    out.update(error_kind=err.get("kind"), error=err.get("message"), sampling=sampling_label(row),
               aggregation=sampling_label(row, "aggregation"), face_search=sampling_label(row, "face_search"),
               decode_s=t.get("decode"), detect_s=t.get("detect"), align_s=t.get("align"),
               infer_s=t.get("infer"), total_s=t.get("total"))
    # Newlines stay (a file name may hold one): the csv module quotes such a field, and
    # resume finds a torn record's start by the quotes (scanner.resume._last_record_end).
    return finite(out)


def csv_record(fieldnames: list[str], row: dict | None) -> str:
    r"""One CSV record of ``row`` (the header for None), ending in ``\n``.

    The csv module quotes a field holding a character of the line terminator only: with
    ``\n`` a file name holding ``\r`` went out bare and every reader split the record
    there (resume re-scanned it each run). Formatted with ``\r\n``, such a field is
    quoted; the record's own terminator is then turned back into ``\n``.
    """
    return csv_values(list(fieldnames) if row is None else [row.get(k) for k in fieldnames])


def csv_values(values: list) -> str:
    r"""One CSV record of the field ``values`` (None as empty), quoted as :func:`csv_record` says."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(values)
    return buf.getvalue()[:-2] + "\n"


def has_csv_columns(path: Path) -> bool:
    """Whether the CSV at ``path`` has this version's header (``CSV_COLUMNS``)."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return next(csv.reader(f), []) == CSV_COLUMNS


def _check_header(path: Path) -> None:
    """Refuse to append to a CSV with other columns (an older version's): the rows would sit
    under the wrong names. ``--resume`` checks the primary output; this covers every CSV."""
    if not has_csv_columns(path):
        raise OutputError(f"cannot append to {path}: it has other CSV columns than this version "
                          "writes; use another --out file")


class CsvSink(Sink):
    name = "csv"

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        new = not (append and self.path.exists() and self.path.stat().st_size > 0)
        if not new:
            _check_header(self.path)
        # surrogateescape: a non-UTF-8 file name is written as its own bytes (CSV has no
        # escape for it); scanner.resume reads it back the same way.
        self._file = DurableFile(self.path, append, errors="surrogateescape")
        if new:
            self._file.append(self._record(None))

    def _record(self, row: dict | None) -> str:
        """One CSV record (the header for None), formatted in memory to be written whole."""
        return csv_record(CSV_COLUMNS, None if row is None else flat_row(row))

    def write(self, row: dict) -> None:
        self._file.append(self._record(row))

    def close(self) -> None:
        self._file.close()


class HtmlSink(Sink):
    """The HTML report of :mod:`scanner.report`, rendered on close from the scan's JSONL.

    Rows are not kept: the report is rendered from ``source`` (the JSONL output;
    :func:`order_outputs` adds ``<name>.jsonl`` next to a lone ``.html``), so a
    resumed scan's report shows every row of the file, and an interrupted scan
    still gets one (``close`` runs on SIGINT/SIGTERM). A quick report without
    thumbnails is written first, so a second interrupt while thumbnails are being
    decoded still leaves a complete table.
    """

    name = "html"

    def __init__(self, path: str | Path, append: bool = False, source: str | Path | None = None):
        self.path = Path(path)
        self.source = Path(source) if source is not None else self.path.with_suffix(".jsonl")
        make_parent(self.path)
        self._append, self._t0 = append, time.perf_counter()
        self.notes: list[str] = []  # shown in the report's header (see SinkSet._warn_reports)

    def write(self, row: dict) -> None:
        pass  # the JSONL sink writes the row; the report is rendered from that file

    def close(self) -> None:
        from .report.scan_report import write_scan_report

        meta = {} if self._append else {"wall_seconds": time.perf_counter() - self._t0}
        if not self.source.exists():
            raise FileNotFoundError(f"results file {self.source} to render the report from is missing")
        # The scan has just hashed these files: check sizes only, unless resumed (the
        # earlier runs' rows are of files this run did not read, which may have changed).
        write_scan_report(self.source, self.path, self.notes, meta, verify_hash=self._append)


def render_html(rows: list[dict]) -> str:
    """A self-contained report of ``rows`` held in memory (see :mod:`scanner.report`)."""
    from .report import render_html as render

    return render(rows)


def link_reports(sinks: list[Sink]) -> None:
    """Point every :class:`HtmlSink` at the first JSONL output (the rows it renders)."""
    jsonl = next((s.path for s in sinks if isinstance(s, JsonlSink) and s.path is not None), None)
    for s in sinks:
        if isinstance(s, HtmlSink) and jsonl is not None:
            s.source = jsonl


def with_report_source(paths: list[str]) -> list[str]:
    """``paths`` plus ``<name>.jsonl`` for the first ``.html`` when no JSONL output is given.

    It goes last, so a ``.csv`` the user named stays the primary output."""
    html = next((p for p in paths if Path(p).suffix.lower() == ".html"), None)
    if html is None or any(Path(p).suffix.lower() == ".jsonl" for p in paths):
        return paths
    return paths + [str(Path(html).with_suffix(".jsonl"))]


SINKS = {".jsonl": JsonlSink, ".csv": CsvSink, ".html": HtmlSink}
PRIMARY_SUFFIXES = (".jsonl", ".csv")


def _reason(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def open_sink(path: str | Path, append: bool = False) -> Sink:
    """The sink for ``path``'s suffix; :class:`OutputError` if it cannot be created."""
    text = os.fspath(path)
    if text.endswith(("/", os.sep)):  # Path() drops it: `--out r.jsonl/` wrote the file r.jsonl
        raise OutputError(f"cannot write {text}: names a directory, and a file name is needed here")
    suffix = Path(path).suffix.lower()
    if suffix not in SINKS:
        raise ValueError(f"unsupported output type {suffix!r} (use .jsonl, .csv or .html)")
    try:
        return SINKS[suffix](path, append=append)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_reason(e)}") from e


def writable(path: str | Path) -> Path:
    """``path``, once a file could be created beside it; else a one-line :class:`DfscanError`
    (exit 2: nothing was done yet). For commands that write their output only after long
    work (eval, probe fit, separability, synth, bench): an --out under a file, a directory
    as a file, a read-only or missing place was an OSError traceback once the work was done."""
    import tempfile

    text = os.fspath(path)
    # Path() drops a trailing "/": `--out ev_dir/` wrote a file named ev_dir.
    if text.endswith(("/", os.sep)) or os.path.basename(text) in (".", ".."):
        raise DfscanError(f"cannot write {text}: names a directory, and a file name is needed here")
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        make_parent(path)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        where = f" ({e.filename})" if e.filename and e.filename != str(path) else ""
        raise DfscanError(f"cannot write {path}: {_reason(e)}{where}") from e
    return path


def order_outputs(paths: Iterable[str | Path]) -> list[str]:
    """Outputs with the primary (first .jsonl/.csv, else the first given) first.

    The same file named twice is a :class:`OutputError` (two writers would interleave).
    """
    paths = [str(p) for p in paths]
    seen: set[str] = set()
    for p in paths:
        try:  # hard links too: one file under two names
            st = os.stat(p)
            key = (st.st_dev, st.st_ino) if os.path.isfile(p) else os.path.realpath(p)
        except OSError:
            key = os.path.realpath(p)
        if key in seen:
            raise OutputError(f"--out {p} is given twice")
        seen.add(key)
    if not paths:
        return []
    paths = with_report_source(paths)  # a lone .html is rendered from a JSONL written next to it
    primary = next((p for p in paths if Path(p).suffix.lower() in PRIMARY_SUFFIXES), paths[0])
    return [primary] + [p for p in paths if p != primary]


class SinkSet:
    """Fan a row out to several sinks; the first one is the primary output.

    A primary that fails raises :class:`OutputError` (the caller stops the scan);
    a secondary that fails is logged, counted, disabled and listed in ``failures``.
    """

    def __init__(self, sinks: Iterable[Sink], skip: dict[Path, set[str]] | None = None):
        self.sinks = list(sinks)
        self.primary = self.sinks[0] if self.sinks else None
        self.failures: list[str] = []
        self.skip = skip or {}  # resumed: output path -> inputs whose row it already holds

    def _failed(self, sink: Sink, e: BaseException, what: str) -> None:
        SINK_FAILURES.labels(sink=sink.name).inc()
        where = f"{sink.name} output {sink.path}" if sink.path else f"{sink.name} output"
        if sink is self.primary:
            raise OutputError(f"cannot {what} {where}: {_reason(e)}") from e
        from .report.scan_report import ReportWithoutThumbnails

        if isinstance(e, ReportWithoutThumbnails):  # written, only the thumbnails are missing
            msg = str(e)
        else:
            msg = f"{where} failed to {what} and is disabled: {_reason(e)}" + self._warn_reports(sink)
        log.error(msg)
        self.failures.append(msg)

    def _warn_reports(self, failed: Sink) -> str:
        """Mark the HTML reports rendered from ``failed`` (a secondary JSONL that stopped
        taking rows, e.g. on a full disk) as incomplete. They showed the rows written before
        the failure as the whole scan ("3 videos" of 6 scanned), without a word."""
        reports = [s for s in self.sinks if isinstance(s, HtmlSink) and s.source == failed.path]
        for s in reports:
            s.notes.append(f"incomplete: {failed.path}, the results file this report is rendered from, "
                           "failed during the scan and lacks the rows after that (the scan's primary "
                           "output holds them)")
        return "".join(f"; the report {s.path} rendered from it is incomplete" for s in reports)

    def write(self, row: dict) -> None:
        from .resume import input_key

        key = input_key(row["path"]) if self.skip else None
        for sink in list(self.sinks):
            if key is not None and key in self.skip.get(sink.path, ()):
                continue  # rescanned for another output that lacked its row: no duplicate here
            try:
                sink.write(row)
                SINK_EVENTS.labels(sink=sink.name).inc()
            except Exception as e:  # the scan and the other sinks go on (unless primary)
                self.sinks.remove(sink)
                self._failed(sink, e, "write")

    def close(self, unscanned: int = 0) -> None:
        """Close every sink; re-raise the primary's failure after closing the others.

        ``unscanned``: inputs the scan stopped before (a signal, the primary failing). The
        report showed the rows written as the whole scan ("4 videos" of 10 named), unmarked."""
        for s in self.sinks if unscanned > 0 else ():
            if isinstance(s, HtmlSink):
                s.notes.append(f"incomplete: the scan stopped before {unscanned} of its inputs were scanned "
                               "(interrupted, standard output closed, or an output failed); rerun it with --resume "
                               "for their rows")
        err = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                try:
                    self._failed(sink, e, "close")
                except OutputError as oe:
                    err = oe
        self.sinks = []
        if err is not None:
            raise err


def open_outputs(paths: Iterable[str | Path], append: bool = False,
                 skip: dict[Path, set[str]] | None = None) -> SinkSet:
    """A :class:`SinkSet` for ``--out`` paths (primary first, see :func:`order_outputs`);
    ``skip``: see :meth:`scanner.resume.ResumedOutputs.skip`."""
    opened: list[Sink] = []
    try:
        for p in order_outputs(paths):
            opened.append(open_sink(p, append=append))
        link_reports(opened)
    except BaseException:
        for s in opened:
            s.close()
        raise
    return SinkSet(opened, skip)


def done_paths(path: str | Path) -> set[str]:
    """Resolved input paths already present in an existing JSONL or CSV output."""
    from .resume import done_inputs

    return done_inputs(path)
