"""Out-of-frame borders vs P(fake) on real faces of held-out identities.

A face near the edge of a video (a close-up, a cropped interview) gets an aligned
crop whose context runs past the frame: ``scanner.align`` fills it with black,
which draws a straight boundary next to the face. This measures, on real faces
no detector was trained on (the held-out identities of ``effnet_lite0_sbi``'s
card), each detector's P(fake) for the same face aligned from the whole frame
and from the frame cut tightly around the face (``--margin`` x the face box), so
the two crops differ only by the black out-of-frame region.

``python bench/border_probe.py --detectors effnet_lite0_sbi meso4_df --out bench/results/border_probe.json``
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.files import write_json  # noqa: E402


def held_out_sources(card: Path, caches: list[Path], stills: int) -> list[Path]:
    """Source files of the card's validation identities: every clip, ``stills`` photos."""
    groups = set(json.loads(card.read_text())["data"]["val_identities"])
    clips, photos = set(), set()
    for c in caches:
        if not (c / "index.csv").is_file():
            raise SystemExit(f"{c}: no face cache; build the card's caches first (`dfscan train --cache-only`, "
                             f"steps 1-2 of {card.name}'s reproduce steps)")
        for r in csv.DictReader(open(c / "index.csv")):
            if r["group"] in groups:
                (photos if r["source"].endswith(".jpg") else clips).add(r["source"])
    return sorted(map(Path, clips)) + sorted(map(Path, photos))[:stills]


def pairs(paths: list[Path], spec, margin: float, frames: int):
    """``(source, whole-frame crop, tight-frame crop)`` uint8 ``(S, S, 3)`` per largest face."""
    from scanner.align import align_faces
    from scanner.faces import FaceDetector
    from scanner.research.data import _frames  # the training cache's reader: photos padded 1.8x

    det = FaceDetector(min_face=40)
    for path in paths:
        for fr in _frames(path, frames, 960, 1.8):
            img = fr.image
            fc = det.detect([fr])[0]
            if not len(fc):
                continue
            k = int(np.argmax((fc.boxes[:, 2] - fc.boxes[:, 0]) * (fc.boxes[:, 3] - fc.boxes[:, 1])))
            x0, y0, x1, y1 = fc.boxes[k]
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * margin / 2
            a, b = int(max(0, cx - half)), int(max(0, cy - half))
            tight = np.ascontiguousarray(img[b:int(cy + half), a:int(cx + half)])
            lm = fc.landmarks[k:k + 1]
            whole, _ = align_faces([img], [0], lm, spec)
            cut, _ = align_faces([tight], [0], lm - np.array([a, b], np.float32), spec)
            yield str(path), whole[0], cut[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["effnet_lite0_sbi", "meso4_df"],
                    help="registered names, or NAME=WEIGHTS for a training run's weights")
    ap.add_argument("--card", default=str(ROOT / "engines/weights/effnet_lite0_sbi.card.json"))
    ap.add_argument("--cache", nargs="+", default=[str(Path.home() / ".cache/dfscan/train/clips"),
                                                   str(Path.home() / ".cache/dfscan/train/utk")])
    ap.add_argument("--stills", type=int, default=120)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--margin", type=float, default=1.3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from engines.benchmark import machine_info
    from engines.registry import create_detector

    torch.set_num_threads(2)
    paths = held_out_sources(Path(a.card), [Path(c) for c in a.cache], a.stills)
    res = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "margin": a.margin, "sources": len(paths),
           "machine": machine_info(), "detectors": {}}
    for name in a.detectors:
        arch, _, weights = name.partition("=")  # NAME or NAME=WEIGHTS (a training run's file)
        det = create_detector(arch, **({"weights": weights} if weights else {}))
        srcs, whole, cut = zip(*pairs(paths, det.spec, a.margin, a.frames))
        with torch.inference_mode():
            pw = det.p_fake(det(torch.stack(whole).float())).numpy()
            pc = det.p_fake(det(torch.stack(cut).float())).numpy()
        black = [float((c.float().sum(0) == 0).float().mean()) for c in cut]
        res["detectors"][name] = {
            "faces": len(pw), "black_share_of_tight_crops_mean": round(float(np.mean(black)), 3),
            "mean_p_fake_whole": round(float(pw.mean()), 3), "mean_p_fake_tight": round(float(pc.mean()), 3),
            "share_fake_whole": round(float((pw >= 0.5).mean()), 3), "share_fake_tight": round(float((pc >= 0.5).mean()), 3),
            "clips": {s: [round(float(pw[i]), 3), round(float(pc[i]), 3)] for i, s in enumerate(srcs)
                      if not s.endswith(".jpg")}}
        print(name, {k: v for k, v in res["detectors"][name].items() if k != "clips"}, flush=True)
    write_json(res, a.out)


if __name__ == "__main__":
    main()
