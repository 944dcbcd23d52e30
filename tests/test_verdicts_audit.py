"""Audit of face scores -> a video's verdict, against a reference written from the README.

README ("verdicts", "aggregation", row fields) and the module docs of scanner.aggregate,
scanner.tracks and scanner.summary, in words:
  * a frame's score is the max / mean of its faces' P(fake), or the largest face's (box area);
    faces scored NaN/inf are dropped (and counted), a frame with no finite face has no score;
  * the video's score is the mean / median / max / mean of the top K of its frames' scores
    (K beyond the frames: all of them);
  * ``--aggregate tracks``: a track's score is the mean of its top half of face scores, the video's
    the max over tracks with at least ``min_face_frames`` scored faces (capped at the longest);
  * ``no_face`` when fewer frames had a scored face than ``min_face_frames``, capped at the frames
    sampled, in both aggregations; a video whose faces were there but scored NaN is ``non_finite``;
  * scores are written to 6 decimals and the verdict is decided on the score as written, ``fake``
    from the threshold up; a row's ``frames_detail`` holds each frame's and face's score.
The cases of tests/test_aggregation_audit.py are not repeated here.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import DATA
from scanner.aggregate import decide
from scanner.config import ScanConfig
from scanner.decode import VideoError
from scanner.summary import FaceRec, video_row
from scanner.tracks import decide_tracks, tracks_of_detail

NAN, INF = float("nan"), float("inf")
SLOT_X = 400  # faces of different slots lie 4 face sizes apart: never one track


# --- the reference, from the README's words --------------------------------------------------

def ref_written(x: float) -> float:
    return round(x, 6)


def ref_area(box) -> float:
    """Area of ``box`` (xyxy) as the row writes it (pixels to 0.1): the largest face a reader sees."""
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    return (x1 - x0) * (y1 - y0)


def ref_frame(faces: list[tuple[list, float]], mode: str) -> float | None:
    """``faces``: (box, score) in the detector's order; ties of area: the first face."""
    ok = [(ref_area(b), ref_written(s)) for b, s in faces if math.isfinite(s)]
    if not ok:
        return None
    vals = [s for _, s in ok]
    if mode == "max":
        return max(vals)
    if mode == "mean":
        return ref_written(math.fsum(vals) / len(vals))
    big = max(a for a, _ in ok)
    return next(s for a, s in ok if a == big)


def ref_video(frames: list[float], mode: str, k: int) -> float:
    s = sorted(frames)
    if mode == "mean":
        return math.fsum(s) / len(s)
    if mode == "max":
        return s[-1]
    if mode == "median":
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    top = s[-k:]
    return math.fsum(top) / len(top)


def ref_track(scores: list[float]) -> float | None:
    s = sorted(ref_written(v) for v in scores if math.isfinite(v))
    if not s:
        return None
    top = s[len(s) - math.ceil(len(s) / 2):]
    return math.fsum(top) / len(top)


def ref_row(video: list[list[tuple[int, np.ndarray, float]]], thr: float, agg: str, fagg: str, vagg: str,
            k: int, mff: int) -> dict:
    """Expected ``verdict``, ``score`` (unrounded, None for no_face) and counts, or
    ``{"error": "non_finite"}``; ``video``: per frame, (slot, box xyxy, score) of its faces."""
    need = min(mff, max(1, len(video)))
    with_face = sum(1 for fr in video if any(math.isfinite(s) for _, _, s in fr))
    dropped = sum(1 for fr in video for _, _, s in fr if not math.isfinite(s))
    if with_face < need:
        if dropped and sum(1 for fr in video if fr) >= need:
            return {"error": "non_finite"}
        return {"verdict": "no_face", "score": None, "frames_with_faces": with_face}
    if agg == "frames":
        fs = [ref_frame([(b, s) for _, b, s in fr], fagg) for fr in video]
        score = ref_video([v for v in fs if v is not None], vagg, k)
    else:
        by_slot: dict[int, list[float]] = {}
        for fr in video:
            for slot, _, s in fr:
                by_slot.setdefault(slot, []).append(s)
        tracks = [(sum(map(math.isfinite, v)), ref_track(v)) for v in by_slot.values()]
        tracks = [(n, sc) for n, sc in tracks if sc is not None]
        longest = max(n for n, _ in tracks)
        score = max(sc for n, sc in tracks if n >= min(mff, longest))
    return {"verdict": "fake" if ref_written(score) >= thr else "real", "score": score,
            "frames_with_faces": with_face}


