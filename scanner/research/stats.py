"""Bootstrap confidence intervals for AUC, and a paired bootstrap between two detectors.

Resampling is stratified (reals and fakes resampled separately, so every
replicate has both classes) and seeded, so reports are reproducible. The
interval is the percentile interval of ``n`` replicates (Efron & Tibshirani,
"An Introduction to the Bootstrap", 1993).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

# Below this many videos in the smaller class the percentile bootstrap is too narrow: with
# one real and one fake, or any small perfectly separated set, every replicate has the
# same AUC and the interval is [1.0, 1.0], a certainty that a handful of videos cannot give.
SMALL_CLASS = 10


# Index and rank arrays of one chunk of replicates hold about this many numbers each: the
# memory of an interval is bounded however many videos and replicates (2000 x 100k videos
# held at once was 1.6 GB of indices alone).
_CHUNK_CELLS = 1 << 20


def _replicates(y: np.ndarray, n: int, seed: int):
    """The ``n`` replicates as chunks of ``(rows, len(y))`` int indices, positives first in each
    row (their count is ``y.sum()``); drawn in the same order whatever the chunk size."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rows = max(1, _CHUNK_CELLS // max(len(y), 1))
    for k in range(0, n, rows):
        yield np.stack([np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
                        for _ in range(min(rows, n - k))])


def _replicate_aucs(s: np.ndarray, idx: np.ndarray, n_pos: int) -> np.ndarray:
    """AUC of every replicate row of ``idx`` (positives in its first ``n_pos`` columns).

    The Mann-Whitney identity with average ranks for ties, which is what
    ``roc_auc_score`` computes (a tie counts one half), vectorised over replicates:
    sklearn's per-call input validation made 2000 replicates take ~10 s per interval.
    """
    n_neg = idx.shape[1] - n_pos
    ranks = rankdata(s[idx], axis=1)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _bootstrap(y: np.ndarray, scores: list, n: int, seed: int) -> list[np.ndarray]:
    """Each score array's AUC on the same ``n`` replicates, one chunk of them at a time."""
    n_pos, out = int(y.sum()), [[] for _ in scores]
    for idx in _replicates(y, n, seed):
        for aucs, s in zip(out, scores):
            aucs.append(_replicate_aucs(s, idx, n_pos))
    return [np.concatenate(a) for a in out]


def auc_ci(y, s, n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """``{"auc", "ci": [lo, hi], "n_boot"}``; ``auc`` None without both classes. With fewer
    than :data:`SMALL_CLASS` videos in a class also ``"ci_note"`` (the interval is too narrow)."""
    y, s = np.asarray(y, int), np.asarray(s, float)
    if y.min(initial=1) == y.max(initial=0):
        return {"auc": None, "ci": None, "n_boot": 0}
    auc = float(roc_auc_score(y, s))  # first: it refuses NaN scores, which ranks would spread
    (reps,) = _bootstrap(y, [s], n, seed)
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    out = {"auc": auc, "ci": [float(lo), float(hi)], "n_boot": n}
    smaller = int(min(y.sum(), len(y) - y.sum()))
    if smaller < SMALL_CLASS:
        out["ci_note"] = (f"{smaller} video(s) in the smaller class: the bootstrap interval "
                          "understates the uncertainty")
    return out


def paired_auc_diff(y, s_a, s_b, n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """AUC(a) - AUC(b) on the same videos with its bootstrap interval and the share of
    replicates where a does not beat b (a one-sided bootstrap p-value)."""
    y, s_a, s_b = np.asarray(y, int), np.asarray(s_a, float), np.asarray(s_b, float)
    diff = float(roc_auc_score(y, s_a) - roc_auc_score(y, s_b))  # refuses NaN scores
    reps_a, reps_b = _bootstrap(y, [s_a, s_b], n, seed)
    d = reps_a - reps_b
    a = (1 - level) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return {"diff": diff, "ci": [float(lo), float(hi)],
            "p_not_better": float(np.mean(np.asarray(d) <= 0)), "n_boot": n}
