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


def _look(hue_bin: int) -> np.ndarray:
    h = np.zeros(128, np.float32)
    h[hue_bin * 8:(hue_bin + 1) * 8] = 1 / 8
    return h


def test_a_cut_to_another_person_in_the_same_place_does_not_dilute_a_fake_face():
    """Host (real, 26 samples) then, after a cut, a guest (fake, 6 samples) framed the same
    way: by IoU alone they were one track whose top half mixed both (0.4, "real")."""
    host, guest = [(LEFT, 0.1, _look(2))] * 26, [(LEFT + 2, 0.9, _look(9))] * 6
    frames = [[f] for f in host + guest]
    blind = build_tracks([[(b, s)] for (b, s, _), in frames])
    assert len(blind) == 1 and decide_tracks(blind, 0.5, 3, 32).verdict == "real"
    tracks = build_tracks(frames)
    assert sorted(len(t.frames) for t in tracks) == [6, 26]
    v = decide_tracks(tracks, 0.5, 3, 32)
    assert v.verdict == "fake" and abs(v.score - 0.9) < 1e-6
    same = [[(LEFT + k % 2, 0.1, _look(2) * 0.9 + _look(3) * 0.1)] for k in range(6)]
    assert len(build_tracks(same)) == 1  # a look that changes a little keeps its track


def _joined(out, clips):
    """One H.264 clip playing ``clips`` one after another: a hard cut between them."""
    import av

    with av.open(str(out), "w") as oc:
        s = oc.add_stream("libx264", rate=30)
        s.width = s.height = 512
        s.pix_fmt = "yuv420p"
        for c in clips:
            with av.open(str(c)) as ic:
                for f in ic.decode(video=0):
                    img = f.to_ndarray(format="rgb24")
                    oc.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        oc.mux(s.encode())


def test_scan_splits_tracks_at_a_cut_between_two_people_framed_alike(tmp_path):
    """Real footage: d1 and d2 show two men in the same grey studio, faces in the same place.
    Joined by a cut, the scan's tracks held both men as one (one track of 32 faces)."""
    from pathlib import Path

    from scanner.config import ScanConfig
    from scanner.pipeline import scan_paths

    data = Path(__file__).parent / "data"
    clip = tmp_path / "cut.mp4"
    _joined(clip, [data / "d1.mp4", data / "d2.mp4"])
    cfg = ScanConfig(detector="test_tiny", frames=32, aggregate="tracks", workers=1, hash=False, progress=False)
    row = next(scan_paths([clip], cfg))
    assert row["faces"] == 32 and len(row["tracks"]) == 2, row["tracks"]
    by_track = {}
    for fr in row["frames_detail"]:
        for fc in fr["faces"]:
            by_track.setdefault(fc["track"], []).append(fr["index"])
    assert sorted(by_track.values()) == [list(range(16)), list(range(16, 32))]
    assert {t["id"]: t["frames"] for t in row["tracks"]} == {k: len(v) for k, v in by_track.items()}
    # what reads rows back (bench/validation.py) gets the scan's tracks, not boxes re-linked
    from scanner.tracks import tracks_of_detail

    assert [t.to_dict() for t in tracks_of_detail(row["frames_detail"])] == row["tracks"]
    old = [dict(fr, faces=[{k: v for k, v in fc.items() if k != "track"} for fc in fr["faces"]])
           for fr in row["frames_detail"]]
    assert len(tracks_of_detail(old)) == 1  # rows written before faces carried a track id


def test_live_cut_to_another_person_framed_alike_starts_a_new_track():
    """Live: the anchor (real) cut to a guest in the same place within track_max_age_s; by IoU
    alone the guest inherited the anchor's rolling window and track id."""
    from scanner.live.rolling import StreamVerdicts, VerdictSettings

    sv = StreamVerdicts("s", VerdictSettings(window_s=100, min_samples=2, emit_interval_s=1e9))
    for k in range(4):
        sv.update(float(k), LEFT[None], np.array([0.1]), [_look(2)])
    sv.update(4.0, (LEFT + 2)[None], np.array([0.9]), [_look(9)])
    tracks = sv.summary["tracks"]
    assert len(tracks) == 2 and tracks["1"]["score"] == 0.1 and tracks["2"]["score"] == 0.9
    blind = StreamVerdicts("s", VerdictSettings(window_s=100, min_samples=2, emit_interval_s=1e9))
    for k in range(5):
        blind.update(float(k), (LEFT + 2 * (k == 4))[None], np.array([0.9 if k == 4 else 0.1]))
    assert list(blind.summary["tracks"]) == ["1"]


def test_live_analyzer_gives_each_face_its_look():
    """The live analyzer hands the tracker a look per face (same function as file scans)."""
    from pathlib import Path

    from scanner.appearance import face_look
    from scanner.decode import FrameSampler
    from scanner.live.batcher import FrameAnalyzer

    frames = list(FrameSampler(Path(__file__).parent / "data" / "d1.mp4", 2, det_max_side=960))
    res = FrameAnalyzer("test_tiny")(frames)
    for fr, r in zip(frames, res):
        assert len(r.looks) == len(r.boxes) >= 1
        np.testing.assert_array_equal(r.looks[0], face_look(fr, r.boxes[0]))


