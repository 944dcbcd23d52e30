"""Face thumbnails of a video's most suspicious frames, re-decoded from the video.

Only the frames holding the top-k faces (by P(fake)) are decoded, through the
scan's own sampler (same container whitelist, GOP seeking and rotation), so a
thumbnail shows exactly the pixels the scan saw. Before decoding, the file is
checked against the row (size, and SHA-256 unless disabled): a thumbnail of a
different file at the same path would be evidence for the wrong video.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..decode import Frame, FrameSampler, VideoError
from ..identity import FileIdentity, file_identity
from ..orientation import rotate_frame

THUMB_PX = 144  # longest side of a face thumbnail (JPEG): ~4-6 KB each
JPEG_QUALITY = 72
MARGIN = 0.35  # context around the face box, per side, as a fraction of its size


@dataclass
class Thumb:
    """One face thumbnail; coordinates in thumbnail pixels."""

    frame_index: int
    time_s: float
    score: float
    uri: str  # data:image/jpeg;base64,...
    width: int
    height: int
    face_box: tuple[float, float, float, float]
    artifact_boxes: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    cam: dict | None = None  # {"uri", "p_fake", "note"} from the Grad-CAM explainer


@dataclass
class Evidence:
    thumbs: list[Thumb] = field(default_factory=list)
    note: str | None = None  # why there are no (or fewer) thumbnails
    video: str | None = None  # the file actually read (after --video-root)


class IndexSampler(FrameSampler):
    """:class:`FrameSampler` that yields the given presentation indices only."""

    def __init__(self, path, indices, det_max_side: int | None = None):
        super().__init__(path, frames=max(1, len(indices)), det_max_side=det_max_side)
        self.wanted = sorted(set(int(i) for i in indices))

    def _plan(self):
        index, _ = super()._plan()
        pres = index.presentation
        return index, sorted({pres[i] for i in self.wanted if 0 <= i < len(pres)})


def remap(path: str, video_root: str | None) -> list[Path]:
    """Candidate locations of ``path``: itself, or under ``video_root``.

    ``OLD=NEW`` replaces the leading folders ``OLD``; a plain ``NEW`` tries the longest
    trailing part of ``path`` that exists under ``NEW`` first. A candidate never leaves
    ``NEW``: a part with ``..`` (a hand-made row) is not followed out of it.
    """
    if not video_root:
        return [Path(path)]
    parts = Path(path).parts
    if "=" in video_root:
        old, new = video_root.split("=", 1)
        n = len(Path(old).parts)
        if parts[:n] != Path(old).parts:  # whole folders: OLD=/a/b does not map /a/bc/x.mp4
            return [Path(path)]
        return [Path(new).joinpath(*parts[n:])] if ".." not in parts[n:] else []
    parts = parts[1:] if Path(path).is_absolute() else parts
    return [Path(video_root).joinpath(*parts[i:]) for i in range(len(parts)) if ".." not in parts[i:]]


def locate(row: dict, video_root: str | None, verify_hash: bool) -> tuple[Path | None, str | None, tuple]:
    """The readable file holding ``row``'s video, or ``(None, reason)``; third, the file's
    identity before it was checked (:func:`scanner.identity.file_identity`: the file checked
    against the row is reopened to be decoded, and one replaced or rewritten in between must
    not be shown). Every candidate is tried in
    order (under ``NEW``, a longer match can be another video of the same name); the
    reason given is the first candidate's."""
    first: tuple | None = None
    for path in remap(str(row["path"]), video_root):
        seen = file_identity(path)
        if seen is None:
            continue
        reason = _mismatch(path, seen, row, verify_hash)
        if reason is None:
            return path, None, seen
        first = first or (reason, seen)
    if first is not None:
        return None, first[0], first[1]
    where = _where(str(row["path"]), video_root)
    return None, f"video not found{where} (thumbnails need the original file; see --video-root)", ()


def _where(path: str, video_root: str | None) -> str:
    """Where :func:`remap` looked, as a reader can check it: with ``OLD=NEW`` the text
    "under /old=/new" named no folder at all; the remapped path is what was missing."""
    if not video_root:
        return ""
    if "=" not in video_root:
        return f" under {video_root}"
    old, new = video_root.split("=", 1)
    tried = remap(path, video_root)
    if not tried:  # a '..' part: never followed out of NEW
        return f" under {new}"
    if tried[0] == Path(path):  # OLD is not a leading folder of the row's path
        return f" at {path} (not under {old}, so --video-root did not move it)"
    return f" at {tried[0]}"


