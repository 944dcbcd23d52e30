"""Small faces of compressed videos vs P(fake), on the held-out-identity set (b).

A face that is small in a compressed video is magnified by alignment together with
its compression blocks and ringing. This scores the real and fake crops of the
held-out-identity set (``bench/validation.py heldout``: 300 real faces of people no
shipped detector was trained on, 300 fakes of them, self-blended or swapped by --set) clean and after
``scanner.research.augment``-style degradations in that order: shrink to F, JPEG
at quality Q at that size, magnify back (bicubic). Reports mean P(fake) of reals,
the share of reals called fake (>= 0.5), the share of fakes caught, and the AUC.

``python bench/low_res_probe.py --detectors effnet_lite0_sbi meso4_df --out bench/results/low_res_probe.json``
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.files import write_json  # noqa: E402
from scanner.research.augment import jpeg, magnified  # noqa: E402

CONDITIONS = {"clean": None, "shrink0.35_jpeg40": (0.35, 40), "shrink0.25_jpeg60": (0.25, 60)}


def read(heldout: Path, kind: str, label: str) -> list[np.ndarray]:
    """The ``label`` crops of the held-out ``kind`` set (``heldout_<kind>.csv``), RGB uint8."""
    labels = heldout / f"heldout_{kind}.csv"
    if not labels.is_file():
        raise SystemExit(f"{labels}: missing; build the set first: python bench/validation.py heldout")
    with open(labels) as f:
        files = [heldout / r["path"] for r in csv.DictReader(f) if r["label"] == label]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files]


def scores(det, imgs: list[np.ndarray]) -> np.ndarray:
    s = det.spec.size
    x = torch.from_numpy(np.stack([cv2.resize(i, (s, s), interpolation=cv2.INTER_AREA) for i in imgs]))
    with torch.inference_mode():
        return det.p_fake(det(x.permute(0, 3, 1, 2).float())).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["effnet_lite0_sbi", "meso4_df"],
                    help="registered names, or NAME=WEIGHTS for a training run's weights")
    ap.add_argument("--heldout", default=str(Path.home() / ".cache/dfscan/heldout"))
    ap.add_argument("--set", default="sbi", choices=("sbi", "mfs"), help="which held-out fakes")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from engines.benchmark import machine_info
    from engines.registry import create_detector

    torch.set_num_threads(2)
    reals, fakes = read(Path(a.heldout), a.set, "real"), read(Path(a.heldout), a.set, "fake")
    res = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "set": a.set, "reals": len(reals), "fakes": len(fakes),
           "machine": machine_info(), "detectors": {}}
    for name in a.detectors:
        arch, _, weights = name.partition("=")
        det = create_detector(arch, **({"weights": weights} if weights else {}))
        rows = {}
        for cond, fq in CONDITIONS.items():
            deg = (lambda i: i) if fq is None else \
                (lambda i, f=fq[0], q=fq[1]: magnified(i, f, lambda s: jpeg(s, q), cubic=True))
            r, f = scores(det, [deg(i) for i in reals]), scores(det, [deg(i) for i in fakes])
            rows[cond] = {"mean_p_fake_reals": round(float(r.mean()), 3), "reals_called_fake": round(float((r >= 0.5).mean()), 3),
                          "fakes_caught": round(float((f >= 0.5).mean()), 3),
                          "auc": round(float(roc_auc_score([0] * len(r) + [1] * len(f), np.r_[r, f])), 4)}
            print(name, cond, rows[cond], flush=True)
        res["detectors"][name] = rows
    write_json(res, a.out)


if __name__ == "__main__":
    main()
