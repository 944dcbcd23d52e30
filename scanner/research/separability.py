"""Backbone separability ("How Close Are Other Computer Vision Tasks to Deepfake
Detection?", Lu & Ebrahimi, IJCNN 2023): can a backbone tell real from fake
with no training at all?

Embeddings of a labelled set -> PCA to 2-D -> K-means with k = 2 -> each cluster
is read as a class; accuracy is the share of points whose cluster matches the
label, with the two cluster names swapped when that share is below 50 % (the
clustering does not know which cluster is "fake"). TPR = share of fakes in the
fake cluster, TNR = share of reals in the real cluster, after the swap.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from engines.errors import DfscanError
from engines.files import write_json


def separability(X: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Separability of embeddings ``X`` ``(n, D)`` with labels ``y`` (1 = fake).

    Returns accuracy/TPR/TNR, whether cluster names were swapped, the 2-D
    points ``(n, 2)``, cluster ids after the swap ``(n,)`` (1 = "fake" cluster),
    the two centres in 2-D and the PCA explained-variance ratios.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, int)
    if X.shape[0] < 2 or len(set(y.tolist())) < 2:
        raise DfscanError("separability needs at least one real and one fake embedding")
    _check_features(X)
    pca = PCA(n_components=min(2, X.shape[1]), random_state=seed)
    Z = pca.fit_transform(X)
    if Z.shape[1] == 1:  # 1-D features: pad so plots and centres stay 2-D
        Z = np.hstack([Z, np.zeros_like(Z)])
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(Z)
    c = km.labels_.astype(int)
    centres = km.cluster_centers_.copy()
    acc = float(np.mean(c == y))
    swapped = acc < 0.5
    if swapped:
        c, acc, centres = 1 - c, 1.0 - acc, centres[::-1].copy()
    tpr = float(np.mean(c[y == 1] == 1))
    tnr = float(np.mean(c[y == 0] == 0))
    return {"accuracy": acc, "tpr": tpr, "tnr": tnr, "swapped": bool(swapped), "n": int(len(y)),
            "n_fake": int(y.sum()), "n_real": int((1 - y).sum()),
            "explained_variance": [float(v) for v in pca.explained_variance_ratio_],
            "points": Z, "clusters": c, "centres": centres}


def _check_features(X: np.ndarray) -> None:
    """DfscanError for embeddings PCA/K-means cannot score: NaN/inf were a scikit-learn
    traceback, and identical rows gave NaN explained variance (invalid JSON) and an
    "accuracy" of one cluster holding every point."""
    bad = int((~np.isfinite(X)).any(axis=1).sum())
    if bad:
        raise DfscanError(f"{bad} of {len(X)} embeddings contain NaN or inf: the model's features are broken")
    if X.shape[1] == 0 or not np.ptp(X, axis=0).any():
        raise DfscanError(f"all {len(X)} embeddings are identical: the model's features separate nothing")


def plot(res: dict, y: np.ndarray, path: Path, title: str = "") -> None:
    """Scatter of the 2-D embedding coloured by label; K-means regions and boundary.

    With two centres the K-means boundary is the perpendicular bisector of the
    segment joining them; regions are shaded by nearest centre.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .evaluate import plot_text  # a model file name with two '$' is no mathtext

    Z, cen = res["points"], res["centres"]
    pad = 0.1 * (np.ptp(Z, axis=0) + 1e-9)
    lo, hi = Z.min(0) - pad, Z.max(0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    grid = np.stack([gx, gy], -1)
    nearest = (np.linalg.norm(grid - cen[1], axis=-1) < np.linalg.norm(grid - cen[0], axis=-1)).astype(float)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(gx, gy, nearest, levels=[-0.5, 0.5, 1.5], colors=["#dbe9f6", "#f9dede"], alpha=0.6)
    ax.contour(gx, gy, nearest, levels=[0.5], colors="k", linewidths=1.2)
    y = np.asarray(y)
    ax.scatter(*Z[y == 0].T, s=10, c="tab:blue", label=f"real ({(y == 0).sum()})")
    ax.scatter(*Z[y == 1].T, s=10, c="tab:red", label=f"fake ({(y == 1).sum()})")
    ax.scatter(*cen.T, marker="x", s=80, c="k", label="K-means centres")
    ev = res["explained_variance"] + [0.0]
    ax.set(xlabel=f"PC1 ({ev[0]:.1%})", ylabel=f"PC2 ({ev[1]:.1%})", xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]),
           title=(plot_text(title) + "\n" if title else "")
           + f"acc {res['accuracy']:.3f}  TPR {res['tpr']:.3f}  TNR {res['tnr']:.3f}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_separability(args) -> int:
    """CLI handler of ``dfscan separability``."""
    from .features import CropConfig, CropSource, backbone_embedder, detector_embedder, embed_items
    from .labelled import read_labelled

    from ..output import writable

    out = writable(args.out)
    items = read_labelled(args.labels)
    if args.backbone:
        emb, _ = backbone_embedder(args.backbone, args.backbone_weights, args.arch, args.size, args.device)
        what = f"{args.backbone} {args.arch or ''} {Path(args.backbone_weights).name}".replace("  ", " ")
    else:
        emb, _ = detector_embedder(args.detector, args.weights, args.device)
        what = f"detector {args.detector} (penultimate features)"
    fs = embed_items(items, emb, CropSource(CropConfig(frames=args.frames, device=args.device)), args.cache)
    res = separability(fs.X, fs.y, args.seed)
    plot(res, fs.y, out.with_suffix(".png"), what)
    summary = {k: v for k, v in res.items() if k not in ("points", "clusters", "centres")}
    summary.update({"model": what, "feature_dim": int(fs.X.shape[1]), "labels": str(args.labels),
                    "skipped": fs.skipped})
    write_json(summary, out)
    print(f"separability of {what} on {summary['n']} crops ({summary['n_real']} real, {summary['n_fake']} fake): "
          f"accuracy {res['accuracy']:.4f}  TPR {res['tpr']:.4f}  TNR {res['tnr']:.4f}"
          f"{'  (clusters swapped)' if res['swapped'] else ''}")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0
