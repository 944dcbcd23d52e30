"""Self-contained HTML report of scan results.

One file, no network request of any kind: CSS, JavaScript and SVG are inline,
images are ``data:`` URIs, and a Content-Security-Policy meta tag forbids the
page from loading or sending anything else. The report is rendered from result
rows (a JSONL file), so it can be regenerated at any time, with or without the
videos.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import os
import unicodedata
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Callable, Iterator

from engines.errors import DfscanError
from engines.files import remove_stale_temps, temp_beside

from .. import __version__
from ..aggregate import score_text
from ..durable import make_parent
from ..terminal import HIDDEN, terminal_safe
from .rows import VERDICTS, index_rows, read_row, slim_row, summarise, unreadable_text
from .thumbnails import THUMB_PX, Evidence, Thumb, evidence
from .timeline import timeline_svg

log = logging.getLogger("dfscan")
ASSETS = Path(__file__).with_name("assets")


def csp(script: str, connect_self: bool = False) -> str:
    """The Content-Security-Policy of a self-contained page whose only script is ``script``:
    that script runs by its SHA-256, nothing else does. With 'unsafe-inline' any script or
    event-handler attribute (``<img onerror=...>``) that an escaping slip let into the page
    would have run too."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return ("default-src 'none'; " + ("connect-src 'self'; " if connect_self else "")
            + f"img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "form-action 'none'; base-uri 'none'")


ORDER = {"fake": 0, "error": 1, "no_face": 2, "real": 3}
def shown(text) -> str:
    """``text`` as HTML, each :data:`scanner.terminal.HIDDEN` character (what a browser hides
    or shows as something else) as its marked Python escape
    (``\\u202e``, ``\\n``, ``\\udcff``), so a name reads as exactly one name."""
    text = str(text)
    if not HIDDEN.search(text):  # the usual name: nothing to mark
        return escape(text)
    out, last = [], 0
    for m in HIDDEN.finditer(text):
        ch = m.group()
        what = f"byte 0x{ord(ch) - 0xDC00:02X}, not UTF-8" if "\udc80" <= ch <= "\udcff" else \
            f"U+{ord(ch):04X} {unicodedata.name(ch, 'control or invisible character')}"
        out.append(f'{escape(text[last:m.start()])}<span class="esc" title="{what}">'
                   f'{ch.encode("unicode_escape").decode("ascii")}</span>')
        last = m.end()
    return "".join(out) + escape(text[last:])


