"""Bootstrap AUC intervals (scanner.research.stats): replicates scored by ranks must equal
sklearn's roc_auc_score replicate for replicate, and the intervals committed under
bench/results must come out again from their own per-video scores."""
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scanner.research import stats

ROOT = Path(__file__).resolve().parents[1]


def test_replicate_aucs_equal_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(23, int), np.zeros(31, int)]
    s = np.round(rng.normal(size=len(y)) + y * 0.5, 1)  # rounded: many ties across classes
    idx = np.concatenate(list(stats._replicates(y, 300, seed=1)))
    fast = stats._replicate_aucs(s, idx, int(y.sum()))
    slow = [roc_auc_score(y[i], s[i]) for i in idx]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_bootstrap_memory_does_not_grow_with_replicates(monkeypatch):
    """Replicates are drawn and ranked a chunk at a time: all 2000 of them held at once as
    (replicates x videos) indices grew without bound (1.6 GB of indices for 100k videos).
    The chunk size changes nothing but memory: the same replicates, the same interval."""
    import tracemalloc

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(1000, int), np.zeros(1000, int)]
    s = rng.normal(size=len(y)) + y
    peaks = {}
    for n in (400, 3200):
        tracemalloc.start()
        ci = stats.auc_ci(y, s, n=n)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[3200] < 1.5 * peaks[400], peaks
    s_b = s + rng.normal(size=len(y))
    paired = stats.paired_auc_diff(y, s, s_b, n=300)
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 3 * len(y))  # chunks of 3 replicates
    assert stats.auc_ci(y, s, n=3200) == ci
    assert stats.paired_auc_diff(y, s, s_b, n=300) == paired


def test_nan_scores_are_refused_not_ranked():
    y, s = np.array([1, 1, 0, 0]), np.array([0.9, np.nan, 0.1, 0.2])
    with pytest.raises(ValueError):
        stats.auc_ci(y, s, n=50)
    with pytest.raises(ValueError):
        stats.paired_auc_diff(y, s, np.array([0.9, 0.8, 0.1, 0.2]), n=50)


def test_committed_validation_intervals_are_reproduced():
    """validation_normalised.json (57 real-world videos, two detectors) holds each video's
    score, the per-detector intervals and the paired difference, all made with the
    per-replicate sklearn loop: the rank version must give the same numbers."""
    res = json.loads((ROOT / "bench/results/validation_normalised.json").read_text())
    scores = {}
    for name, det in res["detectors"].items():
        vids = det["videos"]
        y = np.array([v["label"] == "fake" for v in vids], int)
        scores[name] = {agg: np.array([v[agg] for v in vids], float) for agg in ("frames", "tracks")}
        for agg in ("frames", "tracks"):
            got = stats.auc_ci(y, scores[name][agg], n=det[agg]["overall"]["n_boot"])
            assert got["auc"] == pytest.approx(det[agg]["overall"]["auc"], abs=1e-12)
            np.testing.assert_allclose(got["ci"], det[agg]["overall"]["ci"], atol=1e-12)
    for key, want in res["paired"].items():
        pair, agg = key.split(":")
        a, b = pair.split("-vs-")
        got = stats.paired_auc_diff(y, scores[a][agg], scores[b][agg], n=want["n_boot"])
        np.testing.assert_allclose(got["ci"], want["ci"], atol=1e-12)
        # One replicate of 2000 has equal AUCs: sklearn's trapezoids made the difference
        # +1.1e-16 ("better"), ranks make it exactly 0 ("not better", as it should be).
        assert got["p_not_better"] == pytest.approx(want["p_not_better"], abs=1.01 / want["n_boot"])
