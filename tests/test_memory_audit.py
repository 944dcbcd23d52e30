"""Memory audit: what a report holds must not grow with what each row holds, nor hold its table.

Growth is measured structurally (tracemalloc, chunk contents), never by timing.
"""
from __future__ import annotations

import gc
import io
import json
import tracemalloc
from pathlib import Path

from scanner.report import render
from scanner.report.render import ReportOptions, write_report
from scanner.report.rows import index_rows


def _row(i: int, tracks: int = 0) -> dict:
    """A scan row as written (frame aggregation), with ``tracks`` face tracks (a long video's)."""
    r = {"path": f"/data/archive/clips/video_{i:07d}.mp4", "size_bytes": 123456 + i, "sha256": "ab" * 32,
         "verdict": "fake" if i % 7 == 0 else "real", "score": round(0.9 if i % 7 == 0 else 0.1, 6),
         "threshold": 0.5, "frames": 32, "frames_with_faces": 30, "faces": 31, "frames_requested": 32,
         "frames_missed": 0, "nonfinite_scores": 0, "orientation_deg": 0, "detector": "meso4_df",
         "weights_hash": "0123456789ab", "engine": "eager", "precision": "fp32", "error": None,
         "video": {"width": 1920, "height": 1080, "codec": "h264", "frames_total": 1500, "duration_s": 60.0,
                   "decode_errors": 0, "frames_corrupt": 0, "seeks": 10, "frames_refetched": 0,
                   "deinterlaced": 0, "hdr": None, "tone_mapped": 0, "timing": "pts", "streams": 1,
                   "stream_index": 0},
         "timings": {"decode": 0.1, "detect": 0.2, "align": 0.01, "infer": 0.05, "aggregate": 0.001, "total": 0.4},
         "sampling": {"frames": 32}, "aggregation": {"aggregate": "tracks"},
         "frames_detail": [{"index": k, "time_s": float(k), "score": 0.1, "faces": []} for k in range(32)]}
    r["tracks"] = [{"id": t, "frames": 3, "first_frame": t, "last_frame": t + 2, "score": 0.1}
                   for t in range(tracks)]
    return r


def _jsonl(n: int, tracks: int) -> bytes:
    return "".join(json.dumps(_row(i, tracks)) + "\n" for i in range(n)).encode()


def _traced(fn) -> tuple[int, int]:
    """(bytes still held, peak bytes) allocated while ``fn()`` runs; its result kept alive meanwhile."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = fn()  # noqa: F841 - held so that what it retains is counted
        gc.collect()
        return tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()


def test_report_index_holds_the_same_per_row_whatever_the_row_holds():
    """index_rows kept each whole row less frames_detail: ~250 bytes more per face track, so a
    report of long videos (many tracks a row) held gigabytes over 100,000 rows; now only what the
    header, table and order read stays (each section re-reads its own full row)."""
    n = 600
    plain, _ = _traced(lambda: index_rows(io.BytesIO(_jsonl(n, 0))))
    tracked, _ = _traced(lambda: index_rows(io.BytesIO(_jsonl(n, 150))))
    assert tracked < 1.3 * plain, (plain // n, tracked // n)
    entries, bad = index_rows(io.BytesIO(_jsonl(3, 5)))
    assert bad == 0 and all("tracks" not in r and "frames_detail" not in r for _, r in entries)


def test_report_table_is_written_in_pieces():
    """The overview table was one string (all rows), then copied into the header's chunk: the
    whole page's table sat in memory ~3 times while the report was written."""
    rows = [_row(i) for i in range(1100)]
    slim = [{k: v for k, v in r.items() if k != "frames_detail"} for r in rows]
    chunks = render._chunks(slim, rows.__getitem__, ReportOptions(thumbnails=False), {}, None, None)
    per_chunk = [c.count("<tr data-id=") for c in chunks]
    assert sum(per_chunk) == len(rows)
    assert max(per_chunk) <= 500


def test_report_peak_does_not_grow_with_what_each_row_holds(tmp_path: Path):
    """End to end (the scan's --out x.html and dfscan report): the peak per row is the same for
    rows of 150 face tracks as for rows of none."""
    peaks = {}
    for tracks in (0, 150):
        src = tmp_path / f"r{tracks}.jsonl"
        src.write_bytes(_jsonl(400, tracks))
        out = tmp_path / f"r{tracks}.html"
        _, peaks[tracks] = _traced(lambda: write_report(src, out, ReportOptions(thumbnails=False)))
        assert out.read_text(encoding="utf-8").count("<tr data-id=") == 400
    assert peaks[150] < 1.3 * peaks[0], peaks