def _mismatch(path: Path, seen: FileIdentity, row: dict, verify_hash: bool) -> str | None:
    """Why the file at ``path`` is not the row's video (size, then SHA-256), or None."""
    size = row.get("size_bytes")
    if size is not None and seen.size != size:
        return f"{path} changed since the scan (size {seen.size} != {size} bytes)"
    if verify_hash and row.get("sha256"):
        from engines.registry import file_hash

        if file_hash(path, None) != row["sha256"]:
            return f"{path} changed since the scan (SHA-256 differs)"
    return None


def unchecked(row: dict) -> str | None:
    """Why the file shown may not be the one scanned, or None: :func:`locate` checks a row
    without SHA-256 (a scan with ``hash: false``, an older or foreign row) by size, or not
    at all, and thumbnails shown as the scan's evidence must say so: with ``--no-verify``
    and in a scan's own report too (they said nothing there), as such a row has no hash
    to verify either way."""
    if row.get("sha256"):
        return None
    what = "only its size was checked" if row.get("size_bytes") is not None else "neither size nor hash was checked"
    return f"the row has no SHA-256: {what}, so these frames may not be the ones the scan saw"


def top_faces(row: dict, k: int) -> list[tuple[dict, dict]]:
    """The ``k`` faces with the highest P(fake): ``[(frame_detail, face), ...]``."""
    faces = [(fr, fc) for fr in row.get("frames_detail") or [] for fc in fr.get("faces") or []
             if isinstance(fc.get("score"), (int, float))]
    faces.sort(key=lambda ff: -ff[1]["score"])
    return faces[:k]


def crop_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """Square-ish crop around a face box with context, clipped to the frame."""
    x1, y1, x2, y2 = box[:4]
    side = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    l, t = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    r, b = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
    return l, t, max(r, l + 1), max(b, t + 1)


def jpeg_uri(image: np.ndarray, max_side: int | None = None, quality: int = JPEG_QUALITY) -> tuple[str, int, int]:
    """``uint8 (H, W, 3)`` RGB -> (``data:`` URI of a JPEG, width, height)."""
    from PIL import Image

    im = Image.fromarray(image)
    if max_side and max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), im.width, im.height


def make_thumb(frame: Frame, fr: dict, face: dict, px: int) -> Thumb:
    h, w = frame.image.shape[:2]
    l, t, r, b = crop_box(face["box"], w, h)
    uri, tw, th = jpeg_uri(np.ascontiguousarray(frame.image[t:b, l:r]), px)
    s = tw / (r - l)

    def tx(bx):
        return tuple(round(v, 1) for v in ((bx[0] - l) * s, (bx[1] - t) * s, (bx[2] - l) * s, (bx[3] - t) * s))

    boxes = [(*tx(a), float(a[4]) if len(a) > 4 else float("nan"))
             for a in face.get("artifact_boxes") or []]
    return Thumb(fr["index"], fr.get("time_s") or 0.0, float(face["score"]), uri, tw, th,
                 tx(face["box"]), boxes)


def _no_picks(row: dict) -> str:
    """Why ``row`` has no face to show. Faces whose scores are all NaN/inf (null in the row)
    are no face to rank, but they were found: "no face was found" contradicted the row."""
    if not row.get("frames_detail"):
        return "no per-frame details in the results (scanned with --no-details)" if row.get("faces") \
            else "no face was found"
    if any(fr.get("faces") for fr in row["frames_detail"]):
        return "no face has a finite score (the detector scored them NaN/inf)"
    return "no face was found"


Explainer = Callable[[Frame, dict], dict]


def evidence(row: dict, k: int, video_root: str | None = None, verify_hash: bool = True,
             px: int = THUMB_PX, explainer: Explainer | None = None) -> Evidence:
    """Thumbnails (and Grad-CAM views) of ``row``'s top-``k`` faces, or why there are none."""
    if row.get("verdict") == "error":
        return Evidence(note=None)
    picks = top_faces(row, k)
    if not picks:
        return Evidence(note=_no_picks(row))
    path, why, seen = locate(row, video_root, verify_hash)
    if path is None:
        return Evidence(note=why)
    try:
        turn = int(row.get("orientation_deg") or 0) // 90  # boxes are in the pixels the scan turned upright
        frames = {f.index: rotate_frame(f, turn)
                  for f in IndexSampler(path, [fr["index"] for fr, _ in picks], 960)}
    except VideoError as e:
        return Evidence(note=f"could not re-decode {path}: {e.kind}: {e}", video=str(path))
    if file_identity(path) != seen:
        return Evidence(note=f"{path} changed while the report read it", video=str(path))
    out = Evidence(video=str(path), note=unchecked(row))
    for fr, face in picks:
        frame = frames.get(fr["index"])
        if frame is None:
            out.note = "; ".join(filter(None, [out.note, f"frame {fr['index']} could not be re-decoded"]))
            continue
        th = make_thumb(frame, fr, face, px)
        if explainer is not None:
            th.cam = explainer(frame, face)
        out.thumbs.append(th)
    return out