def _ambiguous(x: float) -> bool:
    """A score a last-bit difference of summation order rounds either way (half a 6th decimal)."""
    frac = x * 1e6 - math.floor(x * 1e6)
    return abs(frac - 0.5) < 1e-6


# --- the code under test, on the same faces -----------------------------------------------

def _box(slot: int, side: float) -> np.ndarray:
    return np.array([slot * SLOT_X, 0, slot * SLOT_X + side, side], np.float64)


B0, B1 = _box(0, 100.0), _box(1, 100.0)


def _state(video: list[list[tuple[int, np.ndarray, float]]]) -> SimpleNamespace:
    """A pipeline record of ``video`` (see :func:`ref_row`), frames stored out of order as
    the pipeline may hold them (their ``index`` gives the order)."""
    order = list(range(len(video)))[::-1]
    frames = [{"index": i, "time_s": i / 10} for i in order]
    faces = []
    for pos, i in enumerate(order):
        for _, box, s in video[i]:
            faces.append(FaceRec(pos, np.asarray(box, np.float64), 0.99, torch.eye(2, 3), s))
    return SimpleNamespace(frames=frames, faces=faces, orientation=None)


def _row(video, thr, agg, fagg, vagg, k, mff) -> dict:
    cfg = ScanConfig(detector="test_tiny", aggregate=agg, frame_agg=fagg, video_agg=vagg, topk=k,
                     min_face_frames=mff)
    try:
        return video_row(_state(video), cfg, thr)
    except VideoError as e:
        return {"error": e.kind}


def rederive(row: dict, thr: float, agg: str, fagg: str, vagg: str, k: int, mff: int
             ) -> tuple[str, float | None]:
    """(verdict, score) from a row's ``frames_detail`` alone, by the scanner's own functions."""
    from scanner.aggregate import frame_score

    detail = row["frames_detail"]
    if agg == "tracks":
        v = decide_tracks(tracks_of_detail(detail), thr, mff, len(detail))
    else:
        for fr in detail:  # each frame's score is its faces' as written
            faces = [f for f in fr["faces"] if f["score"] is not None]
            areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
            got = frame_score(np.array([f["score"] for f in faces]), np.array(areas), fagg)
            assert (None if got is None else round(got, 6)) == fr["score"], fr
        v = decide([fr["score"] for fr in detail], thr, vagg, k, mff)
    return v.verdict, None if v.score is None else round(v.score, 6)


def from_tracks(tracks: list[dict], thr: float, mff: int) -> tuple[str, float | None]:
    """(verdict, score) from a row's ``tracks`` alone (no_face is the frames' count: not here)."""
    scored = [t for t in tracks if t["score"] is not None]
    if not scored:
        return "no_face", None
    longest = max(t["scored_frames"] for t in scored)
    score = max(t["score"] for t in scored if t["scored_frames"] >= min(mff, longest))
    return ("fake" if score >= thr else "real"), score


# --- random cases ------------------------------------------------------------------------------

EDGE = [0.5, 0.4999996, 0.4999995, 0.4999994, 0.5000004, 0.4999999, 0.499999, 0.500001]


def _score(rng: random.Random, thr: float) -> float:
    r = rng.random()
    if r < 0.08:
        return rng.choice([NAN, INF, -INF])
    if r < 0.35:
        return rng.choice(EDGE + [thr, thr - 4e-7, thr + 4e-7])
    if r < 0.7:
        return rng.randrange(21) / 20  # ties, exact means
    return rng.random()


def _video(rng: random.Random, thr: float) -> list[list[tuple[int, np.ndarray, float]]]:
    """1 to 200 frames of 0 to 3 faces; sides a 0.1 px rounding can tie or reorder (largest)."""
    n = rng.choice([1, 1, 2, 3, 4, 5, 8, 13, 32, 200])
    slots, p_face = rng.randint(1, 3), rng.choice([0.2, 0.6, 0.9, 1.0])
    side = lambda: rng.choice([80.0, 100.0, 100.04, 100.06])  # noqa: E731
    return [[(k, _box(k, side()), _score(rng, thr)) for k in range(slots) if rng.random() < p_face]
            for _ in range(n)]


def _settings(rng: random.Random) -> tuple:
    agg = rng.choice(["frames", "frames", "tracks"])
    return (agg, rng.choice(["max", "mean", "largest"]), rng.choice(["mean", "median", "topk", "max"]),
            rng.choice([1, 2, 5, 50]), rng.choice([1, 2, 3, 3, 5, 40]))


