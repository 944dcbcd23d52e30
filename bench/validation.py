"""Validation of detectors on real vs AI-generated talking heads (``../shared/media/validation``).

Evaluation only: nothing here trains or tunes on these clips. Two steps:

``normalise``: every clip re-encoded the same way so that size, codec, frame
rate or audio cannot give the label away: the first ``--seconds`` seconds,
resampled to 25 fps, cropped to a square around the median face box (side 2x
the box, clamped to the frame, never padded), resized to 256x256, H.264
(libx264, CRF 23, yuv420p), no audio. Written outside git with a
``labels.csv`` (``path,label,group,subset``; subset = generator, ``real`` for
reals).

``eval``: scans the clips (original or normalised) with each detector through
``scanner.pipeline.scan_paths`` (the scan's sampling, faces, engine), keeps the
per-face scores, and reports video AUC with a bootstrap 95 % interval overall
and per generator (its fakes vs all reals), for frame-level (``frames``) and
track-level (``tracks``) video scores, plus a paired bootstrap of the first
detector against the others. ``--perturb`` degrades every crop first.

    python bench/validation.py normalise --out ~/.cache/dfscan/validation_norm
    python bench/validation.py eval ~/.cache/dfscan/validation_norm/labels.csv \\
        --detectors effnet_lite0_sbi meso4_df --json bench/results/validation_normalised.json
    python bench/validation.py eval ../shared/media/validation/labels.csv \\
        --json bench/results/validation_original.json             # the clips as shipped
    python bench/validation.py eval ~/.cache/dfscan/validation_norm/labels.csv \\
        --detectors baseline_sharpness effnet_lite0_sbi effnet_lite0_adm meso4_df \\
        --json bench/results/validation_shortcut.json  # a shortcut (face sharpness) against each
    python bench/validation.py eval ~/.cache/dfscan/validation_norm/labels.csv \\
        --detectors baseline_sharpness meso4_df --perturb jpeg:40,blur:1.5,downscale:0.5,noise:5 \\
        --json bench/results/validation_shortcut_perturbed.json  # the same after degrading every crop
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media" / "validation"


def _read_frames(path: Path, seconds: float, fps: float = 25.0) -> list[np.ndarray]:
    import av

    out, next_t = [], 0.0
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        for fr in c.decode(st):
            t = float(fr.time) if fr.time is not None else len(out) / fps
            if t > seconds:
                break
            while t + 1e-6 >= next_t and next_t <= seconds:  # nearest-previous frame at 25 fps
                out.append(fr.to_ndarray(format="rgb24"))
                next_t += 1 / fps
    return out


def _square(frames: list[np.ndarray], det) -> tuple[int, int, int]:
    from scanner.decode import Frame
    from scanner.research.features import _downscale

    picks = [frames[i] for i in np.linspace(0, len(frames) - 1, min(8, len(frames))).astype(int)]
    boxes = []
    for im in picks:
        small, scale = _downscale(im, 640)
        f = det.detect([Frame(0, 0.0, im, small, scale)])[0]
        if len(f):
            boxes.append(f.boxes[0])
    h, w = frames[0].shape[:2]
    if not boxes:  # no face: the centre square
        side = min(h, w)
        return (w - side) // 2, (h - side) // 2, side
    b = np.median(np.array(boxes), 0)
    side = int(min(min(h, w), 2.0 * max(b[2] - b[0], b[3] - b[1])))
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, side


def _encode(frames: list[np.ndarray], box, out: Path, size: int = 256) -> None:
    import av
    import cv2

    x0, y0, side = box
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width = st.height = size
        st.pix_fmt = "yuv420p"
        # Threads pinned: x264's output depends on its thread count, which defaults to one per CPU
        # here (2 on the machines that made the committed copies: same bytes as unpinned there).
        st.options = {"crf": "23", "preset": "medium", "threads": "2"}
        for im in frames:
            crop = im[y0:y0 + side, x0:x0 + side]
            interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=interp)),
                                            format="rgb24")
            for p in st.encode(fr):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def normalise(args) -> int:
    from scanner.faces import FaceDetector

    det = FaceDetector(max_side=640, min_face=40, max_faces=1)
    out = Path(args.out).expanduser().absolute()  # its labels.csv names the clips by absolute paths
    rows = []
    for it in _read_labels(MEDIA / "labels.csv", "normalise"):
        src = Path(it["path"])
        dst = out / src.relative_to(MEDIA).with_suffix(".mp4")
        frames = _read_frames(src, args.seconds)
        if not dst.exists():
            _encode(frames, _square(frames, det), dst)
        rows.append({"path": str(dst), "label": it["label"], "group": it["group"], "subset": it["subset"]})
        print(f"{src.relative_to(MEDIA)} -> {dst.name} ({len(frames)} frames)", flush=True)
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "group", "subset"])
        w.writeheader()
        w.writerows(rows)
    return 0


def _scan(paths: list[Path], detector: str, perturb: str | None, frames: int) -> dict[str, dict]:
    from scanner.config import ScanConfig
    from scanner.pipeline import build_context, scan_paths

    # NAME=WEIGHTS scores a registered architecture with other weights (e.g. a dfscan train run).
    name, _, weights = detector.partition("=")
    ctx = build_context(ScanConfig(detector=name, weights=weights or None, frames=frames, details=True,
                                   hash=False, progress=False))
    if perturb:
        from scanner.research.augment import parse_perturb
        from scanner.research.perturb import Perturbed

        ctx.engine = Perturbed(ctx.engine, parse_perturb(perturb), 0)
    return {row["path"]: row for row in scan_paths(paths, ctx=ctx)}


def _video_scores(row: dict) -> dict[str, float | None]:
    """Frame-level (max face per frame, mean over frames) and track-level video scores."""
    from scanner.tracks import decide_tracks, tracks_of_detail

    det = row.get("frames_detail") or []
    faces = [[f["score"] for f in fr.get("faces", [])] for fr in det]
    per_frame = [max(fs) for fs in faces if fs]
    frames = float(np.mean(per_frame)) if per_frame else None
    # the scan's own tracks (stored per face), not boxes re-linked without their looks
    tracks = decide_tracks(tracks_of_detail(det), 0.5, 3, len(det)).score if per_frame else None
    return {"frames": frames, "tracks": tracks}


def _metrics(labels: list[dict], scores: dict[str, float | None]) -> dict:
    from scanner.research.stats import auc_ci

    ok = [r for r in labels if scores.get(r["path"]) is not None]
    y = np.array([r["label"] == "fake" for r in ok], int)
    s = np.array([scores[r["path"]] for r in ok])
    res = {"overall": {**auc_ci(y, s), "n": len(ok), "n_fake": int(y.sum())}, "excluded": len(labels) - len(ok),
           "generators": {}}
    for g in sorted({r["subset"] for r in ok} - {"real"}):
        sel = np.array([r["subset"] in (g, "real") for r in ok])
        res["generators"][g] = {**auc_ci(y[sel], s[sel]), "n_fake": int(y[sel].sum())}
    return res


def _read_labels(path: str | Path, cmd: str = "eval") -> list[dict]:
    """The labels CSV's rows as ``path,label,group,subset``, read by ``dfscan eval``'s reader
    (:func:`scanner.research.labelled.manifest_rows`: paths relative to its folder, labels
    real/fake/0/1, every file present), or one line naming what is wrong. A normalised
    ``labels.csv`` has its subsets; in the shipped one (``path,label,...,generator``) a fake's
    subset is its generator, and a plain ``path,label`` CSV's fakes form one subset, ``fake``.
    Reals are subset ``real`` in all three: each generator is measured against every real."""
    from scanner.research.labelled import DatasetError, manifest_rows, refuse_duplicates

    try:
        pairs = list(manifest_rows(Path(path)))
        refuse_duplicates([item for item, _ in pairs], Path(path))  # as dfscan eval: counted once
    except OSError as e:
        raise SystemExit(f"bench/validation.py {cmd}: cannot read {path}: {e.strerror or e}") from None
    except DatasetError as e:  # names the file (and row)
        raise SystemExit(f"bench/validation.py {cmd}: {e}") from None
    if not pairs:
        raise SystemExit(f"bench/validation.py {cmd}: {path}: no rows")
    rows = []
    for item, row in pairs:
        label = "fake" if item.label else "real"
        if "subset" in row:
            subset = item.subset
        else:
            subset = (row.get("generator") or "fake") if item.label else "real"
        rows.append({"path": str(item.path), "label": label, "group": row.get("group") or row["path"],
                     "subset": subset})
    return rows


def evaluate(args) -> int:
    from scanner.research.stats import paired_auc_diff

    labels = _read_labels(args.labels)
    paths = [Path(r["path"]) for r in labels]
    res = {"labels": str(args.labels), "perturb": args.perturb, "frames": args.frames, "detectors": {},
           "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                       "note": "shared 2-core box, loaded by other jobs"}}
    per_video = {}
    for name in args.detectors:
        t0 = time.time()
        rows = _scan(paths, name, args.perturb, args.frames)
        vs = {p: _video_scores(rows.get(p, {})) for p in map(str, paths)}
        per_video[name] = vs
        res["detectors"][name] = {
            "seconds": round(time.time() - t0, 1),
            **{agg: _metrics(labels, {p: v[agg] for p, v in vs.items()}) for agg in ("frames", "tracks")},
            "videos": [{"path": r["path"], "label": r["label"], "subset": r["subset"], **vs[r["path"]],
                        "verdict": rows.get(r["path"], {}).get("verdict")} for r in labels]}
        print(name, {a: res["detectors"][name][a]["overall"] for a in ("frames", "tracks")}, flush=True)
    first, others = args.detectors[0], args.detectors[1:]
    for other in others:
        for agg in ("frames", "tracks"):
            common = [r for r in labels if per_video[first][r["path"]][agg] is not None
                      and per_video[other][r["path"]][agg] is not None]
            y = [r["label"] == "fake" for r in common]
            res.setdefault("paired", {})[f"{first}-vs-{other}:{agg}"] = paired_auc_diff(
                y, [per_video[first][r["path"]][agg] for r in common],
                [per_video[other][r["path"]][agg] for r in common])
    from engines.files import write_json

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(res, args.json)  # replaced whole: a kill mid-write keeps the previous results
    print(json.dumps(res.get("paired", {}), indent=1))
    return 0


def heldout(args) -> int:
    """(b) Held-out identities of the training cache: real crops + self-blended / swapped fakes
    (same seed and generators as training's validation), as PNGs with landmarks, one manifest
    per fake kind (reals shared), scored by `dfscan eval` (each detector re-aligns from the
    landmarks with its own template)."""
    import cv2
    import torch

    from scanner.research.labelled import format_landmarks
    from scanner.research.data import FaceCache, split_groups
    from scanner.research.samples import KIND_MFS, make_fake

    cache = FaceCache.load(args.cache)
    pool = np.flatnonzero(split_groups(cache.groups, 0.15, args.seed))
    out = Path(args.out).expanduser()
    (out / "real").mkdir(parents=True, exist_ok=True)
    (out / "fake").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([args.seed, 7])
    picks = rng.choice(pool, min(args.n, len(pool)), replace=False)
    rows = {"sbi": [], "mfs": []}
    reals = []
    for k, i in enumerate(picks):
        lm = format_landmarks(cache.landmarks[i])
        cv2.imwrite(str(out / "real" / f"{k:04d}.png"), cv2.cvtColor(np.asarray(cache.crops[i]), cv2.COLOR_RGB2BGR))
        reals.append({"path": f"real/{k:04d}.png", "label": "real", "group": cache.groups[i], "landmarks": lm})
        for kind, p_mfs in (("sbi", 0.0), ("mfs", 1.0)):
            fake, _, got = make_fake(cache, int(i), pool, cache.groups, np.random.default_rng([args.seed, k]), p_mfs)
            if kind == "mfs" and got != KIND_MFS:
                continue
            name = f"fake/{k:04d}_{kind}.png"
            cv2.imwrite(str(out / name), cv2.cvtColor(fake, cv2.COLOR_RGB2BGR))
            rows[kind].append({"path": name, "label": "fake", "group": cache.groups[i], "landmarks": lm})
    for kind, fakes in rows.items():
        with open(out / f"heldout_{kind}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "label", "group", "subset", "landmarks"])
            w.writeheader()
            w.writerows({**r, "subset": kind} for r in reals + fakes)
    print(f"{len(reals)} reals, {len(rows['sbi'])} sbi, {len(rows['mfs'])} mfs fakes in {out}")
    del torch
    return 0


def main(argv=None) -> int:
    from scanner.argtypes import SEED, int_in, positive

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("normalise")
    n.add_argument("--out", default="~/.cache/dfscan/validation_norm")
    n.add_argument("--seconds", type=positive, default=8.0)
    n.set_defaults(func=normalise)
    e = sub.add_parser("eval")
    e.add_argument("labels", help="labels.csv: the normalised copy (path,label,group,subset), the shipped one "
                   "(path,label,...,generator) or any path,label CSV")
    e.add_argument("--detectors", nargs="+", default=["effnet_lite0_sbi", "meso4_df"],
                   help="registered names, or NAME=WEIGHTS for other weights of that architecture")
    e.add_argument("--frames", type=int_in(1), default=32)
    e.add_argument("--perturb")
    e.add_argument("--json", required=True)
    e.set_defaults(func=evaluate)
    h = sub.add_parser("heldout")
    h.add_argument("--cache", nargs="+", default=[str(Path.home() / ".cache/dfscan/train/clips"),
                                                   str(Path.home() / ".cache/dfscan/train/utk")])
    h.add_argument("--out", default="~/.cache/dfscan/heldout")
    h.add_argument("--n", type=int_in(1), default=300)
    h.add_argument("--seed", type=SEED, default=0)
    h.set_defaults(func=heldout)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
