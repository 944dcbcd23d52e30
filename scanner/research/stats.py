"""Bootstrap confidence intervals for AUC, and a paired bootstrap between two detectors.

Resampling is stratified (reals and fakes resampled separately, so every
replicate has both classes) and seeded, so reports are reproducible. The
interval is the percentile interval of ``n`` replicates (Efron & Tibshirani,
"An Introduction to the Bootstrap", 1993).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

# Below this many videos in the smaller class the percentile bootstrap is too narrow: with
# one real and one fake, or any small perfectly separated set, every replicate has the
# same AUC and the interval is [1.0, 1.0], a certainty that a handful of videos cannot give.
SMALL_CLASS = 10


def _replicates(y: np.ndarray, n: int, seed: int):
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for _ in range(n):
        yield np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])


def auc_ci(y, s, n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """``{"auc", "ci": [lo, hi], "n_boot"}``; ``auc`` None without both classes. With fewer
    than :data:`SMALL_CLASS` videos in a class also ``"ci_note"`` (the interval is too narrow)."""
    y, s = np.asarray(y, int), np.asarray(s, float)
    if y.min(initial=1) == y.max(initial=0):
        return {"auc": None, "ci": None, "n_boot": 0}
    reps = [roc_auc_score(y[i], s[i]) for i in _replicates(y, n, seed)]
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    out = {"auc": float(roc_auc_score(y, s)), "ci": [float(lo), float(hi)], "n_boot": n}
    smaller = int(min(y.sum(), len(y) - y.sum()))
    if smaller < SMALL_CLASS:
        out["ci_note"] = (f"{smaller} video(s) in the smaller class: the bootstrap interval "
                          "understates the uncertainty")
    return out


def paired_auc_diff(y, s_a, s_b, n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """AUC(a) - AUC(b) on the same videos with its bootstrap interval and the share of
    replicates where a does not beat b (a one-sided bootstrap p-value)."""
    y, s_a, s_b = np.asarray(y, int), np.asarray(s_a, float), np.asarray(s_b, float)
    d = [roc_auc_score(y[i], s_a[i]) - roc_auc_score(y[i], s_b[i]) for i in _replicates(y, n, seed)]
    a = (1 - level) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return {"diff": float(roc_auc_score(y, s_a) - roc_auc_score(y, s_b)), "ci": [float(lo), float(hi)],
            "p_not_better": float(np.mean(np.asarray(d) <= 0)), "n_boot": n}
