"""Calibrates how face tracks keep to one person (scanner.appearance, scanner.live.tracker).

On real clips at a scan's sampling (32 frames, faces found by the scan's MTCNN):

- *same person*: every link the IoU tracker makes between two samples of one clip (one
  shot, one person per track) and the look distance across it; the look veto must refuse
  none of them;
- *different people*: the last face of clip A against the first face of clip B, for
  clips of different people (a cut from one to the other, framed alike: the case the
  check is for), by set: the same studio (GRID speakers, MEAD actors, the two bundled
  grey-backdrop clips) and clips of different sources. The share whose distance exceeds
  ``SAME_FACE_DISTANCE`` is the share of such cuts that now start a new track.

The second association pass (``Relink``: faces too far from their track to overlap it):

- *broken links*: in one-person clips, consecutive samples whose largest face changed
  track id, by box overlap alone and with the second pass, at 32 samples, at 8 (every
  4th sample: a long video) and under a synthetic camera shake (the picture jumping ``f``
  face sizes sideways at every other sample: :func:`_shaken`); with the gate measures
  (shift per face size, scale ratio, look distance) of those links;
- *false merges*: (a) clip A's 8 samples then clip B's 8 for people of different clips,
  B as filmed (framed alike) and B moved sideways by 1.5 or 3 face sizes (no overlap: only
  the second pass can join them): share of junctions where one track holds both; (b) every
  two faces of one sample (different people by definition), the first seen alone, the
  other alone 1 or 4 samples later: share given the first one's track, and their look
  distances; (c) samples where two faces got one track (must be none).

Evaluation-only footage (``media/validation``) is not used.

    python bench/track_appearance.py [--shared ../shared] [--out bench/results/track_appearance.json]
        [--cache /tmp/track_appearance.pkl]
"""
from __future__ import annotations

import argparse
import itertools
import pickle
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
from scanner.live.tracker import IoUTracker, Relink  # noqa: E402
from scanner.pipeline import DETECT_BATCH  # noqa: E402

SHAKES = (0.75, 1.5, 2.5)  # face sizes the synthetic camera jumps per sample
ONE_PERSON = ("bundled", "grid", "mead", "vox", "portrait")


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


def _size(b) -> float:
    return float(np.sqrt(max((b[2] - b[0]) * (b[3] - b[1]), 1e-6)))


def _shaken(frames: list[list[tuple]], f: float) -> list[list[tuple]]:
    """``frames`` as a camera jumping ``f`` face sizes (the clip's median) sideways at every
    other sample would show them: boxes moved, looks kept (the square a look is taken from
    moves with the picture). A crop window panning across the frame, the first idea, cannot
    keep a talking head (40 % of the frame's width) in view through jumps over ~0.5 sizes."""
    sizes = [_size(b) for ff in frames for b, _ in ff]
    step = f * float(np.median(sizes)) if sizes else 0.0
    return [[(b + np.array([step, 0, step, 0], np.float32) * (k % 2), lk) for b, lk in ff]
            for k, ff in enumerate(frames)]


def clip_faces(path: Path, det: FaceDetector, cfg: ScanConfig) -> dict:
    """``{"faces": [[(box, look), ...] per sampled frame]}`` as a scan sees them."""
    frames = list(FrameSampler(path, cfg.frames, None, cfg.det_max_side, cfg.seek))
    dets = []
    for k in range(0, len(frames), DETECT_BATCH):
        dets += det.detect(frames[k:k + DETECT_BATCH])
    return {"faces": [[(np.asarray(fc.boxes[j][:4], np.float32), face_look(fr, fc.boxes[j]))
                       for j in range(len(fc))] for fr, fc in zip(frames, dets)]}


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
    return max(ff, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1])) if ff else None


def _pairs(by_set: dict):
    """Ordered pairs of clips of different people (crowd, portrait: not among their own set)."""
    set_of = {p: s for s, paths in by_set.items() for p in paths}
    for a, b in itertools.permutations(set_of, 2):
        if person(a) == person(b) or set_of[a] in ("crowd", "portrait") and set_of[a] == set_of[b]:
            continue  # crowd: many people; portrait: who is who is not recorded
        yield a, b, "same_studio" if set_of[a] == set_of[b] else "different_sources"


def cut_distances(by_set: dict, faces: dict) -> dict[str, list[float]]:
    """Last face of A vs first face of B for clips of different people, by pair kind."""
    out: dict[str, list[float]] = {"same_studio": [], "different_sources": []}
    for a, b, kind in _pairs(by_set):
        last = _largest(next((f for f in reversed(faces[a]) if f), []))
        first = _largest(next((f for f in faces[b] if f), []))
        if last is None or first is None or last[1] is None or first[1] is None:
            continue
        out[kind].append(float(distances(last[1][None], first[1][None])[0, 0]))
    return out