@dataclass
class ReportOptions:
    """How a report is rendered (``dfscan report`` flags)."""

    top_k: int = 4  # face thumbnails per video
    open_sections: int = 50  # sections after the first N start collapsed
    video_root: str | None = None  # where the videos are now (see thumbnails.remap)
    verify_hash: bool = True  # SHA-256 of each video against its row before decoding
    thumbnails: bool = True
    explain: str | None = None  # "gradcam"
    weights: str | None = None  # detector weights for --explain (default: packaged)
    device: str = "cpu"
    thumb_px: int = THUMB_PX


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _fmt(v, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _score(r: dict) -> str:
    """The row's score as it reads on its verdict's side of the threshold (:func:`score_text`)."""
    score = r.get("score")
    return score_text(score, r.get("threshold")) if isinstance(score, (int, float)) else _fmt(score)


def _threshold(thr) -> str:
    """A threshold as written (0.5, a probe's 0.4371829), not to 3 decimals: the score beside
    it must read on its verdict's side of it (see :func:`_score`)."""
    return "–" if thr is None else f"{thr:.9g}"


def ordered(rows: list[dict]) -> list[tuple[int, dict]]:
    """Sections order: fakes (highest score first), errors, no face, reals."""
    return sorted(enumerate(rows), key=lambda ir: (ORDER.get(ir[1].get("verdict"), 9),
                                                   -(ir[1].get("score") or 0.0), ir[0]))


def _header(s: dict, meta: dict, explain_note: str | None) -> str:
    counts = "".join(f'<span><span class="badge {escape(v)}">{escape(v.replace("_", " "))}</span> '
                     f'<b class="count-{escape(v)}">{n}</b></span>' for v, n in s["counts"].items())
    errs = ", ".join(f"{shown(k)}: {n}" for k, n in s["errors"].items()) or "none"
    wall = meta.get("wall_seconds")
    time_s = f'{s["video_seconds"]:.1f} s summed over videos' + (f", {wall:.1f} s wall" if wall else "")
    items = [("generated", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
             ("dfscan", meta.get("version") or __version__),
             ("detector (weights)", ", ".join(s["detectors"])),
             ("engine", ", ".join(s["engines"] + s["precision"])),
             ("threshold", ", ".join(s["thresholds"])), ("sampling", s["sampling"]),
             ("videos", f'{s["videos"]} ({s["frames"]} frames, {s["faces"]} faces)'),
             ("scan time", time_s), ("results", meta.get("source") or "–"),
             ("errors by kind", errs)]
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{shown(v)}</dd>" for k, v in items)
    notes = "".join(f'<p class="note">{shown(n)}</p>' for n in (meta.get("notes") or []) + [explain_note] if n)
    return (f'<header><div><h1>dfscan report <small>{s["videos"]} videos</small></h1>'
            f'<dl class="meta">{dl}</dl><div class="counts">{counts}</div>{notes}</div></header>')


TABLE_ROWS_PER_CHUNK = 500


def _table(items: list[tuple[int, dict]]) -> Iterator[str]:
    """The overview table in pieces of :data:`TABLE_ROWS_PER_CHUNK` rows. Why pieces: made as
    one string (then copied into the header's), 100,000 rows held ~3 copies of a 70 MB table."""
    head = ('<th data-type="str">path</th><th data-type="str">verdict</th><th data-type="num">score</th>'
            '<th data-type="num">frames</th><th data-type="num">faces</th><th data-type="str">error</th>'
            '<th data-type="num">time s</th>')
    other = sorted({str(r.get("verdict")) for _, r in items} - set(VERDICTS))  # e.g. a newer dfscan's
    boxes = "".join(f'<label><input type="checkbox" class="verdict-filter" value="{escape(v)}" checked> '
                    f'{escape(v.replace("_", " "))}</label>' for v in [*VERDICTS, *other])
    yield (f'<section class="overview"><div class="controls"><b>show</b>{boxes}'
           '<input type="search" class="text-filter" placeholder="filter by path" aria-label="filter by path">'
           f'<span><span class="shown-count">{len(items)}</span> of {len(items)} shown</span></div>'
           f'<table class="videos"><thead><tr>{head}</tr></thead><tbody>')
    for k in range(0, len(items), TABLE_ROWS_PER_CHUNK):
        yield "".join(_table_row(i, r) for i, r in items[k:k + TABLE_ROWS_PER_CHUNK])
    yield "</tbody></table></section>"


def _table_row(i: int, r: dict) -> str:
    v, err = r.get("verdict"), (r.get("error") or {}).get("kind") or ""
    score, total = r.get("score"), (r.get("timings") or {}).get("total")
    return (f'<tr data-id="v{i}" data-verdict="{escape(str(v))}" data-path="{escape(str(r["path"]))}">'
            f'<td class="path"><a href="#v{i}">{shown(r["path"])}</a></td>'
            f'<td data-v="{ORDER.get(v, 9)}{escape(str(v))}"><span class="badge {escape(str(v))}">{escape(str(v))}</span></td>'
            f'<td class="num" data-v="{"" if score is None else score}">{_score(r)}</td>'
            f'<td class="num">{r.get("frames_with_faces", 0)}/{r.get("frames", 0)}</td>'
            f'<td class="num">{r.get("faces", 0)}</td><td>{shown(err)}</td>'
            f'<td class="num" data-v="{"" if total is None else total}">{_fmt(total, 2)}</td></tr>')


def _thumb(t: Thumb, threshold=None) -> str:
    """``threshold``: the row's, so a face's P(fake) reads on its side of it (see :func:`_score`):
    a face at 0.4996 read "0.500" beside "threshold 0.5"."""
    rects = [f'<rect class="facebox" x="{t.face_box[0]}" y="{t.face_box[1]}" '
             f'width="{round(t.face_box[2] - t.face_box[0], 1)}" height="{round(t.face_box[3] - t.face_box[1], 1)}"/>']
    for x1, y1, x2, y2, sc in t.artifact_boxes:
        rects.append(f'<rect class="artifact" x="{x1}" y="{y1}" width="{round(x2 - x1, 1)}" '
                     f'height="{round(y2 - y1, 1)}"><title>ADM artifact box, confidence '
                     f'{"not recorded" if sc != sc else f"{sc:.2f}"}</title></rect>')  # NaN: none in the row
    fig = (f'<figure class="thumb"><div class="frame" style="width:{t.width}px;height:{t.height}px">'
           f'<img src="{t.uri}" width="{t.width}" height="{t.height}" loading="lazy" '
           f'alt="face at {t.time_s:.2f} s"><svg viewBox="0 0 {t.width} {t.height}" '
           f'preserveAspectRatio="none">{"".join(rects)}</svg></div>'
           f'<figcaption>t={t.time_s:.2f} s · frame {t.frame_index} · P(fake) {score_text(t.score, threshold)}'
           f'{f" · {len(t.artifact_boxes)} artifact box(es)" if t.artifact_boxes else ""}</figcaption></figure>')
    if not t.cam:
        return fig
    if not t.cam.get("uri"):
        return f'<div class="pair">{fig}<p class="note">Grad-CAM: {shown(t.cam.get("note") or "")}</p></div>'
    note = f'<br>{shown(t.cam["note"])}' if t.cam.get("note") else ""
    cam = (f'<figure class="cam"><img src="{t.cam["uri"]}" loading="lazy" alt="Grad-CAM heatmap">'
           f'<figcaption>Grad-CAM · recomputed P(fake) {t.cam["p_fake"]:.3f}{note}</figcaption></figure>')
    return f'<div class="pair">{fig}{cam}</div>'


def _losses(r: dict) -> str:
    """What the verdict had to do without: frames no decoder pass produced and faces the
    detector scored NaN/inf (the row counts both so a loss is never silent; nor is the page)."""
    lost = []
    if r.get("frames_missed"):
        damaged = (r.get("video") or {}).get("frames_corrupt")
        why = f" ({damaged} only decoded damaged: the file is damaged)" if damaged else ""
        lost.append(f'{r["frames_missed"]} of {_fmt(r.get("frames_requested"))} requested frames '
                    f"could not be decoded{why}")
    if r.get("nonfinite_scores"):
        lost.append(f'{r["nonfinite_scores"]} face score(s) NaN/inf, left out of the verdict')
    return f'<p class="note losses">{escape("; ".join(lost))}</p>' if lost else ""


def _section(i: int, r: dict, ev: Evidence | None, is_open: bool) -> str:
    v = escape(str(r.get("verdict")))
    vid = r.get("video") or {}
    facts = [f'{r.get("frames_with_faces", 0)}/{r.get("frames", 0)} frames with faces',
             f'{r.get("faces", 0)} faces', f'threshold {_threshold(r.get("threshold"))}']
    if vid:
        facts.append(f'{vid.get("width")}x{vid.get("height")} {vid.get("codec")}, '
                     f'{vid.get("frames_total")} frames spanning {vid.get("duration_s")} s')
    if r.get("sha256"):
        facts.append(f'sha256 {str(r["sha256"])[:16]}…')
    parts = [f'<details class="video {v}" id="v{i}" data-verdict="{v}"{" open" if is_open else ""}>'
             f'<summary><span class="badge {v}">{v}</span><span class="score">{_score(r)}</span>'
             f'{shown(r["path"])}</summary><p class="facts">{shown(" · ".join(facts))}</p>']
    parts.append(_losses(r))
    if r.get("error"):
        e = r["error"]
        parts.append(f'<p class="errmsg"><b>{shown(e.get("kind"))}</b>: {shown(e.get("message"))}</p>')
    svg = timeline_svg(r, r.get("threshold"))
    if svg:
        parts.append(svg + '<p class="legend">P(fake) per sampled frame (hover a point for time and '
                     'score); dashed: threshold; ticks below: sampled frames without a face.</p>')
    elif r.get("verdict") != "error":
        parts.append('<p class="note">no timeline: the results hold no per-frame details '
                     '(scanned with --no-details)</p>')
    if ev is not None:
        if ev.thumbs:
            parts.append(f'<div class="thumbs">{"".join(_thumb(t, r.get("threshold")) for t in ev.thumbs)}</div>')
        if ev.note:
            parts.append(f'<p class="note">{"no thumbnails: " if not ev.thumbs else ""}{shown(ev.note)}</p>')
    parts.append("</details>")
    return "".join(parts)


def _chunks(slim: list[dict], full: Callable[[int], dict], opts: ReportOptions, meta: dict,
            explainer, progress) -> Iterator[str]:
    """The document in pieces: ``slim`` rows (no per-frame details) for the header and
    table, ``full(i)`` for each section, so only one full row is held at a time."""
    items, script = ordered(slim), _asset("report.js")
    yield ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
           f'<meta http-equiv="Content-Security-Policy" content="{csp(script)}">'
           '<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<title>dfscan report ({len(slim)} videos)</title><style>{_asset("report.css")}</style></head><body>')
    yield _header(summarise(slim, meta), meta, meta.get("explain_note"))
    yield from _table(items)
    yield "<main>"
    for n, (i, _) in enumerate(items):
        r = full(i)
        ev = _evidence(r, opts, explainer) if opts.thumbnails and r.get("verdict") != "error" else None
        yield _section(i, r, ev, n < opts.open_sections)
        if progress:
            progress(n + 1, len(items))
    yield (f'</main><footer>dfscan {escape(__version__)} · self-contained report: no network '
           f'access</footer><script>{script}</script></body></html>')


def render_html(rows: list[dict], options: ReportOptions | None = None, meta: dict | None = None,
                explainer=None, progress: Callable[[int, int], None] | None = None) -> str:
    """The report for ``rows`` (see module docstring) as one HTML string."""
    slim = [slim_row(r) for r in rows]
    return "".join(_chunks(slim, rows.__getitem__, options or ReportOptions(), dict(meta or {}),
                           explainer, progress))


def _evidence(r: dict, opts: ReportOptions, explainer) -> Evidence:
    use = explainer if explainer is not None and explainer.matches(r) else None
    try:
        return evidence(r, opts.top_k, opts.video_root, opts.verify_hash, opts.thumb_px, use)
    except Exception as e:  # one video's evidence never costs the whole report
        # Row values reach the terminal here (the path, a field in the message): no raw ESC.
        log.warning("report: no thumbnails for %s: %s", terminal_safe(str(r.get("path"))),
                    terminal_safe(str(e)), exc_info=log.isEnabledFor(logging.DEBUG))
        return Evidence(note=f"thumbnails failed: {type(e).__name__}: {e}")


def write_report(results: str | Path, out: str | Path, options: ReportOptions | None = None,
                 meta: dict | None = None, progress=None) -> dict:
    """Render the JSONL ``results`` into ``out`` (written atomically). Returns counts.

    Memory holds the rows without their per-frame details plus one full row at a
    time; the HTML is streamed to a temporary file renamed over ``out`` at the end.
    """
    with open(results, "rb") as src:  # indexed and read through one handle (see index_rows)
        why: dict = {}
        entries, bad = index_rows(src, why)
        if bad and not entries:  # e.g. the scan's CSV: an empty report would pass for "0 videos"
            raise DfscanError(f"{results} holds no dfscan result row ({bad} unreadable line(s)); "
                              f"{unreadable_text(why)}; the report is rendered from the JSONL a scan "
                              "writes (a CSV has no per-frame details)")
        slim = [row for _, row in entries]
        opts, meta = options or ReportOptions(), dict(meta or {})
        meta.setdefault("source", str(results))
        if bad:
            meta.setdefault("notes", []).append(f"{bad} unreadable line(s) in {results} skipped: "
                                                f"{unreadable_text(why)}")

        def chunks() -> Iterator[str]:
            explainer = _explainer(opts, meta, slim)
            yield from _chunks(slim, lambda i: read_row(src, entries[i][0]), opts, meta, explainer, progress)

        _write_atomic(Path(out), chunks)
    return {"videos": len(slim), "bad_lines": bad, "bytes": Path(out).stat().st_size}


def _write_atomic(out: Path, chunks: Callable[[], Iterator[str]]) -> None:
    """Stream ``chunks()`` into ``out``: written beside and renamed over it, so a reader
    never sees half a report. A symlink or device at ``out`` is written through instead
    of being replaced."""
    make_parent(out)
    direct = out.is_symlink() or (out.exists() and not out.is_file())
    if not direct:  # a killed render's temp file stayed forever beside the report
        remove_stale_temps(out)
    tmp = out if direct else temp_beside(out)
    try:
        # backslashreplace: a non-UTF-8 file name (lone surrogates) shows as \udcXX, not a crash.
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as dst:
            for chunk in chunks():
                dst.write(chunk)
        if not direct:
            os.replace(tmp, out)
    finally:
        if not direct:
            tmp.unlink(missing_ok=True)


def _explainer(opts: ReportOptions, meta: dict, slim: list[dict]):
    """The Grad-CAM explainer (or None); its note goes into the header."""
    from .gradcam import make_explainer

    if not opts.explain:
        return None
    explainer, meta["explain_note"] = make_explainer(slim, opts)
    return explainer
