"""Calibrates the look check that keeps a face track to one person (scanner.appearance).

On real clips at a scan's sampling (32 frames, faces found by the scan's MTCNN):

- *same person*: every link the IoU tracker makes between two samples of one clip (one
  shot, one person per track) and the look distance across it; the check must refuse
  none of them;
- *different people*: the last face of clip A against the first face of clip B, for
  clips of different people (a cut from one to the other, framed alike: the case the
  check is for), by set: the same studio (GRID speakers, MEAD actors, the two bundled
  grey-backdrop clips) and clips of different sources. The share whose distance exceeds
  ``SAME_FACE_DISTANCE`` is the share of such cuts that now start a new track.

Evaluation-only footage (``media/validation``) is not used.

    python bench/track_appearance.py [--shared ../shared] [--out bench/results/track_appearance.json]
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.files import write_json  # noqa: E402
from scanner.appearance import SAME_FACE_DISTANCE, distances, face_look  # noqa: E402
from scanner.config import ScanConfig  # noqa: E402
from scanner.decode import FrameSampler  # noqa: E402
from scanner.faces import FaceDetector  # noqa: E402
from scanner.live.tracker import IoUTracker  # noqa: E402
from scanner.pipeline import DETECT_BATCH  # noqa: E402


def clips(shared: Path) -> dict[str, list[Path]]:
    """Calibration clips by set (a set: one studio, or one source)."""
    media = shared / "media"
    return {"bundled": [ROOT / "tests/data/d1.mp4", ROOT / "tests/data/d2.mp4"],
            "grid": sorted((media / "train_real/grid_lipnet").glob("*.mpg")),
            "mead": sorted((media / "train_real/mead_dreamtalk").glob("*.mp4")),
            "vox": sorted((media / "train_real").glob("vox_*/*.mp4")),
            "portrait": sorted((media / "portrait").glob("*.mp4")),
            "crowd": [media / "crowd_1080p.mp4"]}


def person(path: Path) -> str:
    """Who is in a clip, where the sources say: MEAD names its actor first, two GRID
    clips show the same man (media README); other clips count as their own person."""
    if path.parent.name == "mead_dreamtalk":
        return path.name.split("_")[0]
    return "grid_pwij3p" if path.stem in ("pwij3p", "id2_vcd_swwp2s") else str(path)


def clip_faces(path: Path, det: FaceDetector, cfg: ScanConfig) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """``[[(box, look), ...] per sampled frame]`` as a scan sees them."""
    frames = list(FrameSampler(path, cfg.frames, None, cfg.det_max_side, cfg.seek))
    out = []
    for k in range(0, len(frames), DETECT_BATCH):
        batch = frames[k:k + DETECT_BATCH]
        for fr, fc in zip(batch, det.detect(batch)):
            out.append([(fc.boxes[j], face_look(fr, fc.boxes[j])) for j in range(len(fc))])
    return out


def link_distances(faces) -> list[float]:
    """Look distance across every link the IoU tracker alone makes (tracks never expire,
    as in a scan)."""
    tracker, last, out = IoUTracker(0.3, max_age_s=np.inf), {}, []
    for pos, ff in enumerate(faces):
        if not ff:
            continue
        ids, _ = tracker.update(np.array([b for b, _ in ff], np.float32).reshape(-1, 4), float(pos))
        for tid, (_, lk) in zip(ids, ff):
            if lk is not None and last.get(tid) is not None:
                out.append(float(distances(last[tid][None], lk[None])[0, 0]))
            last[tid] = lk
    return out


def _largest(ff):
    return max(ff, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[1] if ff else None


def cut_distances(by_set: dict, faces: dict) -> dict[str, list[float]]:
    """Last face of A vs first face of B for clips of different people, by pair kind."""
    ends = {p: (_largest(next((f for f in reversed(faces[p]) if f), [])), _largest(next((f for f in faces[p] if f), [])))
            for paths in by_set.values() for p in paths}
    set_of = {p: s for s, paths in by_set.items() for p in paths}
    out: dict[str, list[float]] = {"same_studio": [], "different_sources": []}
    for a, b in itertools.permutations(ends, 2):
        if person(a) == person(b) or set_of[a] in ("crowd", "portrait") and set_of[a] == set_of[b]:
            continue  # crowd: many people; portrait: who is who is not recorded
        last, first = ends[a][0], ends[b][1]
        if last is None or first is None:
            continue
        kind = "same_studio" if set_of[a] == set_of[b] else "different_sources"
        out[kind].append(float(distances(last[None], first[None])[0, 0]))
    return out


CURVE = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


def _summary(d: list[float]) -> dict:
    x = np.asarray(d)
    return {"refused_share_at": {str(t): round(float((x > t).mean()), 4) for t in CURVE},"n": len(x), "refused": int((x > SAME_FACE_DISTANCE).sum()),
            "refused_share": round(float((x > SAME_FACE_DISTANCE).mean()), 4),
            "min": round(float(x.min()), 4), "p50": round(float(np.median(x)), 4),
            "p99": round(float(np.percentile(x, 99)), 4), "max": round(float(x.max()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/track_appearance.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = ScanConfig()
    det = FaceDetector(max_side=cfg.det_max_side, min_face=cfg.min_face, min_prob=cfg.face_prob,
                       max_faces=cfg.max_faces)
    by_set = clips(args.shared)
    faces = {p: clip_faces(p, det, cfg) for paths in by_set.values() for p in paths}
    links = {s: sum((link_distances(faces[p]) for p in paths), []) for s, paths in by_set.items()}
    same = {s: _summary(v) for s, v in links.items()}
    same["all"] = _summary(sum(links.values(), []))
    cuts = {k: _summary(v) for k, v in cut_distances(by_set, faces).items()}
    report = {"threshold": SAME_FACE_DISTANCE, "frames_per_clip": cfg.frames,
              "same_person_links": same, "cuts_between_people": cuts,
              "clips": {s: [str(p.relative_to(p.parents[2])) for p in paths] for s, paths in by_set.items()}}
    write_json(report, args.out)
    print(f"same person: refused {same['all']['refused']} of {same['all']['n']} links; cuts refused: "
          + ", ".join(f"{k} {v['refused']}/{v['n']}" for k, v in cuts.items()))


if __name__ == "__main__":
    main()