@pytest.mark.parametrize("seed", range(6))
def test_rows_match_the_readme_reference_on_random_videos(seed):
    rng = random.Random(20261203 + seed)
    for case in range(120):
        thr = rng.choice([0.5, 0.5, 0.0, 1.0, 0.45, 0.4371829, rng.random()])
        video, st = _video(rng, thr), _settings(rng)
        want, got = ref_row(video, thr, *st), _row(video, thr, *st)
        ctx = f"case {case}: {st}, thr {thr}, video {video}"
        if "error" in want or "error" in got:
            assert got.get("error") == want.get("error"), ctx
            continue
        assert got["frames_with_faces"] == want["frames_with_faces"], ctx
        assert got["faces"] == sum(map(len, video)), ctx
        assert got["nonfinite_scores"] == sum(1 for fr in video for *_, s in fr if not math.isfinite(s)), ctx
        if want["score"] is None:
            assert (got["verdict"], got["score"]) == ("no_face", None), ctx
        else:
            assert got["score"] == pytest.approx(want["score"], abs=1e-6), ctx
            if not _ambiguous(want["score"]):
                assert (got["verdict"], got["score"]) == (want["verdict"], ref_written(want["score"])), ctx
            assert got["verdict"] == ("fake" if got["score"] >= thr else "real"), ctx  # the row, read alone
        assert rederive(json.loads(json.dumps(got)), thr, *st) == (got["verdict"], got["score"]), ctx
        if st[0] == "tracks" and got["score"] is not None:
            assert from_tracks(got["tracks"], thr, st[-1]) == (got["verdict"], got["score"]), ctx


EDGE_FACES = [0.4999994, 0.4999994, 0.4999999]  # exact mean 0.49999957, written 0.5; as written 0.499999


@pytest.mark.parametrize("agg,scores", [("frames", EDGE_FACES), ("tracks", EDGE_FACES + [0.1] * 3)])
def test_frames_detail_gives_the_rows_verdict_at_the_rounding_edge(agg, scores):
    """Frames (a track's top half) were averaged on their exact scores: 0.4999994, 0.4999994,
    0.4999999 made a row ``fake`` with score 0.5 at threshold 0.5, while its frames_detail
    (0.499999, 0.499999, 0.5) averages 0.499999, ``real``: the row's two halves disagreed."""
    video = [[(0, B0, s)] for s in scores]
    st = (agg, "max", "mean", 5, 3)
    row = json.loads(json.dumps(_row(video, 0.5, *st)))
    assert rederive(row, 0.5, *st) == (row["verdict"], row["score"]) == ("real", 0.499999)


def test_frame_scores_are_the_faces_as_written():
    """A frame's mean of its faces was taken on their exact scores: three faces written 0.499999,
    0.499999 and 0.5 made a frame (and a video) of 0.5, ``fake``, that no reader of the faces
    could reproduce; their mean as written is 0.499999, ``real``."""
    video = [[(k, _box(k, 100.0), s) for k, s in enumerate(EDGE_FACES)]] * 3
    row = _row(video, 0.5, "frames", "mean", "mean", 5, 3)
    assert [fr["score"] for fr in row["frames_detail"]] == [0.499999] * 3
    assert (row["verdict"], row["score"]) == ("real", 0.499999)


def test_largest_face_is_the_largest_box_the_row_shows():
    """Face 0's box is written 100.1 x 100 px, face 1's 100 x 100: the row shows face 0 as the
    largest, but --frame-agg largest took face 1 (exact 10,008 px² against 10,006) and its 0.9
    made the row ``fake`` where its frames_detail gives ``real`` 0.2."""
    faces = [(0, np.array([0, 0, 100.06, 100.0]), 0.2), (1, np.array([400, 0, 500.04, 100.04]), 0.9)]
    st = ("frames", "largest", "mean", 5, 3)
    row = json.loads(json.dumps(_row([faces] * 3, 0.5, *st)))
    assert [fc["box"] for fc in row["frames_detail"][0]["faces"]] == [[0, 0, 100.1, 100], [400, 0, 500, 100]]
    assert rederive(row, 0.5, *st) == (row["verdict"], row["score"]) == ("real", 0.2)


