"""Bootstrap confidence intervals for AUC, and a paired bootstrap between two detectors.

Resampling is stratified (reals and fakes resampled separately, so every
replicate has both classes) and seeded, so reports are reproducible. The
interval is the percentile interval of ``n`` replicates (Efron & Tibshirani,
"An Introduction to the Bootstrap", 1993).

Scores of several frames of one video are not independent: given ``units`` (the video of
each frame), whole videos are resampled (a cluster bootstrap) and each replicate's AUC is
that of all frames of the videos drawn, a video drawn twice counting twice.

Files of one group (a person, a video, a real and the fake made from it) are not independent
either, and a group may hold both classes: :func:`group_auc_ci` resamples whole groups with
replacement, not stratified; a replicate that draws only one class has no AUC and is drawn
again (counted). Without groups (every file its own) it is :func:`auc_ci`'s file bootstrap.
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


def _unit_labels(y: np.ndarray, units) -> tuple[np.ndarray, np.ndarray]:
    """(label of each unit, unit index of each score); ValueError for a unit of both classes."""
    _, inv = np.unique(np.asarray(units), return_inverse=True)
    inv = inv.reshape(-1)
    lo = np.full(inv.max(initial=-1) + 1, 1)
    hi = np.zeros_like(lo)
    np.minimum.at(lo, inv, y)
    np.maximum.at(hi, inv, y)
    if (lo != hi).any():
        raise ValueError("a bootstrap unit (video) holds both real and fake scores")
    return hi, inv


def _weighted_aucs(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC of every row of weights ``w`` ``(rows, len(s))``: the Mann-Whitney statistic with
    each score counted ``w`` times (ties one half), ``roc_auc_score(..., sample_weight=w)``."""
    order = np.argsort(s, kind="stable")
    ss, pos = s[order], y[order] == 1
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # runs of tied scores
    w = w[:, order]
    gpos = np.add.reduceat(np.where(pos, w, 0), starts, axis=1)
    gneg = np.add.reduceat(np.where(pos, 0, w), starts, axis=1)
    below = np.cumsum(gneg, axis=1) - gneg  # negatives scored lower than each run
    return (gpos * (below + gneg / 2)).sum(1) / (gpos.sum(1) * gneg.sum(1))


def _cluster_bootstrap(y: np.ndarray, s: np.ndarray, units, n: int, seed: int) -> np.ndarray:
    """AUC of ``n`` replicates that resample whole units (stratified by the units' labels)."""
    uy, inv = _unit_labels(y, units)
    return _drawn_aucs(y, s, inv, len(uy), _replicates(uy, n, seed))


