"""Regenerate engines/data/parity_faces.npz: real aligned faces for engine parity checks.

Faces come from real clips (LivePortrait driving clips, MIT; facenet-pytorch's crowd
clip, MIT), aligned with the MesoNet template at 256 px. Run from the repo root:
    python bench/make_parity_faces.py [--shared ../shared]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engines import create_detector
from scanner.config import ScanConfig
from scanner.research.features import iter_face_crops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", default="engines/data/parity_faces.npz")
    args = ap.parse_args()
    media = Path(args.shared) / "media"
    clips = [media / "portrait" / f"{n}.mp4" for n in ("d1", "d5", "d7", "d13", "d18", "d19")]
    clips.append(media / "crowd_1080p.mp4")
    spec = create_detector("meso4_df").spec
    faces, sources = [], []
    for clip in clips:
        per_clip = 0
        for path, idx, crops in iter_face_crops([clip], spec, ScanConfig(frames=3, max_faces=3)):
            for c in crops[: 3 if "crowd" in clip.name else 1]:
                if per_clip < (4 if "crowd" in clip.name else 2):
                    faces.append(c)
                    sources.append(f"{clip.name}#frame{idx}")
                    per_clip += 1
    np.savez_compressed(args.out, faces=np.stack(faces), sources=np.array(sources))
    print(f"wrote {len(faces)} faces to {args.out}")


if __name__ == "__main__":
    main()