def test_look_of_a_non_finite_or_outside_box_is_none():
    """A diverging detector can emit inf boxes: int(inf) raised, failing the whole row (or a
    live batch of every stream); such a face has no look and tracks by box overlap."""
    from scanner.appearance import look

    img = np.full((100, 100, 3), 128, np.uint8)
    assert look(img, [np.nan, 10, 50, 60]) is None and look(img, [10, 10, np.inf, 60]) is None
    assert look(img, [300, 300, 350, 350]) is None
    h = look(img, [20, 20, 60, 60])
    assert h.shape == (192,) and abs(float(h.sum()) - 1) < 1e-6


def _mover(n, start, step, score, lk, size=50.0):
    """One face per sample moving ``step`` px right per sample: ``[(box, score, look)]``."""
    return [(np.array([start[0] + step * k, start[1], start[0] + step * k + size, start[1] + size]),
             score, lk) for k in range(n)]


def test_a_fake_face_moving_far_between_samples_among_still_real_ones_makes_the_video_fake():
    """Audit: samples of a long video are seconds apart; a fake face moving 40 px (0.8 of
    its 50 px box) per sample overlapped its track too little and made 32 one-frame
    tracks, none long enough to count: the video was real (0.1), frames said fake (0.95)."""
    n = 32
    still = [(LEFT, 0.1, _look(2))] * n
    fake = _mover(n, (100, 200), 40, 0.95, _look(9))
    frames = [[a, b] for a, b in zip(still, fake)]
    by_frames = decide([max(a[1], b[1]) for a, b in frames], 0.5, "mean", 5, 3)
    tracks = build_tracks(frames)
    assert sorted(len(t.frames) for t in tracks) == [n, n]
    v = decide_tracks(tracks, 0.5, 3, n)
    assert by_frames.verdict == v.verdict == "fake" and abs(v.score - 0.95) < 1e-9
    # without looks (rows re-read from frames_detail written before looks) nothing changes
    blind = build_tracks([[(b, s) for b, s, _ in f] for f in frames])
    assert len(blind) == n + 1 and decide_tracks(blind, 0.5, 3, n).verdict == "real"
    # and the IoU pass alone (what live streams use) still splits it
    assert len(build_tracks(frames, relink=None)) == n + 1


def test_two_people_crossing_or_alternating_are_not_merged():
    n = 16
    # crossing: one walks right, the other left on the same line, both seen in every sample
    a = _mover(n, (0, 100), 40, 0.9, _look(2))
    b = _mover(n, (600, 100), -40, 0.1, _look(9))
    tracks = build_tracks([[x, y] for x, y in zip(a, b)])
    assert sorted(len(t.frames) for t in tracks) == [n, n]
    assert sorted(t.score for t in tracks) == [0.1, 0.9]  # no track mixes the two
    # alternating: two people two face sizes apart, each detected in every other sample only
    left, right = (LEFT, 0.9, _look(2)), (LEFT + [110, 0, 110, 0], 0.1, _look(9))
    tracks = build_tracks([[left] if k % 2 else [right] for k in range(n)])
    assert sorted((len(t.frames), t.score) for t in tracks) == [(8, 0.1), (8, 0.9)]
    # two newcomers near one face missed in this sample: the track takes at most one of them
    frames = [[left], [(LEFT + 60, 0.5, _look(2)), (LEFT - 60, 0.5, _look(2))]]
    tracks = build_tracks(frames)
    assert sorted(len(t.frames) for t in tracks) == [1, 2]


def test_second_pass_gates_size_look_and_distance():
    from scanner.live.tracker import Relink

    far, grown = LEFT + [400, 0, 400, 0], np.array([10, 10, 110, 130.0])  # 7 sizes away; twice as big
    for other in [(far, 0.9, _look(2)), (grown, 0.9, _look(2)), (LEFT + 60, 0.9, _look(9))]:
        assert len(build_tracks([[(LEFT, 0.1, _look(2))], [other]])) == 2
    assert len(build_tracks([[(LEFT, 0.1, _look(2))], [(LEFT + 60, 0.9, _look(2))]])) == 1
    # a face missed for a few samples may have gone further (shift limit grows with the gap)
    gap = [[(LEFT, 0.1, _look(2))], [], [], [], [(LEFT + [160, 0, 160, 0], 0.1, _look(2))]]
    assert len(build_tracks(gap)) == 1 and len(build_tracks([gap[0], gap[-1]])) == 2
    assert len(build_tracks(gap, relink=Relink(shift_growth=0.0))) == 2


def test_live_tracks_keep_the_overlap_pass_alone():
    """Live samples are dense: a face jumping away within track_max_age_s is a new track
    there, as before (the second pass is for a file scan's sparse samples)."""
    from scanner.live.rolling import StreamVerdicts, VerdictSettings

    sv = StreamVerdicts("s", VerdictSettings(window_s=100, min_samples=2, emit_interval_s=1e9))
    for k in range(4):
        sv.update(k / 2, (LEFT + [40 * k, 0, 40 * k, 0])[None], np.array([0.1]), [_look(2)])
    assert sv.tracker.relink is None and len(sv.summary["tracks"]) == 4