def test_a_track_whose_faces_scored_nan_says_so():
    """Track 0 is seen in 3 frames but 2 of its faces scored NaN: it is not counted (1 scored
    face), and the row is ``real`` 0.1 by track 1. Its entry said only ``frames: 3`` and 0.9:
    a reviewer of the row saw a 3-frame track at 0.9 left out of a ``real`` verdict."""
    video = [[(0, B0, 0.9), (1, B1, 0.1)], [(0, B0, NAN), (1, B1, 0.1)], [(0, B0, NAN), (1, B1, 0.1)]]
    row = _row(video, 0.5, "tracks", "max", "mean", 5, 3)
    assert (row["verdict"], row["score"], row["nonfinite_scores"]) == ("real", 0.1, 2)
    assert sorted((t["frames"], t["scored_frames"], t["score"]) for t in row["tracks"]) == [(3, 1, 0.9), (3, 3, 0.1)]
    assert from_tracks(row["tracks"], 0.5, 3) == ("real", 0.1)


def _live(video: list[list[tuple[int, np.ndarray, float]]], thr: float) -> dict:
    """``dfscan watch``'s stream verdict with both bounds at ``thr`` and a window over every sample."""
    from scanner.live.rolling import StreamVerdicts, VerdictSettings

    s = VerdictSettings(window_s=1e6, fake_above=thr, real_below=thr, min_samples=3, emit_interval_s=1e9)
    live = StreamVerdicts("cam", s)
    for t, faces in enumerate(video):
        boxes = np.array([b for _, b, _ in faces], np.float32).reshape(-1, 4)
        live.update(float(t), boxes, np.array([sc for *_, sc in faces], np.float64))
    return live.summary


@pytest.mark.parametrize("video", [[[(0, B0, s)] for s in EDGE_FACES],
                                   [[(0, B0, s), (1, B1, 0.1)] for s in EDGE_FACES]])
def test_live_stream_verdict_at_the_rounding_edge_is_the_scans(video):
    """After scans took their faces as written, live still averaged exact scores: frames
    0.4999994, 0.4999994, 0.4999999 read ``fake`` 0.5 live and ``real`` 0.499999 in a scan."""
    row = _row(video, 0.5, "frames", "max", "mean", 5, 3)
    assert (_live(video, 0.5)["verdict"], _live(video, 0.5)["score"]) == (row["verdict"], row["score"]) == (
        "real", 0.499999)


def test_live_stream_verdicts_are_the_scans_on_random_videos():
    """The README's live rule (mean over the window of each frame's highest face score, decided on
    6 decimals as a scan row's) is a scan's defaults (max, mean) where both bounds are the threshold."""
    rng = random.Random(99)
    for case in range(300):
        thr = rng.choice([0.5, 0.45, rng.random()])
        video = _video(rng, thr)
        if len(video) < 3:  # a scan caps min_face_frames at the frames sampled; live does not
            continue
        row, live = _row(video, thr, "frames", "max", "mean", 5, 3), _live(video, thr)
        if row.get("error"):  # NaNs that cost a scan its verdict: an error row; live has no verdict
            assert live["verdict"] == "unknown"
            continue
        want = {"no_face": "unknown"}.get(row["verdict"], row["verdict"])
        assert (live["verdict"], live["score"] if row["score"] is not None else None) == (want, row["score"]), (
            case, thr, video)


@pytest.mark.parametrize("mode", ["mean", "median", "topk", "max"])
def test_nan_and_inf_frame_scores_are_never_a_verdict(mode):
    """decide() given non-finite frame scores drops them (never real, never fake)."""
    assert decide([NAN, INF, -INF, NAN], 0.5, mode, 5, 3).verdict == "no_face"
    v = decide([NAN, 0.7, INF, 0.7, None, 0.7], 0.5, mode, 5, 3)
    assert (v.verdict, v.score, v.frames_with_faces) == ("fake", pytest.approx(0.7), 3)


def test_a_very_long_video_keeps_its_mean():
    """10,000 frames (the --fps cap): no drift from summing; K beyond the frames is all of them."""
    rng = random.Random(7)
    fs = [rng.choice([0.25, 0.75]) for _ in range(10_000)]
    want = math.fsum(fs) / len(fs)
    assert decide(fs, 0.5, "mean", 5, 3).score == pytest.approx(want, abs=1e-12)
    assert decide(fs, 0.5, "topk", 20_000, 3).score == pytest.approx(want, abs=1e-12)
    assert decide(fs[:1], 0.5, "topk", 5, 3).score == fs[0]  # one frame: capped need of 1


# --- real scans: rows as written and as read back ----------------------------------------------

