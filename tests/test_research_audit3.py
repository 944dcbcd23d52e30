"""Research numbers audit: bootstrap intervals resample videos, not the frames of a handful of
them (probe fit's held-out frame metrics), and the paired bootstrap between two detectors says
when its interval is too narrow and has no answer for a one-class set (not a certain win)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scanner.research import stats
from scanner.research.probe import fit_probe


def _videos(n_videos=16, frames=40, seed=0):
    """Frames of ``n_videos`` videos (alternating real/fake) whose features are mostly the
    video's own (a weak class signal): frames of one video are far from independent."""
    rng = np.random.default_rng(seed)
    yv = np.arange(n_videos) % 2
    centres = rng.normal(size=(n_videos, 8))
    centres[:, 0] += 0.6 * yv
    X = np.repeat(centres, frames, 0) + 0.1 * rng.normal(size=(n_videos * frames, 8))
    groups = np.repeat(np.array([f"v{i:02d}" for i in range(n_videos)], object), frames)
    return X, np.repeat(yv, frames), groups


def test_weighted_replicate_aucs_equal_sklearn_sample_weight():
    rng = np.random.default_rng(4)
    y = np.r_[np.ones(17, int), np.zeros(25, int)]
    s = np.round(rng.normal(size=len(y)) + 0.5 * y, 1)  # ties across classes
    w = rng.integers(0, 4, size=(30, len(y))).astype(float)
    w[:, 0] += 1  # a fake and a real in every row
    w[:, -1] += 1
    got = stats._weighted_aucs(y, s, w)
    want = [roc_auc_score(y, s, sample_weight=row) for row in w]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_frame_interval_resamples_whole_videos():
    """Every frame of a video scored alike: resampled by video, the frames' interval is the
    videos' own; resampled frame by frame (as before) 6 videos passed for 240 and the interval
    shrank to a fraction of it, with no note that it is too narrow."""
    rng = np.random.default_rng(1)
    yv, sv = np.arange(6) % 2, rng.uniform(size=6)
    y, s, units = np.repeat(yv, 40), np.repeat(sv, 40), np.repeat(np.arange(6), 40)
    videos = stats.auc_ci(yv, sv, n=500)
    frames = stats.auc_ci(y, s, n=500, units=units)
    assert frames["auc"] == pytest.approx(videos["auc"])
    np.testing.assert_allclose(frames["ci"], videos["ci"], atol=1e-12)
    assert frames["ci_note"] == videos["ci_note"] and frames["ci_note"].startswith("3 video(s)")
    one_by_one = stats.auc_ci(y, s, n=500)["ci"]
    assert one_by_one[1] - one_by_one[0] < 0.5 * (frames["ci"][1] - frames["ci"][0])


def test_a_video_of_both_classes_is_refused_as_a_unit():
    with pytest.raises(ValueError, match="both real and fake"):
        stats.auc_ci([0, 1, 1, 0], [0.1, 0.2, 0.3, 0.4], n=10, units=["a", "a", "b", "c"])


def test_cluster_bootstrap_memory_is_bounded(monkeypatch):
    """The per-frame weights of a chunk of replicates are cut to the chunk budget too: a
    smaller budget draws the same replicates and gives the same interval."""
    X, y, g = _videos(n_videos=12, frames=10)
    s = X[:, 0]
    ci = stats.auc_ci(y, s, n=200, units=g)
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 3 * len(y))
    assert stats.auc_ci(y, s, n=200, units=g) == ci


def test_probe_heldout_frame_interval_is_by_video():
    """8 held-out videos of 40 frames: the frame AUC's interval was about 0.15 wide from frames
    resampled one by one (320 'videos', no note), beside [0, 1] for the 8 videos themselves."""
    X, y, g = _videos()
    fit = fit_probe(X, y, g, Cs=(1.0,), test_size=0.5, seed=1)
    frames, videos = fit.heldout_frames, fit.heldout_videos
    assert frames["n"] == 320 and videos["n"] == 8
    assert frames["auc_ci95_note"].startswith("4 video(s)")
    lo, hi = frames["auc_ci95"]
    assert hi - lo > 0.4, frames["auc_ci95"]


def test_paired_difference_of_a_one_class_set_is_none_not_a_win():
    """It was diff NaN, ci [NaN, NaN] and p_not_better 0.0: 'a beats b in every replicate'."""
    got = stats.paired_auc_diff([1, 1, 1], [0.9, 0.8, 0.7], [0.1, 0.2, 0.3], n=50)
    assert got == {"diff": None, "ci": None, "p_not_better": None, "n_boot": 0}


def test_paired_difference_of_a_handful_of_videos_says_its_interval_is_too_narrow():
    y = np.array([1, 1, 1, 0, 0, 0])
    a, b = np.array([0.9, 0.8, 0.4, 0.3, 0.2, 0.1]), np.array([0.5, 0.6, 0.4, 0.7, 0.2, 0.1])
    got = stats.paired_auc_diff(y, a, b, n=200)
    assert got["diff"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert got["ci_note"].startswith("3 video(s) in the smaller class")
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    assert "ci_note" not in stats.paired_auc_diff(y, rng.normal(size=60), rng.normal(size=60), n=50)
