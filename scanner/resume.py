"""``--resume``: continue an interrupted scan in the same output without corrupting it.

Rules (also in the README):

* A torn last line (the process was killed mid-write) is cut off, so the file
  ends with a complete row, and that input is scanned again.
* Inputs are compared by resolved absolute path: ``clips/a.mp4`` and
  ``/data/clips/a.mp4`` are the same input.
* ``retry_errors``: rows whose verdict is ``error`` are removed (atomically) and
  their inputs scanned again, so each input still has exactly one row.
* An input whose file changed since its (non-error) row, by size or by a modification
  after the output's last row, has its rows removed the same way and is scanned again.
* A file written with another detector, weights hash, sampling, aggregation or face search is refused
  (its scores would not be comparable); rows from older versions without one
  of these fields are not checked on that field.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .config import ConfigError
from .identity import changed_since

log = logging.getLogger("dfscan")

# Row fields that must match for rows of two runs to share one file (their scores comparable).
# precision: a bf16 scan's scores move by ~1e-2 from an fp32 scan's, more than any engine's.
COMPAT_FIELDS = ("detector", "weights_hash", "sampling", "aggregation", "face_search", "precision")


def sampling_of(cfg) -> dict:
    """How frames were picked: rows of two scans are comparable only if this matches."""
    return {"fps": cfg.fps} if cfg.fps else {"frames": cfg.frames}


def face_search_of(cfg) -> dict:
    """How faces were found: rows of two scans are comparable only if this matches too (a
    resumed scan with another det_max_side or min_face mixed other faces' scores in one file).
    MTCNN's engine is left out, as the detector's is: parity holds its scores to ~1e-6."""
    out = {"det_max_side": cfg.det_max_side, "min_face": cfg.min_face, "face_prob": cfg.face_prob,
           "max_faces": cfg.max_faces, "antialias": cfg.antialias, "region_search": cfg.region_search}
    return {**out, "full_search_every": cfg.full_search_every} if cfg.region_search else out


def aggregation_of(cfg) -> dict:
    """How a video's score is made of its faces' scores: rows of two scans are comparable
    only if this matches too (a resumed scan mixed means and maxima in one file)."""
    # min_face_frames decides no_face and which tracks count; named only when not the default
    # (3), so the rows of files written before it was recorded still match a default scan.
    extra = {} if cfg.min_face_frames == 3 else {"min_face_frames": cfg.min_face_frames}
    if cfg.aggregate == "tracks":
        return {"aggregate": "tracks", **extra}
    out = {"aggregate": "frames", "frame_agg": cfg.frame_agg, "video_agg": cfg.video_agg}
    return {**out, "topk": cfg.topk, **extra} if cfg.video_agg == "topk" else {**out, **extra}


def compat_of(cfg) -> dict:
    """The :data:`COMPAT_FIELDS` a scan with ``cfg`` writes, but ``weights_hash`` (known once the
    model is loaded): what --resume and eval's JSON compare, named once."""
    return {"detector": cfg.detector, "sampling": sampling_of(cfg), "aggregation": aggregation_of(cfg),
            "face_search": face_search_of(cfg), "precision": cfg.precision}


def input_key(path: str | Path) -> str:
    """Identity of an input: its resolved absolute path."""
    return os.path.realpath(os.fspath(path))


def _last_line_end(f, size: int) -> int:
    """Offset just after the last ``\n`` of the open binary file ``f`` (0 if none)."""
    pos, chunk = size, 1 << 16
    while pos > 0:  # scan backwards for the last complete line
        start = max(0, pos - chunk)
        f.seek(start)
        nl = f.read(pos - start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0


def _last_record_end(f, size: int) -> int:
    """Offset just after the last CSV record of ``f``: the last ``\n`` outside quotes.

    A quoted field may hold newlines (a file name can), so the last ``\n`` is not always a
    record's end. Quotes inside fields are doubled, so a ``\n`` lies outside every field
    exactly when an even number of ``"`` precede it.
    """
    f.seek(0)
    quotes = sum(block.count(b'"') for block in iter(lambda: f.read(1 << 20), b""))
    pos, chunk, after = size, 1 << 16, 0  # after: quotes from pos to the end
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        block = f.read(pos - start)
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 0x22:
                after += 1
            elif block[i] == 0x0A and (quotes - after) % 2 == 0:
                return start + i + 1
        pos = start
    return 0


def cut_torn_tail(path: Path) -> int:
    """Truncate ``path`` after its last complete row (line; CSV record); returns bytes cut."""
    cut = cut_after_last_row(path, csv_records=path.suffix.lower() == ".csv")
    if cut:
        log.warning("--resume: cut a torn last row (%d bytes) from %s; that input is scanned again", cut, path)
    return cut


def cut_after_last_row(path: Path, csv_records: bool = False) -> int:
    """Truncate ``path`` after its last complete line (CSV record), fsync'ed; returns bytes cut.

    Also the live service's JSONL sink, before appending to an event file a kill left torn."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        keep = (_last_record_end if csv_records else _last_line_end)(f, size)
        if keep == size:
            return 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def read_rows(path: Path) -> Iterator[dict]:
    """Rows of a JSONL or CSV output (unparseable JSONL lines are skipped with a warning)."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            yield from csv.DictReader(f)
        return
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except ValueError:
                log.warning("--resume: %s line %d is not a JSON row; its input is scanned again", path, n)
                continue
            if isinstance(row, dict):
                yield row


def _norm(field: str, value) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, dict):  # sampling, aggregation, face_search
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def check_compatible(path: Path, row: dict, expected: dict) -> None:
    for key in COMPAT_FIELDS:
        have, want = _norm(key, row.get(key)), _norm(key, expected.get(key))
        if have is not None and want is not None and have != want:
            raise ConfigError(
                f"--resume: {path} was written with {key} {have}, this scan uses {want}; "
                f"scan into another --out file, or use the same settings")


def _check_csv_header(path: Path) -> None:
    if path.suffix.lower() != ".csv":
        return
    from .output import has_csv_columns

    if not has_csv_columns(path):
        raise ConfigError(f"--resume: {path} has other CSV columns than this version writes; "
                          "scan into another --out file")


def _rewrite_without(path: Path, drop: set[str], stale: frozenset[str] = frozenset()) -> None:
    """Atomically rewrite ``path`` without the error rows of inputs in ``drop`` and every row
    of inputs in ``stale`` (changed since their row, see :func:`changed_since`)."""
    is_csv = path.suffix.lower() == ".csv"  # the name given says the format, as for the sinks
    path = Path(os.path.realpath(path))  # a symlinked output: replace the file, not the link
    tmp = path.with_name(path.name + ".resume-tmp")
    try:
        _write_without(path, tmp, lambda r: _dropped(r, drop, stale), is_csv)
        os.replace(tmp, path)
    except BaseException as e:  # disk full, interrupted: the output is unchanged, no copy is left
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            from .output import OutputError

            raise OutputError(f"--resume: cannot rewrite {path} without the rows of the inputs scanned "
                              f"again: {e.strerror or e} (the file is unchanged)") from e
        raise


def _dropped(r, drop: set[str], stale: frozenset[str]) -> bool:
    if not (isinstance(r, dict) and isinstance(r.get("path"), str)):
        return False  # not a scan's row: kept as it is
    key = input_key(r["path"])
    return key in stale or (r.get("verdict") == "error" and key in drop)


def _write_without(path: Path, tmp: Path, dropped, is_csv: bool) -> None:
    text = {"newline": "", "encoding": "utf-8", "errors": "surrogateescape"}  # CSV: a name's own bytes
    with open(path, **text) as src, open(tmp, "w", **text) as dst:
        if is_csv:
            from .output import csv_values  # quotes a file name holding \r, as the scan wrote it

            # Records as lists, written back whole: a foreign record with more fields than
            # the header (hand-edited, two writers interleaved) made DictWriter raise, a
            # traceback; like a foreign JSONL line it is kept as it is.
            records = csv.reader(src)
            header = next(records, [])
            dst.write(csv_values(header))
            for rec in records:
                if rec and not dropped(dict(zip(header, rec))):
                    dst.write(csv_values(rec))
        else:
            for line in src:
                try:
                    r = json.loads(line)
                except ValueError:  # not ours to delete: kept, as read (it was warned about)
                    dst.write(line)
                    continue
                if not dropped(r):
                    dst.write(line)
        dst.flush()
        os.fsync(dst.fileno())


@dataclass
class ResumeState:
    """What an existing output holds: inputs done, error inputs to retry, weights and
    verdict thresholds seen."""

    path: Path
    retry: set[str] = field(default_factory=set)
    weights: set[str] = field(default_factory=set)
    thresholds: set[float] = field(default_factory=set)
    verdicts: dict[str, str] = field(default_factory=dict)  # input key -> its kept row's verdict
    sizes: dict[str, int] = field(default_factory=dict)  # input key -> its kept row's size_bytes
    written_ns: int | None = None  # the output's mtime as found: when its last row was written
    stale: set[str] = field(default_factory=set)  # inputs changed since their row: rows dropped

    @property
    def done(self):
        """Keys of the inputs whose row this output keeps (a set-like view)."""
        return self.verdicts.keys()

    def check_detector(self, weights_hash: str, threshold: float | None = None) -> None:
        """Refuse rows scored with other weights or judged at another threshold (both known
        only once the detector is built: a detector's own threshold is its card's). Why the
        threshold: rows judged at 0.5 and at 0.7 in one file gave one score two verdicts."""
        other = self.weights - {weights_hash}
        if other:
            raise ConfigError(f"--resume: {self.path} was written with weights_hash {sorted(other)[0]}, "
                              f"this scan uses {weights_hash}; scan into another --out file, or use the "
                              "same weights")
        if threshold is not None and self.thresholds - {round(float(threshold), 6)}:
            raise ConfigError(f"--resume: {self.path} was written with threshold "
                              f"{min(self.thresholds - {round(float(threshold), 6)}):g}, this scan uses "
                              f"{threshold:g}; scan into another --out file, or use the same --threshold")

    def drop_retried(self) -> None:
        """Remove the error rows of inputs that will be scanned again, and every row of an
        input changed since (:meth:`ResumedOutputs.todo`), in one atomic rewrite."""
        if self.retry or self.stale:
            _rewrite_without(self.path, self.retry, frozenset(self.stale))
        if self.retry:
            log.warning("--retry-errors: %d input(s) with an error row are scanned again", len(self.retry))


@dataclass
class ResumedOutputs:
    """The resume state of the primary output and of every JSONL/CSV secondary that exists.

    Rows go to the primary first, then to each secondary: a kill between two writes left a
    secondary a row short for good (resume read the primary only), and ``--retry-errors``
    dropped error rows from the primary only (the retried input then had two rows in the
    others). An input is now scanned unless every such output holds its row, and that row
    goes only to the outputs that lack it (:meth:`skip`), so each has one row per input."""

    states: list[ResumeState]

    def todo(self, paths: list[Path]) -> list[Path]:
        """The inputs to scan: those an output lacks, and those changed since their row."""
        self._forget_changed(paths)
        return [p for p in paths if any(input_key(p) not in s.done for s in self.states)]

    def _forget_changed(self, paths: list[Path]) -> None:
        """An input whose file is no longer the one its row describes (replaced, rewritten,
        grown) is scanned again and its rows are removed from every output (by
        :meth:`drop_retried`): its old verdict, of other bytes, was kept as the answer for
        the file now at that path, without a word. An error row is no verdict: it stays until
        ``--retry-errors`` (a missing file that arrived since, one that was still growing)."""
        changed: dict[str, str] = {}
        for p in paths:
            key = input_key(p)
            why = next((w for s in self.states if s.verdicts.get(key, "error") != "error"
                        for w in [changed_since(key, s.sizes.get(key), s.written_ns)] if w), None)
            if why:
                changed[key] = f"{p}: {why}"
        for s in self.states:
            for key in changed:
                if s.verdicts.pop(key, None) is not None:
                    s.stale.add(key)
        if changed:
            log.warning("--resume: %d input(s) changed since their row was written (e.g. %s); their "
                        "rows are removed and they are scanned again", len(changed), next(iter(changed.values())))

    def check_detector(self, weights_hash: str, threshold: float | None = None) -> None:
        for s in self.states:
            s.check_detector(weights_hash, threshold)

    def drop_retried(self) -> None:
        for s in self.states:
            s.drop_retried()

    def kept_verdicts(self, paths: list[Path], todo: list[Path]) -> Counter:
        """Verdicts of the primary's rows for those of ``paths`` this scan skips (not in
        ``todo``, :meth:`todo`'s answer): the exit code answers for every input named, and a
        resumed scan exited 0 with a fake (or an error row) written by the run it resumed."""
        skipped = {input_key(p) for p in paths} - {input_key(p) for p in todo}
        primary = self.states[0].verdicts
        return Counter(primary[k] for k in skipped if k in primary)

    def skip(self) -> dict[Path, set[str]]:
        """Per output path, the inputs whose row it already holds."""
        return {s.path: s.done for s in self.states}


def prepare_outputs(paths: list[str], expected: dict | None = None,
                    retry_errors: bool = False) -> ResumedOutputs:
    """:func:`prepare_resume` for ``paths[0]`` (the primary) and each later ``.jsonl``/``.csv``
    that exists (one added on this run gets this run's rows only)."""
    secondaries = [p for p in paths[1:] if Path(p).suffix.lower() in (".jsonl", ".csv") and os.path.isfile(p)]
    return ResumedOutputs([prepare_resume(p, expected, retry_errors) for p in [paths[0], *secondaries]])


def prepare_resume(path: str | Path, expected: dict | None = None, retry_errors: bool = False) -> ResumeState:
    """Read ``path`` for a resumed scan: cut a torn tail, check ``expected`` fields.

    Raises :class:`ConfigError` when ``path`` was written by an incompatible scan.
    Call :meth:`ResumeState.drop_retried` before appending when retrying errors.
    """
    path = Path(path)
    state = ResumeState(path)
    if not path.exists() or path.stat().st_size == 0:
        return state
    state.written_ns = path.stat().st_mtime_ns  # before the torn tail's cut moves it to now
    try:
        cut_torn_tail(path)
    except OSError as e:  # read-only, gone: the error opening it for appending would say as much
        from .output import OutputError

        raise OutputError(f"--resume: cannot write {path}: {e.strerror or e}") from e
    if path.stat().st_size == 0:  # all of it was torn (a CSV killed writing its header): new
        return state
    _check_csv_header(path)
    errors = set()
    for row in read_rows(path):
        if not row.get("path") or not isinstance(row["path"], str):  # not a scan's row (hand-edited)
            continue
        if expected:
            check_compatible(path, row, expected)
        if row.get("weights_hash"):
            state.weights.add(str(row["weights_hash"]))
        _add_threshold(state.thresholds, row.get("threshold"))
        key = input_key(row["path"])
        if retry_errors and row.get("verdict") == "error":
            errors.add(key)
        else:
            state.verdicts[key] = str(row.get("verdict"))
            _add_size(state.sizes, key, row.get("size_bytes"))
    state.retry = errors - state.done
    return state


def _add_size(sizes: dict[str, int], key: str, value) -> None:
    """A row's size_bytes (a JSON number, or CSV text); none for a file that was missing."""
    try:
        sizes[key] = int(value)
    except (TypeError, ValueError):
        sizes.pop(key, None)


def _add_threshold(seen: set[float], value) -> None:
    """A row's threshold (a JSON number, or CSV text), rounded as rows write scores."""
    try:
        t = float(value)
    except (TypeError, ValueError):  # none recorded (older rows), or a hand edit
        return
    if math.isfinite(t):
        seen.add(round(t, 6))


def done_inputs(path: str | Path) -> set[str]:
    """Input keys present in an output, read-only (no repair, no checks)."""
    path = Path(path)
    if not path.exists():
        return set()
    return {input_key(r["path"]) for r in read_rows(path) if r.get("path") and isinstance(r["path"], str)}