SCANS = [("frames", "max", "mean"), ("frames", "mean", "median"), ("frames", "largest", "topk"),
         ("frames", "max", "max"), ("tracks", "max", "mean")]
SCAN_THRESHOLD = 0.5362  # test_tiny scores these faces 0.5358-0.5367: verdicts of both kinds


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """d1, d2 and a clip of the four-face group photo (frame aggregation has several faces)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    group = tmp_path_factory.mktemp("clips") / "group.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-i", str(DATA / "multiface.jpg"),
                    "-vf", "scale=1024:-2", "-t", "2", "-r", "4", "-pix_fmt", "yuv420p", str(group)], check=True)
    return [DATA / "d1.mp4", DATA / "d2.mp4", group]


@pytest.mark.parametrize("agg,fagg,vagg", SCANS)
def test_real_scan_rows_rederive_their_verdicts(clips, tmp_path, agg, fagg, vagg):
    """A scan's rows, read back as the report and ``eval --from-jsonl`` read them: each row's
    verdict and score follow from its own frames_detail (the scanner's functions and the
    reference) and its tracks; eval predicts fake exactly for the rows judged fake."""
    from scanner.cli import EXIT_OK, main
    from scanner.report.rows import load_rows
    from scanner.research.evaluate import rates
    from scanner.research.jsonl_scores import scores_from_jsonl
    from scanner.research.labelled import Item

    out = tmp_path / "rows.jsonl"
    args = ["scan", *map(str, clips), "--out", str(out), "--detector", "test_tiny", "--frames", "4",
            "--no-progress", "--workers", "1", "--threshold", str(SCAN_THRESHOLD), "--aggregate", agg,
            "--frame-agg", fagg, "--video-agg", vagg, "--topk", "2"]
    assert main(args) == EXIT_OK
    rows, bad = load_rows(out)
    assert bad == 0 and len(rows) == 3
    st = (agg, fagg, vagg, 2, 3)
    for row in rows:
        assert row["verdict"] in ("real", "fake"), row.get("error")
        assert rederive(row, SCAN_THRESHOLD, *st) == (row["verdict"], row["score"]), row["path"]
        video = [[(fc["track"], fc["box"], NAN if fc["score"] is None else fc["score"]) for fc in fr["faces"]]
                 for fr in row["frames_detail"]]
        want = ref_row(video, SCAN_THRESHOLD, *st)
        assert (row["verdict"], row["score"], row["frames_with_faces"]) == (
            want["verdict"], ref_written(want["score"]), want["frames_with_faces"]), row["path"]
        assert row["faces"] == sum(map(len, video))
        if agg == "tracks":
            by_id = {t["id"]: t for t in row["tracks"]}
            for tid in by_id:
                faces = [s for fr in video for t, _, s in fr if t == tid]
                assert (by_id[tid]["frames"], by_id[tid]["score"]) == (len(faces), ref_written(ref_track(faces)))
            assert row["score"] in {t["score"] for t in row["tracks"]}
    items = [Item(path=p, label=1, group=p.name) for p in clips]
    scores = scores_from_jsonl(items, out)
    verdicts = {r["path"]: r["verdict"] for r in rows}
    for i, it in enumerate(items):
        fake = rates(np.array([1]), np.array([scores[i]]), SCAN_THRESHOLD)["tpr"] == 1.0
        assert fake == (verdicts[str(it.path.resolve())] == "fake"), it.path


def test_resume_with_another_min_face_frames_is_refused(tmp_path, capsys):
    """min_face_frames decides no_face and which tracks count, yet no row said it: a scan resumed
    with another value mixed two no_face rules in one file without a word."""
    from scanner.cli import EXIT_OK, EXIT_USAGE
    from scanner.cli import main as dfscan

    fast = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]
    clips = [str(DATA / n) for n in ("d1.mp4", "d2.mp4")]
    out, cfg = tmp_path / "o.jsonl", tmp_path / "c.yaml"
    assert dfscan(["scan", clips[0], "--out", str(out), *fast]) == EXIT_OK
    assert "min_face_frames" not in json.loads(out.read_text())["aggregation"]  # default: as older rows
    cfg.write_text("min_face_frames: 1\n")
    before = out.read_bytes()
    assert dfscan(["scan", *clips, "--config", str(cfg), "--out", str(out), "--resume", *fast]) == EXIT_USAGE
    assert "aggregation" in capsys.readouterr().err and out.read_bytes() == before