def _run(frames, relink) -> list[list[int]]:
    """Track ids per face per sample as a scan links them (tracks never expire)."""
    tracker, out = IoUTracker(0.3, max_age_s=np.inf, relink=relink), []
    for pos, ff in enumerate(frames):
        boxes = np.array([b for b, _ in ff], np.float32).reshape(-1, 4)
        out.append(tracker.update(boxes, float(pos), [lk for _, lk in ff])[0] if ff else [])
    return out


def broken_links(frames, relink) -> tuple[int, int]:
    """(links, broken): consecutive samples with a face whose largest face changed track id."""
    ids = _run(frames, relink)
    own = [tid[ff.index(_largest(ff))] if ff else None for ff, tid in
           zip([[(b, k) for k, (b, _) in enumerate(f)] for f in frames], ids)]
    seen = [v for v in own if v is not None]
    return len(seen) - 1 if seen else 0, sum(x != y for x, y in itertools.pairwise(seen))


def gate_measures(frames) -> list[tuple[float, float, float]]:
    """(shift per face size, scale ratio, look distance) of consecutive largest faces."""
    big = [_largest(ff) for ff in frames if ff]
    out = []
    for (b0, l0), (b1, l1) in itertools.pairwise(big):
        c0, c1 = (b0[:2] + b0[2:]) / 2, (b1[:2] + b1[2:]) / 2
        s0, s1 = _size(b0), _size(b1)
        d = float(distances(l0[None], l1[None])[0, 0]) if l0 is not None and l1 is not None else np.nan
        out.append((float(np.linalg.norm(c1 - c0)) / s0, max(s0, s1) / min(s0, s1), d))
    return out


def _moved(frames, by: float) -> list[list[tuple]]:
    """``frames`` with every box moved ``by`` face sizes (of its first face) to the right."""
    first = next((_largest(ff) for ff in frames if ff), None)
    dx = by * _size(first[0]) if first else 0.0
    return [[(b + np.array([dx, 0, dx, 0], np.float32), lk) for b, lk in ff] for ff in frames]


def junction_merges(by_set: dict, faces: dict, relink, move: float) -> dict[str, list[int]]:
    """By pair kind, ``[junctions, merged]``: A's 8 samples then B's 8 (B moved ``move`` face
    sizes), merged when one track holds faces of both clips."""
    out = {"same_studio": [0, 0], "different_sources": [0, 0]}
    for a, b, kind in _pairs(by_set):
        fa, fb = faces[a]["faces"][::4], _moved(faces[b]["faces"][::4], move)
        if not any(fa) or not any(fb):
            continue
        ids = _run(fa + fb, relink)
        ia, ib = {i for f in ids[:len(fa)] for i in f}, {i for f in ids[len(fa):] for i in f}
        out[kind][0] += 1
        out[kind][1] += bool(ia & ib)
    return out


def same_sample_merges(faces: dict, relink, gap: int) -> list[int]:
    """``[pairs, merged]``: two faces of one sample (two people), the first seen alone, the
    other alone ``gap`` samples later; merged when it takes the first one's track."""
    n = merged = 0
    for rec in faces.values():
        for ff in rec["faces"]:
            for fa, fb in itertools.permutations(ff, 2):
                frames = [[fa]] + [[] for _ in range(gap - 1)] + [[fb]]
                ids = _run(frames, relink)
                n, merged = n + 1, merged + (ids[0][0] == ids[-1][0])
    return [n, merged]


def shared_in_a_frame(faces: dict, relink) -> int:
    """Samples where two faces got one track id (must be 0: a track takes one face a frame)."""
    return sum(len(set(ids)) < len(ids) for rec in faces.values() for frames in conditions(rec).values()
               for ids in _run(frames, relink))


CURVE = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


def _summary(d: list[float]) -> dict:
    x = np.asarray(d)
    return {"refused_share_at": {str(t): round(float((x > t).mean()), 4) for t in CURVE}, "n": len(x),
            "refused": int((x > SAME_FACE_DISTANCE).sum()),
            "refused_share": round(float((x > SAME_FACE_DISTANCE).mean()), 4),
            "min": round(float(x.min()), 4), "p50": round(float(np.median(x)), 4),
            "p99": round(float(np.percentile(x, 99)), 4), "max": round(float(x.max()), 4)}


def _quantiles(x) -> dict:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return {"n": len(x), **{k: round(float(np.percentile(x, q)), 4)
                            for k, q in (("p50", 50), ("p99", 99), ("max", 100))}} if len(x) else {"n": 0}


