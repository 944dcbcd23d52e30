"""Video verdicts from face tracks (scanner.tracks)."""
from __future__ import annotations

import numpy as np

from scanner.aggregate import decide
from scanner.tracks import FaceTrack, build_tracks, decide_tracks

LEFT, RIGHT = np.array([10, 10, 60, 70.0]), np.array([200, 20, 250, 80.0])


def _frames(n, left_scores, right_scores, jitter=3.0):
    out = []
    for k in range(n):
        d = np.array([k % 2, 0, k % 2, 0]) * jitter  # small motion keeps IoU high
        faces = []
        if right_scores[k] is not None:  # listed first: the order of faces must not matter
            faces.append((RIGHT + d, right_scores[k]))
        if left_scores[k] is not None:
            faces.append((LEFT + d, left_scores[k]))
        out.append(faces)
    return out


def test_one_fake_face_among_real_ones_makes_the_video_fake():
    n = 10
    frames = _frames(n, [0.05] * n, [0.9] * n)
    tracks = build_tracks(frames)
    assert sorted(len(t.frames) for t in tracks) == [n, n]
    v = decide_tracks(tracks, 0.5, 3, n)
    assert v.verdict == "fake" and abs(v.score - 0.9) < 1e-9 and v.frames_with_faces == n
    # Frame-level mean of the per-frame max gives the same here, but the mean over all
    # faces (what frame_agg=mean does) dilutes the fake face below the threshold.
    per_frame_mean = [np.mean([s for _, s in f]) for f in frames]
    assert decide(per_frame_mean, 0.5, "mean", 5, 3).verdict == "real"


def test_a_short_spurious_track_cannot_decide_a_long_video():
    n = 12
    right = [None] * n
    right[4] = 0.99  # one false detection scored fake, in one frame
    v = decide_tracks(build_tracks(_frames(n, [0.1] * n, right)), 0.5, 3, n)
    assert v.verdict == "real" and abs(v.score - 0.1) < 1e-9


def test_track_score_is_the_top_half_mean_and_tracks_survive_gaps():
    scores = [0.1, 0.9, None, 0.2, 0.8, 0.3, None, 0.7]  # missed in two samples
    tracks = build_tracks(_frames(len(scores), scores, [None] * len(scores)))
    assert len(tracks) == 1 and tracks[0].frames == [0, 1, 3, 4, 5, 7]
    assert abs(tracks[0].score - np.mean([0.9, 0.8, 0.7])) < 1e-9
    d = tracks[0].to_dict()
    assert d["frames"] == 6 and d["first_frame"] == 0 and d["last_frame"] == 7


def test_no_faces_and_non_finite_scores():
    assert decide_tracks([], 0.5, 3, 8).verdict == "no_face"
    t = FaceTrack(1, [0, 1], [float("nan"), float("nan")])
    assert t.score is None and decide_tracks([t], 0.5, 3, 2).verdict == "no_face"
    short = build_tracks([[(LEFT, 0.7)], [(LEFT, 0.6)]])  # a 2-frame clip still gets a verdict
    assert decide_tracks(short, 0.5, 3, 2).verdict == "fake"


def test_face_in_one_of_32_frames_is_no_face_with_tracks_as_with_frames():
    """A lone face (one noisy detection scored 0.99) in 1 of 32 sampled frames: frame
    aggregation says no_face; track aggregation judged the video fake from it."""
    n = 32
    frames = [[] for _ in range(n)]
    frames[5] = [(LEFT, 0.99)]
    by_frames = decide([0.99 if f else None for f in frames], 0.5, "mean", 5, 3)
    by_tracks = decide_tracks(build_tracks(frames), 0.5, 3, n)
    assert by_frames.verdict == by_tracks.verdict == "no_face"
    assert by_tracks.score is None and by_tracks.frames_with_faces == 1
    # frames whose face scored NaN are no face either (as frame aggregation counts them)
    nan = float("nan")
    frames = _frames(n, [0.9, 0.9] + [nan] * (n - 2), [None] * n)
    assert decide_tracks(build_tracks(frames), 0.5, 3, n).verdict == "no_face"
    frames = _frames(n, [0.9, 0.9, 0.9] + [nan] * (n - 3), [None] * n)
    v = decide_tracks(build_tracks(frames), 0.5, 3, n)
    assert v.verdict == "fake" and v.frames_with_faces == 3


def test_scan_with_track_aggregation_reports_tracks(tmp_path):
    """End to end on real footage: the row carries per-track results and its score is the max track."""
    from pathlib import Path

    from scanner.config import ScanConfig
    from scanner.pipeline import scan_paths

    clip = Path(__file__).parent / "data" / "d1.mp4"
    cfg = ScanConfig(detector="test_tiny", frames=8, aggregate="tracks", workers=1, hash=False, progress=False)
    row = next(scan_paths([clip], cfg))
    assert row["verdict"] in ("real", "fake") and row["tracks"], row.get("error")
    assert sum(t["frames"] for t in row["tracks"]) == row["faces"]
    assert abs(row["score"] - max(t["score"] for t in row["tracks"])) < 1e-5
    frames_row = next(scan_paths([clip], cfg.model_copy(update={"aggregate": "frames"})))
    assert "tracks" not in frames_row and frames_row["faces"] == row["faces"]
