"""`dfscan probe fit`: a linear probe on a frozen backbone, as in "How Close Are
Other Computer Vision Tasks to Deepfake Detection?" (Lu & Ebrahimi, IJCNN 2023).

Classifier: scikit-learn ``LogisticRegression`` (L-BFGS) on standardised
frozen features, rather than a torch linear layer trained by SGD. With the
features cached the problem is small and convex, so L-BFGS reaches the optimum
deterministically with no learning rate, epoch count or early stopping to tune;
the only knob is the L2 strength ``C``, chosen on the held-out split by EER as
the paper selects its models. ``class_weight='balanced'`` keeps unequal
real/fake counts from shifting the decision. The standardisation is folded into
the weights afterwards, so the saved detector is exactly backbone + one
``nn.Linear(D, 1)`` and runs on every engine.

Split: ``GroupShuffleSplit`` on the set's groups (a video, or a real face and
its self-blended fake), so frames of one video never sit on both sides. The
saved probe is the one trained on the train split; its threshold is P(fake) at
the held-out video-level EER.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit
from sklearn.preprocessing import StandardScaler

from engines.errors import DfscanError
from engines.files import write_json

from ..output import writable
from .evaluate import binary_metrics, eer

log = logging.getLogger(__name__)
DEFAULT_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class ProbeFit:
    """A fitted probe on raw (unstandardised) features: ``logit = X @ weight + bias``."""

    weight: np.ndarray  # float64 (D,)
    bias: float
    C: float
    threshold: float  # P(fake) at the held-out video-level EER
    train: np.ndarray  # row indices
    heldout: np.ndarray
    selection: list = field(default_factory=list)  # per-C held-out EER/AUC
    heldout_frames: dict = field(default_factory=dict)
    heldout_videos: dict = field(default_factory=dict)


def group_split(y: np.ndarray, groups: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/held-out row indices, split by group, both classes on both sides."""
    if len(set(groups.tolist())) < 4:
        raise DfscanError(f"need at least 4 groups (videos/identities) to split, got {len(set(groups.tolist()))}")
    gss = GroupShuffleSplit(n_splits=50, test_size=test_size, random_state=seed)
    for tr, te in gss.split(np.zeros(len(y)), y, groups):
        if len(set(y[tr].tolist())) == 2 and len(set(y[te].tolist())) == 2:
            return tr, te
    raise DfscanError("no group split puts real and fake on both sides: add more videos of the rarer class")


def _mean_by(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per unique key (video score = mean of its frame scores)."""
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inv, weights=values) / np.bincount(inv)


def fit_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray, item: np.ndarray | None = None,
              Cs=DEFAULT_CS, test_size: float = 0.3, seed: int = 0) -> ProbeFit:
    """Fit logistic-regression probes for each ``C``; keep the lowest held-out EER.

    ``X`` float (n, D) frozen features; ``y`` (n,) 1 = fake; ``groups`` (n,)
    split groups; ``item`` (n,) file index for video-level metrics (default: groups).
    Ties in EER go to the higher AUC, then to the smaller ``C`` (simpler model).
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, int)
    item = np.asarray(groups if item is None else item)
    tr, te = group_split(y, groups, test_size, seed)
    scaler = StandardScaler().fit(X[tr])
    Xtr, Xte = scaler.transform(X[tr]), scaler.transform(X[te])
    best, selection = None, []
    for C in Cs:
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(Xtr, y[tr])
        s = clf.predict_proba(Xte)[:, 1]
        e, _ = eer(y[te], s)
        auc = float(roc_auc_score(y[te], s))
        selection.append({"C": C, "heldout_eer": e, "heldout_auc": auc})
        key = (e, -auc, C)
        if best is None or key < best[0]:
            best = (key, C, clf, s)
    _, C, clf, s = best
    weight = clf.coef_[0] / scaler.scale_
    bias = float(clf.intercept_[0] - np.sum(clf.coef_[0] * scaler.mean_ / scaler.scale_))
    vid, vs = _mean_by(s, item[te])
    vy = np.array([y[te][item[te] == v][0] for v in vid])
    _, thr = eer(vy, vs)
    return ProbeFit(weight, bias, float(C), float(min(max(thr, 0.0), 1.0)), tr, te, selection,
                    binary_metrics(y[te], s, units=item[te]), binary_metrics(vy, vs, float(thr)))


def run_probe_fit(args) -> int:
    """CLI handler of ``dfscan probe fit``."""
    from engines.detectors.probe import CARD, WEIGHTS, save_probe

    from .features import CropConfig, CropSource, backbone_embedder, embed_items
    from .labelled import read_labelled

    writable(Path(args.out) / CARD)  # the directory's files, and --json, before any feature is made
    if args.json:
        writable(args.json)
        # Written last, a --json naming the probe's card (or weights) replaced it with the
        # summary: the probe just fitted could not be loaded.
        if Path(args.json).resolve() in {(Path(args.out) / n).resolve() for n in (CARD, WEIGHTS)}:
            raise DfscanError(f"probe fit: --json {args.json} is a file of the probe folder {args.out}: "
                              "name another file")
    items = read_labelled(args.labels)
    emb, model = backbone_embedder(args.backbone, args.backbone_weights, args.arch, args.size, args.device,
                                   args.batch_size)
    src = CropSource(CropConfig(frames=args.frames, max_faces=1, device=args.device))
    fs = embed_items(items, emb, src, args.cache, _progress(args))
    fit = fit_probe(fs.X, fs.y, fs.groups, fs.item, args.C or DEFAULT_CS, args.heldout, args.seed)
    extra = {"training": {
        "labels": str(args.labels), "classifier": "sklearn LogisticRegression(class_weight=balanced), "
        "standardisation folded into the weights", "C": fit.C, "selection": fit.selection,
        "crops": {"train": int(len(fit.train)), "heldout": int(len(fit.heldout)),
                  "fake": int(fs.y.sum()), "real": int((1 - fs.y).sum())},
        "files": len(items), "skipped": fs.skipped, "frames_per_video": args.frames, "seed": args.seed,
        "heldout_frame_metrics": fit.heldout_frames, "heldout_video_metrics": fit.heldout_videos,
        "threshold_from": "held-out video-level EER"}}
    out = save_probe(args.out, model, emb.spec, args.backbone_weights, fit.weight, fit.bias, fit.threshold, extra)
    hv, hf = fit.heldout_videos, fit.heldout_frames
    print(f"probe on {args.backbone} ({model.info.arch}, D={model.info.feature_dim}): {len(fs.y)} crops from "
          f"{len(items) - len(fs.skipped)} files ({len(fs.skipped)} skipped); C={fit.C:g}")
    print(f"held-out frames: AUC {_f(hf['auc'])}  EER {_f(hf['eer'])}  |  held-out files ({hv['n']}): "
          f"AUC {_f(hv['auc'])}  EER {_f(hv['eer'])}  ACC@thr {_f(hv['acc'])}  threshold {fit.threshold:.4f}")
    if args.json:  # written after the line that named only the probe folder
        write_json(extra["training"], args.json)
    also = f" and {args.json}" if args.json else ""
    print(f"wrote {out}/{also} (scan with: dfscan scan --detector probe --weights {out} ...)")
    return 0


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _progress(args):
    if getattr(args, "quiet", False):
        return lambda x: x
    from rich.progress import track

    return lambda xs: track(xs, description="embedding", transient=True)