def _drawn_aucs(y: np.ndarray, s: np.ndarray, inv: np.ndarray, n_units: int, chunks) -> np.ndarray:
    """AUC of each replicate in ``chunks`` (rows of unit indices drawn), every score counted as
    often as its unit (``inv``) was drawn."""
    out = []
    for idx in chunks:
        rows = max(1, _CHUNK_CELLS // max(len(s), 1))  # the weights too stay bounded
        for part in np.array_split(idx, -(-len(idx) // rows)):
            counts = np.zeros((len(part), n_units))
            np.add.at(counts, (np.arange(len(part))[:, None], part), 1)
            out.append(_weighted_aucs(y, s, counts[:, inv]))
    return np.concatenate(out)


def _group_draws(has: np.ndarray, n: int, seed: int, redrawn: list):
    """``n`` replicates of ``len(has)`` groups drawn with replacement, in chunks of rows, each
    holding a real and a fake (``has``: ``(groups, 2)``, whether a group holds each class); a
    draw of one class only is drawn again and counted in ``redrawn[0]``. One row at a time, so
    the draws do not depend on the chunk size. It ends: a draw misses every group holding a
    class with probability at most (1 - 1/g)^g < 1/e, so both are drawn over a quarter of the time."""
    rng = np.random.default_rng(seed)
    rows, chunk = max(1, _CHUNK_CELLS // max(len(has), 1)), []
    while n:
        draw = rng.integers(0, len(has), len(has))
        if not has[draw].any(axis=0).all():
            redrawn[0] += 1
            continue
        chunk.append(draw)
        n -= 1
        if len(chunk) == rows or not n:
            yield np.stack(chunk)
            chunk = []


def auc_ci(y, s, n: int = 2000, seed: int = 0, level: float = 0.95, units=None) -> dict:
    """``{"auc", "ci": [lo, hi], "n_boot"}``; ``auc`` None without both classes. With fewer
    than :data:`SMALL_CLASS` videos in a class also ``"ci_note"`` (the interval is too narrow).
    ``units``: the video of each score (frames), resampled whole (see module doc)."""
    y, s = np.asarray(y, int), np.asarray(s, float)
    if y.min(initial=1) == y.max(initial=0):
        return {"auc": None, "ci": None, "n_boot": 0}
    auc = float(roc_auc_score(y, s))  # first: it refuses NaN scores, which ranks would spread
    if units is None:
        (reps,) = _bootstrap(y, [s], n, seed)
    else:  # frames resampled one by one made a handful of videos look like hundreds
        reps = _cluster_bootstrap(y, s, units, n, seed)
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    out = {"auc": auc, "ci": [float(lo), float(hi)], "n_boot": n}
    return _noted(out, _per_class(y if units is None else _unit_labels(y, units)[0]))


def group_auc_ci(y, s, groups, n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """:func:`auc_ci`'s result and ``"ci_unit"``: ``"file"`` when every file is its own group
    (then exactly :func:`auc_ci`'s), else ``"group"``: whole groups resampled (module doc), with
    ``"n_groups"``, ``"n_redrawn"`` and a ``ci_note`` counting the groups holding each class."""
    y, s = np.asarray(y, int), np.asarray(s, float)
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    inv = inv.reshape(-1)
    if inv.max(initial=-1) + 1 == len(y):  # no file shares a group: the file bootstrap, as ever
        return {**auc_ci(y, s, n, seed, level), "ci_unit": "file"}
    if y.min(initial=1) == y.max(initial=0):
        return {"auc": None, "ci": None, "n_boot": 0, "ci_unit": "group"}
    auc = float(roc_auc_score(y, s))  # first: it refuses NaN scores
    has = np.zeros((inv.max() + 1, 2), bool)
    has[inv, y] = True
    redrawn = [0]
    reps = _drawn_aucs(y, s, inv, len(has), _group_draws(has, n, seed, redrawn))
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    out = {"auc": auc, "ci": [float(lo), float(hi)], "n_boot": n, "ci_unit": "group",
           "n_groups": len(has), "n_redrawn": redrawn[0]}
    return _noted(out, has.sum(axis=0), "group(s) hold")


def _noted(out: dict, per_class, unit: str = "video(s) in") -> dict:
    """``out`` with a ``ci_note`` when the smaller class holds fewer than :data:`SMALL_CLASS`
    units; ``per_class``: how many units hold each class (a unit of both counts in both)."""
    smaller = int(min(per_class))
    if smaller < SMALL_CLASS:
        out["ci_note"] = (f"{smaller} {unit} the smaller class: the bootstrap interval "
                          "understates the uncertainty")
    return out


def _per_class(y: np.ndarray) -> tuple[int, int]:
    """(reals, fakes) of labels ``y``, one per unit."""
    return int(len(y) - y.sum()), int(y.sum())


def paired_auc_diff(y, s_a, s_b, n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """AUC(a) - AUC(b) on the same videos with its bootstrap interval and the share of
    replicates where a does not beat b (a one-sided bootstrap p-value); ``diff`` None without
    both classes, and a ``ci_note`` as :func:`auc_ci`'s (the interval is as narrow as theirs)."""
    y, s_a, s_b = np.asarray(y, int), np.asarray(s_a, float), np.asarray(s_b, float)
    if y.min(initial=1) == y.max(initial=0):  # was NaN, and p_not_better 0: 'a always wins'
        return {"diff": None, "ci": None, "p_not_better": None, "n_boot": 0}
    diff = float(roc_auc_score(y, s_a) - roc_auc_score(y, s_b))  # refuses NaN scores
    reps_a, reps_b = _bootstrap(y, [s_a, s_b], n, seed)
    d = reps_a - reps_b
    a = (1 - level) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return _noted({"diff": diff, "ci": [float(lo), float(hi)],
                   "p_not_better": float(np.mean(np.asarray(d) <= 0)), "n_boot": n}, _per_class(y))
