"""Orientation check (scanner.orientation) replayed on real clips and their turned copies.

Step 1 (``collect``, ~2 min on 2 cores): for 12 evenly spaced samples of every clip,
MTCNN's best face probability and largest face side at each quarter turn (one
detection per turn, as the scan detects), and the probes' probabilities with
P-Net's fine pyramid levels skipped below half the stored frame's largest face (the
scan's probes: ``scanner.orientation.PROBE_RATIO``). Turning pixels is exact (``np.rot90``),
so one frame's four detections give every turned copy of the clip.

Step 2 (``replay``, seconds): the real :class:`scanner.orientation.Orientation` runs
over each clip and each of its three turned copies in 4-frame batches, with the
collected numbers standing in for the detector; per set it counts upright copies
turned (wrong), turned copies not set upright (wrong), probes per upright clip and
the seconds the probes cost (each detection's measured time).

Sets: ``clips`` = portrait/, the crowd clip and train_real/, and ``validation`` = its
real and fake clips: the rule's thresholds were chosen (session 17) on portrait/,
validation/ and 20 of the train_real/ clips, so these two re-check it; ``stills`` =
200 pseudo-clips of 12 face photos of different people (train_stills/), on which
nothing was chosen: the held-out check.

    nice python bench/orientation_replay.py collect   # -> bench/results/orientation_probs.json
    python bench/orientation_replay.py replay    # both probe kinds -> bench/results/orientation_replay.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.benchmark import machine_info  # noqa: E402
from engines.files import write_json  # noqa: E402

PROBS = ROOT / "bench" / "results" / "orientation_probs.json"
OUT = ROOT / "bench" / "results" / "orientation_replay.json"
SAMPLES = 12
STILL_STEP, STILL_CLIPS = 2, 200  # every other still, 200 pseudo-clips of SAMPLES stills
BATCH = 4  # frames per detection batch, as scanner.pipeline.DETECT_BATCH


def clip_sets(shared: Path) -> dict[str, dict[str, list[Path]]]:
    """Set -> clip key -> files (one video, or the stills of a pseudo-clip)."""
    media = shared / "media"
    videos = {"clips": sorted((media / "portrait").glob("*.mp4")) + [media / "crowd_1080p.mp4"] + sorted(
        p for p in (media / "train_real").rglob("*") if p.suffix in (".mp4", ".mpg")),
        "validation": sorted((media / "validation").rglob("*.mp4"))}
    out = {name: {str(p.relative_to(media)): [p] for p in ps} for name, ps in videos.items()}
    # Stills of different people, 12 to a pseudo-clip: orientation evidence from frames
    # that no threshold was chosen on (each still edge-padded to 1.8x, as training pads them).
    stills = sorted((media / "train_stills").rglob("*.jpg"))[::STILL_STEP][:STILL_CLIPS * SAMPLES]
    out["stills"] = {f"train_stills/{i:03d}": stills[i * SAMPLES:(i + 1) * SAMPLES]
                     for i in range(len(stills) // SAMPLES)}
    return out


def _clip_frames(files: list[Path], det_max_side: int) -> list:
    from scanner.research.data import _frames

    return [fr for f in files for fr in _frames(f, SAMPLES, det_max_side, 1.8)]


def _best(faces) -> tuple[float, float]:
    """(best probability, largest face side in full-resolution px) of one frame."""
    if not len(faces):
        return 0.0, 0.0
    side = faces.sides()
    # 7 decimals keep the rule's thresholds (0.9999, 0.995) exact; float32 has no more
    return round(float(faces.probs.max()), 7), round(float(side.max()), 1)


def _timed_detect(det, frames, level: int = 0):
    t0 = time.perf_counter()
    found = det.detect(frames, first_level=level)
    return found, round((time.perf_counter() - t0) / len(frames), 5)


def _frame_record(det, fr, probe_level) -> dict:
    from scanner.orientation import rotate_frame

    turned = [rotate_frame(fr, t) for t in range(4)]
    found, secs = _timed_detect(det, turned)
    rec = {"scale": fr.scale, "full": [_best(f) for f in found], "full_s": secs, "coarse": {}}
    levels = {probe_level(fr, side) for _, side in rec["full"] if side > 0}
    for level in sorted(levels - {0}):
        found, secs = _timed_detect(det, turned, level)
        rec["coarse"][str(level)] = {"probs": [_best(f)[0] for f in found], "s": secs}
    return rec


def collect(shared: Path) -> dict:
    import torch

    from scanner.decode import VideoError
    from scanner.faces import FaceDetector, Faces
    from scanner.orientation import Orientation

    torch.set_num_threads(2)
    det = FaceDetector()
    probe = Orientation(det)

    def probe_level(fr, side):  # the level the scan's probes start at for this stored face
        box = np.array([[0, 0, side, side]], np.float32)
        return probe.probe_level(fr, Faces(box, np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32)))

    out = {"samples": SAMPLES, "sets": {}}
    for name, clips in clip_sets(shared).items():
        out["sets"][name] = {}
        for key, files in clips.items():
            try:
                frames = _clip_frames(files, det.max_side)
            except VideoError as e:
                print(f"skip {key}: {e}", file=sys.stderr)
                continue
            out["sets"][name][key] = [_frame_record(det, fr, probe_level) for fr in frames]
            print(key, len(frames), flush=True)
    return out


# --- replay ---------------------------------------------------------------------------

_MARK = np.array([[0, 1], [3, 2]], np.uint8)[..., None]  # its rot90s tell the turn applied


class _Replayed:
    """Stands in for FaceDetector: returns the collected probabilities of the turn a
    frame is at (read from its 2x2 marker image), full or coarse as the call asks."""

    def __init__(self, records: list[dict]):
        self.records = records
        self.min_face, self.seconds, self.calls = 64, 0.0, 0

    def minsize(self, scale: float) -> int:
        return max(12, int(self.min_face * scale))

    @staticmethod
    def turn(fr) -> int:
        return next(k for k in range(4) if np.array_equal(np.rot90(_MARK, k), fr.image))

    def detect(self, frames, first_level: int = 0):
        from scanner.faces import Faces

        out = []
        for fr in frames:
            rec, t = self.records[fr.index], self.turn(fr)
            coarse = rec["coarse"][str(first_level)] if first_level else None
            p = coarse["probs"][t] if coarse else rec["full"][t][0]
            self.seconds += coarse["s"] if coarse else rec["full_s"]
            self.calls += 1
            out.append(_faces(p, 0.0, Faces))
        return out


def _faces(p: float, side: float, cls):
    if p == 0.0:
        return cls.empty()
    return cls(np.array([[0, 0, side, side]], np.float32), np.array([p], np.float32),
               np.zeros((1, 5, 2), np.float32))


def replay_clip(records: list[dict], copy_turn: int, mode: str) -> dict:
    """The scan's orientation decision on the clip stored turned by ``copy_turn``."""
    from scanner.decode import Frame
    from scanner.faces import Faces
    from scanner.orientation import Orientation, rotate_frame

    det = _Replayed(records)
    o = Orientation(det, coarse_probes=(mode == "coarse"))
    frames = [rotate_frame(Frame(i, 0.0, _MARK, None, r["scale"]), copy_turn) for i, r in enumerate(records)]
    for b in range(0, len(frames), BATCH):
        batch = frames[b:b + BATCH]
        found = [_faces(*records[fr.index]["full"][det.turn(fr)], Faces) for fr in batch]
        o.settle(batch, found)
        if o.k is not None:
            break
    k = o.k or 0
    return {"ok": (copy_turn + k) % 4 == 0, "probes": o.probes, "probe_s": det.seconds}


