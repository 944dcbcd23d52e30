"""Per-video score timeline as inline SVG.

x: presentation time of each sampled frame (s); y: P(fake) in [0, 1]. One line
for the frame score (what the verdict aggregates) and, when a video has more
than one face track, one line per track. Each point carries a ``<title>`` so
hovering shows time and score without any script. A dashed line marks the
threshold.
"""
from __future__ import annotations

from html import escape

# A hovered score reads on its side of the threshold line, as the video's score does.
from ..aggregate import score_text


W, H = 560, 120
PAD_L, PAD_R, PAD_T, PAD_B = 34, 8, 8, 18
TRACK_COLOURS = ("#6f42c1", "#0a7d8c", "#b35c00", "#2f6fd6", "#7a7a00", "#c2185b")
MAX_TRACKS = len(TRACK_COLOURS)


def face_tracks(frames: list[dict]) -> dict[int, list[tuple[float, float, float]]]:
    """``{track: [(time_s, score, prob), ...]}`` for the faces of ``frames_detail``: the
    row's own tracks (:func:`scanner.tracks.tracks_of_detail`: each face's stored ``track``
    id, or box overlap for rows written before faces carried one)."""
    from ..tracks import tracks_of_detail

    out = {}
    for tr in tracks_of_detail(frames):
        pts = [(frames[pos].get("time_s") or 0.0, s, frames[pos]["faces"][slot].get("prob"))
               for pos, s, slot in zip(tr.frames, tr.scores, tr.slots) if s == s]
        if pts:
            out[tr.id] = pts
    return out


def _xy(t: float, s: float, t_max: float) -> tuple[float, float]:
    x = PAD_L + (W - PAD_L - PAD_R) * (t / t_max if t_max > 0 else 0.5)
    y = PAD_T + (H - PAD_T - PAD_B) * (1.0 - min(max(s, 0.0), 1.0))
    return round(x, 1), round(y, 1)


def _series(points, t_max: float, colour: str, cls: str, label: str, dots: bool, threshold) -> str:
    xy = [_xy(t, s, t_max) for t, s, *_ in points]
    parts = [f'<g class="{cls}" data-label="{escape(label)}">']
    if len(xy) > 1:
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="'
                     + " ".join(f"{x},{y}" for x, y in xy) + '"/>')
    if dots:
        for (x, y), (t, s, *_) in zip(xy, points):
            parts.append(f'<circle class="pt" cx="{x}" cy="{y}" r="2.6" fill="{colour}">'
                         f"<title>{escape(label)}: t={t:.2f} s, P(fake)={score_text(s, threshold)}</title></circle>")
    parts.append("</g>")
    return "".join(parts)


def _track_label(tid: int) -> str:
    # -1 gathers the faces a row gave no track id (see face_tracks): not a track of its own.
    return "faces without a track id" if tid == -1 else f"face track {tid}"


def _shown_tracks(tracks: dict) -> list:
    """The tracks drawn: the longest, and always the most suspicious one. Why: in a crowd
    (more tracks than colours) a short track of a fake face, the one that made an
    ``--aggregate tracks`` verdict fake, was among the "shorter tracks not drawn"."""
    by_length = sorted(tracks.items(), key=lambda kv: -len(kv[1]))
    top = max(by_length, key=lambda kv: max(s for _, s, *_ in kv[1]))
    shown = by_length[:MAX_TRACKS]
    return shown if top in shown else [*shown[:-1], top]


def timeline_svg(row: dict, threshold: float | None) -> str | None:
    """SVG markup for ``row`` (and a legend of its face tracks); ``None`` without per-frame details."""
    frames = row.get("frames_detail")
    if not frames:
        return None
    t_max = max((fr.get("time_s") or 0.0) for fr in frames)
    body = [_axes(t_max, threshold)]
    scored = [(fr.get("time_s") or 0.0, fr["score"]) for fr in frames if fr.get("score") is not None]
    tracks = face_tracks(frames)
    legend = ""
    if len(tracks) > 1:
        shown = _shown_tracks(tracks)
        for n, (tid, pts) in enumerate(shown):
            body.append(_series(pts, t_max, TRACK_COLOURS[n], "track", _track_label(tid), True, threshold))
        keys = "".join(f'<span style="color:{TRACK_COLOURS[n]}">&#9679; {_track_label(tid)}</span> '
                       for n, (tid, _) in enumerate(shown))
        hidden = len(tracks) - len(shown)
        more = f" ({hidden} other tracks not drawn: shorter, less suspicious)" if hidden else ""
        legend = f'<p class="legend tracks">{keys}<span>&#9644; frame score</span>{more}</p>'
    body.append(_series(scored, t_max, "#222", "frame-score", "frame score", len(tracks) <= 1, threshold))
    empty = [fr.get("time_s") or 0.0 for fr in frames if fr.get("score") is None]
    for t in empty:  # sampled frames without a face: a tick on the time axis
        x, _ = _xy(t, 0.0, t_max)
        body.append(f'<line class="noface" x1="{x}" x2="{x}" y1="{H - PAD_B}" y2="{H - PAD_B + 4}" '
                    f'stroke="#999"><title>t={t:.2f} s: no face</title></line>')
    return (f'<svg class="timeline" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="P(fake) per sampled frame">{"".join(body)}</svg>{legend}')


def _axes(t_max: float, threshold: float | None) -> str:
    x0, x1, y0, y1 = PAD_L, W - PAD_R, PAD_T, H - PAD_B
    parts = [f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fafafa" stroke="#ccc"/>']
    for v in (0.0, 0.5, 1.0):
        _, y = _xy(0, v, 1)
        parts.append(f'<text x="{x0 - 4}" y="{y + 3}" text-anchor="end" class="ax">{v:.1f}</text>')
    parts.append(f'<text x="{x0}" y="{H - 4}" class="ax">0 s</text>')
    parts.append(f'<text x="{x1}" y="{H - 4}" text-anchor="end" class="ax">{t_max:.1f} s</text>')
    if isinstance(threshold, (int, float)):
        _, y = _xy(0, float(threshold), 1)
        parts.append(f'<line class="threshold" x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" stroke="#d33" '
                     f'stroke-dasharray="4 3"><title>threshold {float(threshold):.3f}</title></line>')
    return "".join(parts)