def conditions(rec: dict) -> dict[str, list]:
    """A clip's sample lists by condition: 32 samples, 8 (every 4th), each also shaken."""
    plain = {"samples32": rec["faces"], "samples8": rec["faces"][::4]}
    return {**plain, **{f"shake{f}_{k}": _shaken(v, f) for f in SHAKES for k, v in plain.items()}}


def relink_report(by_set: dict, faces: dict, relink: Relink) -> dict:
    """Broken same-person links before/after the second pass, its gate measures, false merges."""
    broken, gates = {}, {}
    for cond in conditions(faces[by_set["grid"][0]]):
        per_set = {s: np.array([[*broken_links(conditions(faces[p])[cond], None),
                                 broken_links(conditions(faces[p])[cond], relink)[1]] for p in by_set[s]]).sum(0)
                   for s in ONE_PERSON}
        per_set["all"] = sum(per_set.values())
        broken[cond] = {s: dict(zip(("links", "broken_iou_only", "broken_relink"), map(int, v)))
                        for s, v in per_set.items()}
        m = np.array([g for s in ONE_PERSON for p in by_set[s] for g in gate_measures(conditions(faces[p])[cond])])
        gates[cond] = {k: _quantiles(m[:, i]) for i, k in enumerate(("shift_per_size", "scale_ratio", "look"))}
    merges = {}
    for name, move in (("junctions_framed_alike", 0.0), ("junctions_moved_1.5_sizes", 1.5),
                       ("junctions_moved_3_sizes", 3.0)):
        before, after = junction_merges(by_set, faces, None, move), junction_merges(by_set, faces, relink, move)
        merges[name] = {k: {"n": before[k][0], "merged_iou_only": before[k][1], "merged_relink": after[k][1]}
                        for k in before}
    for gap in (1, 4):
        (n, b), (_, a) = same_sample_merges(faces, None, gap), same_sample_merges(faces, relink, gap)
        merges[f"same_sample_pairs_gap{gap}"] = {"n": n, "merged_iou_only": b, "merged_relink": a}
    d = [float(distances(a[1][None], b[1][None])[0, 0]) for rec in faces.values() for ff in rec["faces"]
         for a, b in itertools.combinations(ff, 2) if a[1] is not None and b[1] is not None]
    merges["same_sample_pairs_look"] = {**_quantiles(d), "min": round(min(d), 4) if d else None,
                                        "share_within_max_look": round(float(np.mean(np.array(d) <= relink.max_look)), 4)}
    merges["samples_with_two_faces_on_one_track"] = shared_in_a_frame(faces, relink)
    return {"gates": vars(relink), "broken_same_person_links": broken, "same_person_gate_measures": gates,
            "false_merges": merges}


def load_faces(by_set: dict, cache: Path | None) -> dict:
    """Every clip's :func:`clip_faces`, from ``cache`` when it holds them (detection is slow)."""
    if cache and cache.exists():
        return pickle.loads(cache.read_bytes())
    cfg = ScanConfig()
    det = FaceDetector(max_side=cfg.det_max_side, min_face=cfg.min_face, min_prob=cfg.face_prob,
                       max_faces=cfg.max_faces)
    faces = {p: clip_faces(p, det, cfg) for paths in by_set.values() for p in paths}
    if cache:
        cache.write_bytes(pickle.dumps(faces))
    return faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/track_appearance.json")
    ap.add_argument("--cache", type=Path, default=None, help="detections kept here between runs")
    args = ap.parse_args()
    torch.set_num_threads(2)
    by_set = clips(args.shared)
    faces = load_faces(by_set, args.cache)
    plain = {p: rec["faces"] for p, rec in faces.items()}
    links = {s: sum((link_distances(plain[p]) for p in paths), []) for s, paths in by_set.items()}
    same = {s: _summary(v) for s, v in links.items()}
    same["all"] = _summary(sum(links.values(), []))
    cuts = {k: _summary(v) for k, v in cut_distances(by_set, plain).items()}
    rel = relink_report(by_set, faces, Relink())
    report = {"threshold": SAME_FACE_DISTANCE, "frames_per_clip": ScanConfig().frames,
              "same_person_links": same, "cuts_between_people": cuts, "relink": rel,
              "clips": {s: [str(p.relative_to(p.parents[2])) for p in paths] for s, paths in by_set.items()}}
    write_json(report, args.out)
    print(f"same person: refused {same['all']['refused']} of {same['all']['n']} links; cuts refused: "
          + ", ".join(f"{k} {v['refused']}/{v['n']}" for k, v in cuts.items()))
    for cond, v in rel["broken_same_person_links"].items():
        print(f"{cond}: broken links {v['all']['broken_iou_only']} -> {v['all']['broken_relink']} of {v['all']['links']}")
    print("false merges:", rel["false_merges"])


if __name__ == "__main__":
    main()
