"""Which MesoNet variant makes the best default? Scores on real clips (+ optional fakes).

All real clips of ../shared/media are scanned once (faces detected and aligned once, the
four MesoNet variants share one input contract); each variant scores the same crops.
Reported per variant: mean video P(fake) on real clips, false-positive rate at 0.5, and,
when ``--fakes DIR`` holds fake face images (e.g. from ``dfscan synth``) plus ``--reals DIR``
real face images, image-level AUC (scikit-learn).

    python bench/detector_choice.py [--fakes synth/fake --reals synth/real]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from engines import create_detector
from engines.benchmark import machine_info
from scanner.config import ScanConfig
from scanner.research.features import iter_face_crops
from engines.files import write_json

VARIANTS = ("meso4_df", "meso4_f2f", "mesoinception4_df", "mesoinception4_f2f")


def _score(det, crops_u8: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(crops_u8).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        return det.p_fake(det(x)).numpy()


def video_scores(clips: list[Path], dets: dict) -> dict[str, dict[str, float]]:
    spec = next(iter(dets.values())).spec
    per_frame: dict[str, dict[str, list[float]]] = {n: {} for n in dets}
    for path, _, crops in iter_face_crops(clips, spec, ScanConfig(frames=16)):
        for name, det in dets.items():
            per_frame[name].setdefault(path.name, []).append(float(_score(det, crops).max()))
    return {n: {clip: float(np.mean(v)) for clip, v in d.items()} for n, d in per_frame.items()}


def image_auc(dets: dict, reals: Path, fakes: Path) -> dict[str, float]:
    def load(folder):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
        if not files:
            raise SystemExit(f"bench/detector_choice.py: no .png/.jpg face images in {folder}")
        return np.stack([np.asarray(Image.open(p).convert("RGB").resize((256, 256))) for p in files])

    r, f = load(reals), load(fakes)
    y = np.r_[np.zeros(len(r)), np.ones(len(f))]
    return {n: float(roc_auc_score(y, np.r_[_score(d, r), _score(d, f)])) for n, d in dets.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"),
                    help="shared/ folder holding media/portrait/*.mp4 and media/crowd_1080p.mp4")
    ap.add_argument("--reals", help="real face images (e.g. dfscan synth's real/), with --fakes")
    ap.add_argument("--fakes", help="fake face images (e.g. dfscan synth's fake/), with --reals")
    ap.add_argument("--out", default="bench/results/detector_choice.json")
    args = ap.parse_args()
    media = Path(args.shared) / "media"
    clips = sorted((media / "portrait").glob("*.mp4")) + [media / "crowd_1080p.mp4"]
    missing = [str(c) for c in clips if not c.is_file()] + ([] if len(clips) > 1 else [f"{media}/portrait/*.mp4"])
    if missing:
        raise SystemExit(f"bench/detector_choice.py: real clips not found: {', '.join(missing)} "
                         "(--shared PATH names the folder that holds media/)")
    if bool(args.reals) != bool(args.fakes):
        raise SystemExit("bench/detector_choice.py: --reals and --fakes go together (folders of face images)")
    dets = {n: create_detector(n) for n in VARIANTS}
    scores = video_scores(clips, dets)
    res = {"machine": machine_info("cpu"), "real_clips": len(clips), "variants": {}}
    for n, s in scores.items():
        v = np.array(list(s.values()))
        res["variants"][n] = {"mean_p_fake_real": round(float(v.mean()), 4),
                              "fpr_at_0.5": round(float((v >= 0.5).mean()), 4),
                              "max_p_fake_real": round(float(v.max()), 4),
                              "per_clip": {k: round(x, 4) for k, x in s.items()}}
    if args.reals and args.fakes:
        for n, auc in image_auc(dets, Path(args.reals), Path(args.fakes)).items():
            res["variants"][n]["self_blended_auc"] = round(auc, 4)
    write_json(res, args.out)
    print(json.dumps({n: {k: v for k, v in d.items() if k != "per_clip"}
                      for n, d in res["variants"].items()}, indent=2))


if __name__ == "__main__":
    main()