def replay(data: dict, mode: str) -> dict:
    out = {}
    for name, clips in data["sets"].items():
        rows = {key: [replay_clip(recs, j, mode) for j in range(4)] for key, recs in clips.items() if recs}
        upright = [r[0] for r in rows.values()]
        turned = [x for r in rows.values() for x in r[1:]]
        out[name] = {
            "clips": len(rows),
            "upright_turned": [k for k, r in rows.items() if not r[0]["ok"]],
            "turned_left_turned": [f"{k}@{90 * j}" for k, r in rows.items() for j in (1, 2, 3) if not r[j]["ok"]],
            "turned_copies": len(turned),
            "probes_per_upright_clip": round(float(np.mean([u["probes"] for u in upright])), 3),
            "probe_s_per_upright_clip": round(float(np.mean([u["probe_s"] for u in upright])), 4),
            "probe_s_per_turned_copy": round(float(np.mean([u["probe_s"] for u in turned])), 4),
        }
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("collect", "replay"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--probs", default=str(PROBS))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if args.step == "collect":
        t0 = time.perf_counter()
        data = collect(Path(args.shared))
        data["machine"] = {**machine_info("cpu"), "collect_s": round(time.perf_counter() - t0, 1)}
        write_json(data, Path(args.probs), indent=None)
        return
    data = json.loads(Path(args.probs).read_text())
    res = {"probs": str(Path(args.probs).relative_to(ROOT)) if Path(args.probs).is_relative_to(ROOT) else args.probs,
           **{mode: replay(data, mode) for mode in ("full", "coarse")}}
    write_json(res, Path(args.out))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
