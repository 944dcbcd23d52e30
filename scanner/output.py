"""Result sinks: JSONL (always one row per input), CSV, HTML report.

Rows are flushed as each video finishes, so an interrupted scan loses nothing
already finished. Sinks are isolated: one that fails is disabled and counted,
the others (and the scan) go on.
"""
from __future__ import annotations

import csv
import html
import json
import logging
import math
import os
from pathlib import Path
from typing import Iterable

from .metrics import SINK_ERRORS

log = logging.getLogger("dfscan")

CSV_COLUMNS = [
    "path", "verdict", "score", "threshold", "frames", "frames_with_faces", "faces",
    "detector", "weights_hash", "engine", "size_bytes", "sha256", "error_kind", "error",
    "decode_s", "detect_s", "align_s", "infer_s", "total_s",
]


class Sink:
    name = "sink"

    def write(self, row: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    name = "jsonl"

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w", encoding="utf-8")

    def write(self, row: dict) -> None:
        try:
            line = json.dumps(row, ensure_ascii=False, allow_nan=False)
        except ValueError:  # NaN/Inf from a misbehaving model: keep the row, null them
            line = json.dumps(finite(row), ensure_ascii=False, allow_nan=False)
        self._f.write(line + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())  # a finished video survives a crash or kill

    def close(self) -> None:
        self._f.close()


def finite(obj):
    """``obj`` with every NaN/Inf float replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def flat_row(row: dict) -> dict:
    t = row.get("timings") or {}
    err = row.get("error") or {}
    out = {k: row.get(k) for k in CSV_COLUMNS}
    out.update(error_kind=err.get("kind"), error=err.get("message"),
               decode_s=t.get("decode"), detect_s=t.get("detect"), align_s=t.get("align"),
               infer_s=t.get("infer"), total_s=t.get("total"))
    return out


class CsvSink(Sink):
    name = "csv"

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not (append and self.path.exists() and self.path.stat().st_size > 0)
        self._f = open(self.path, "a" if append else "w", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=CSV_COLUMNS)
        if new:
            self._w.writeheader()

    def write(self, row: dict) -> None:
        self._w.writerow(flat_row(row))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class HtmlSink(Sink):
    """Collects rows and writes a self-contained HTML table on close."""

    name = "html"

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.rows: list[dict] = []

    def write(self, row: dict) -> None:
        self.rows.append(flat_row(row))

    def close(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(render_html(self.rows), encoding="utf-8")


def render_html(rows: list[dict]) -> str:
    cols = ["path", "verdict", "score", "frames_with_faces", "faces", "detector", "error", "total_s"]
    colour = {"fake": "#fdd", "real": "#dfd", "no_face": "#eee", "error": "#fec"}
    body = []
    for r in rows:
        cells = "".join(
            f"<td>{html.escape(f'{r[c]:.3f}' if isinstance(r[c], float) else str(r[c] or ''))}</td>"
            for c in cols)
        body.append(f'<tr style="background:{colour.get(r["verdict"], "#fff")}">{cells}</tr>')
    head = "".join(f"<th>{c}</th>" for c in cols)
    return ("<!doctype html><meta charset=utf-8><title>dfscan report</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ccc}"
            "</style><h1>dfscan report</h1>"
            f"<p>{len(rows)} videos</p><table><tr>{head}</tr>{''.join(body)}</table>")


SINKS = {".jsonl": JsonlSink, ".csv": CsvSink, ".html": HtmlSink}


def open_sink(path: str | Path, append: bool = False) -> Sink:
    suffix = Path(path).suffix.lower()
    if suffix not in SINKS:
        raise ValueError(f"unsupported output type {suffix!r} (use .jsonl, .csv or .html)")
    return SINKS[suffix](path, append=append)


class SinkSet:
    """Fan a row out to several sinks; a failing sink is logged, counted, dropped."""

    def __init__(self, sinks: Iterable[Sink]):
        self.sinks = list(sinks)

    def write(self, row: dict) -> None:
        for sink in list(self.sinks):
            try:
                sink.write(row)
            except Exception as e:  # isolate: the scan and other sinks go on
                SINK_ERRORS.labels(sink=sink.name).inc()
                log.error("sink %s failed and is disabled: %s", sink.name, e)
                self.sinks.remove(sink)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                SINK_ERRORS.labels(sink=sink.name).inc()
                log.error("sink %s failed to close: %s", sink.name, e)


def done_paths(path: str | Path) -> set[str]:
    """Paths already present in an existing JSONL or CSV output (for --resume)."""
    p = Path(path)
    if not p.exists():
        return set()
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as f:
            return {r["path"] for r in csv.DictReader(f) if r.get("path")}
    done = set()
    with open(p, encoding="utf-8") as f:
        for line in f:
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a crash: that input is redone
    return done
