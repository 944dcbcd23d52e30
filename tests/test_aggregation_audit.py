"""Audit of scores -> verdicts -> rows: a row never contradicts itself."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scanner.aggregate import decide
from scanner.config import ScanConfig
from scanner.summary import FaceRec, video_row
from scanner.tracks import build_tracks, decide_tracks

BOX = np.array([10, 10, 60, 70.0])


def _state(scores: list[float]) -> SimpleNamespace:
    """A pipeline record of one face per sampled frame, scored ``scores``."""
    frames = [{"index": i, "time_s": i / 10} for i in range(len(scores))]
    faces = [FaceRec(i, BOX.copy(), 0.99, torch.eye(2, 3), s) for i, s in enumerate(scores)]
    return SimpleNamespace(frames=frames, faces=faces, orientation=None)


@pytest.mark.parametrize("aggregate", ["frames", "tracks"])
@pytest.mark.parametrize("score,threshold", [(0.4999996, 0.5), (0.7, 0.7), (0.43718251, 0.4371829)])
def test_row_verdict_agrees_with_the_rows_own_score_and_threshold(aggregate, score, threshold):
    """0.4999996 at threshold 0.5 was written as score 0.5 with verdict real: whoever
    compares the row's score with its threshold (dfscan eval, a reviewer) got fake."""
    cfg = ScanConfig(detector="test_tiny", aggregate=aggregate)
    row = video_row(_state([score] * 4), cfg, threshold)
    assert row["verdict"] == ("fake" if row["score"] >= threshold else "real"), row
    for fr in row["frames_detail"]:
        assert fr["score"] == row["score"]


def test_score_exactly_at_the_threshold_is_fake_in_every_aggregation():
    n = 4
    assert decide([0.5] * n, 0.5, "mean", 5, 3).verdict == "fake"
    assert decide([0.5] * n, 0.5, "topk", 10, 3).verdict == "fake"  # topk beyond the frames: all of them
    assert decide_tracks(build_tracks([[(BOX, 0.5)]] * n), 0.5, 3, n).verdict == "fake"


@pytest.mark.parametrize("frames", [
    [[0.4999996]] * 4,  # just under the threshold, written (and now judged) as 0.5
    [[0.5], [0.1, 0.9], [], [float("nan"), 0.5]],  # several faces, a faceless frame, a NaN face
    [[0.2], [0.3, 0.49], [0.4]],
])
def test_live_and_batch_give_one_verdict_for_the_same_scores(frames):
    """Live with ``fake_above == real_below == threshold`` and a window over every sample
    judges the mean of each frame's highest score, as a batch scan's defaults do."""
    from scanner.live.rolling import StreamVerdicts, VerdictSettings

    s = VerdictSettings(window_s=1e6, fake_above=0.5, real_below=0.5, min_samples=3, emit_interval_s=1e9)
    live = StreamVerdicts("cam", s)
    for t, faces in enumerate(frames):
        boxes = np.array([BOX + 100 * k for k in range(len(faces))], np.float32).reshape(-1, 4)
        live.update(float(t), boxes, np.array(faces, np.float64))
    per_frame = [max((v for v in f if np.isfinite(v)), default=None) for f in frames]
    assert live.summary["verdict"] == decide(per_frame, 0.5, "mean", 5, 3).verdict


def test_a_live_face_track_that_ends_gets_an_event_to_unknown():
    """A face judged fake that leaves the picture: its track ended after track_max_age_s
    (inside the window) and was dropped without an event, so a reader of the events kept
    track 1 fake for good; a removed stream's tracks get one (StreamVerdicts.close)."""
    from scanner.live.rolling import StreamVerdicts, VerdictSettings

    s = VerdictSettings(window_s=10, min_samples=3, emit_interval_s=1e9, track_max_age_s=3)
    live, none = StreamVerdicts("cam", s), np.zeros((0, 4), np.float32)
    ev = [e for t in range(5) for e in live.update(float(t), BOX[None].astype(np.float32), np.array([0.9]))]
    assert (1, "fake") in {(e["track"], e["verdict"]) for e in ev}
    ev = [e for t in range(5, 12) for e in live.update(float(t), none, np.array([]))]
    ended = [e for e in ev if e["track"] == 1]
    assert [(e["previous"], e["verdict"], e["alert"]) for e in ended] == [("fake", "unknown", False)]
    assert live.summary["tracks"] == {}


@pytest.mark.parametrize("score,threshold,verdict,shown", [
    (0.4996, 0.5, "real", "0.4996"),  # read "0.500" beside "threshold 0.500"
    (0.5, 0.5, "fake", "0.500"),
    (0.43716, 0.4371829, "real", "0.437"),  # below the threshold as written
    (0.999999, 1.0, "real", "0.999999"),
])
def test_report_shows_a_score_on_its_verdicts_side_of_the_threshold(score, threshold, verdict, shown):
    from scanner.output import render_html

    row = {"path": "/v/a.mp4", "verdict": verdict, "score": score, "threshold": threshold,
           "frames": 4, "frames_with_faces": 4, "faces": 4}
    html = render_html([row])
    assert f">{shown}</td>" in html and f'<span class="score">{shown}</span>' in html
    assert f"threshold {threshold:.9g}" in html  # as written, not 0.437 for 0.4371829


@pytest.mark.parametrize("score, verdict, shown", [(0.4996, "real", "0.4996"), (0.5, "fake", "0.500"),
                                                   (0.49999949, "real", "0.499999"), (0.91234, "fake", "0.912")])
def test_terminal_line_shows_a_score_on_its_verdicts_side_of_the_threshold(score, verdict, shown):
    """The one-line-per-video output rounded to 3 decimals too: 'real 0.500' at threshold 0.5."""
    from scanner.run import _line

    row = {"verdict": verdict, "score": score, "threshold": 0.5, "path": "/v.mp4", "faces": 4,
           "frames_with_faces": 4, "frames": 4}
    assert f"[/{'red' if verdict == 'fake' else 'green'}] {shown}  /v.mp4" in _line(row)
