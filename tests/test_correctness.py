"""Correct answers or a clear error (issue 9): regressions for silent wrong results."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, SAMPLES
from scanner.cli import main as dfscan


# -- 1. eval pairs scores with labels by path, whatever the completion order ------------

def test_eval_with_workers_pairs_each_score_with_its_own_video(tmp_path):
    """Two workers, a long clip listed first and an instantly failing file next: rows
    come back out of order, yet every eval score must be the one `dfscan scan` gives
    that same video."""
    vids = tmp_path / "v"
    vids.mkdir()
    shutil.copy(SAMPLES / "d7.mp4", vids / "long.mp4")      # long clip: finishes last
    (vids / "broken.mp4").write_bytes(b"not a video\n" * 40)  # fails at once
    for name in ("d1.mp4", "d2.mp4", "d18.mp4"):
        shutil.copy(DATA / name, vids / name)
    order = ["long.mp4", "broken.mp4", "d1.mp4", "d2.mp4", "d18.mp4"]
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(
        f"v/{n},{k % 2}\n" for k, n in enumerate(order)))
    opts = ["--detector", "test_tiny", "--engine", "eager", "--frames", "6", "--workers", "2"]
    assert dfscan(["eval", str(tmp_path / "m.csv"), *opts, "--out", str(tmp_path / "ev.json"),
                   "--quiet"]) == 0
    assert dfscan(["scan", *[str(vids / n) for n in order], *opts, "--out", str(tmp_path / "s.jsonl"),
                   "--no-progress"]) == 1  # broken.mp4 is an error row
    scan = {json.loads(x)["path"]: json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()}
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert [r["label"] for r in ev["scores"]] == [k % 2 for k in range(len(order))]
    for r in ev["scores"]:
        expected = scan[r["path"]]["score"]
        if expected is None:
            assert r["score"] is None, r["path"]
        else:
            assert r["score"] == pytest.approx(expected, abs=1e-6), r["path"]
    got = [r["score"] for r in ev["scores"] if r["score"] is not None]
    assert len(got) == 4 and len({round(x, 6) for x in got}) == 4  # distinct: a swap would show
    assert ev["video_verdicts"]["error"] == 1


# -- shared: one small scan context --------------------------------------------------

@pytest.fixture(scope="module")
def ctx():
    from scanner.config import ScanConfig
    from scanner.pipeline import build_context

    return build_context(ScanConfig(frames=6, detector="test_tiny", engine="eager", workers=1))


def _forced_scores(monkeypatch, ctx, values):
    """Make the detector report ``values`` (cycled) as P(fake), in crop order."""
    import torch

    it = iter(np.resize(np.asarray(values, np.float32), 10_000))
    monkeypatch.setattr(ctx.detector, "p_fake",
                        lambda out: torch.tensor([next(it) for _ in range(len(out))]))


# -- 2. non-finite detector outputs never become verdicts ---------------------------------

def _nonfinite_total() -> float:
    from scanner import metrics

    return metrics.REGISTRY.get_sample_value("dfscan_nonfinite_scores_total") or 0.0


def test_one_nan_face_among_fakes_is_dropped_and_counted(ctx, monkeypatch):
    from scanner.pipeline import scan_video

    _forced_scores(monkeypatch, ctx, [float("nan")] + [0.99] * 50)
    before = _nonfinite_total()
    row = scan_video(DATA / "d2.mp4", ctx)
    assert row["verdict"] == "fake" and row["score"] == pytest.approx(0.99)
    assert row["faces"] == 6 and row["nonfinite_scores"] == 1 and row["frames_with_faces"] == 5
    assert _nonfinite_total() - before == 1
    json.dumps(row, allow_nan=False)  # no NaN anywhere in the row
    assert [f["faces"][0]["score"] for f in row["frames_detail"]].count(None) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_scores_non_finite_is_an_error(ctx, monkeypatch, bad):
    from scanner.pipeline import scan_video

    _forced_scores(monkeypatch, ctx, [bad])
    row = scan_video(DATA / "d2.mp4", ctx)
    assert row["verdict"] == "error" and row["error"]["kind"] == "non_finite"
    assert row["score"] is None
    json.dumps(row, allow_nan=False)


def test_no_face_video_with_a_nan_face_stays_no_face(ctx, monkeypatch):
    """A face in 1 of 6 sampled frames is no_face whatever its score; when the detector
    scored that face NaN the row became a non_finite error (exit 1) saying too few finite
    scores were left for a verdict, though no score could have given one."""
    from scanner import pipeline
    from scanner.faces import Faces

    orig, seen = pipeline.detect_and_align, []

    def faces_in_first_frame_only(batch, *a, **k):
        out = []
        for fr, fc, crops, mats in orig(batch, *a, **k):
            keep = not seen and len(fc)
            seen.append(fr.index)
            out.append((fr, fc, crops, mats) if keep else (fr, Faces.empty(), crops[:0], mats[:0]))
        return out

    monkeypatch.setattr(pipeline, "detect_and_align", faces_in_first_frame_only)
    _forced_scores(monkeypatch, ctx, [float("nan")])
    row = pipeline.scan_video(DATA / "d2.mp4", ctx)
    assert row["verdict"] == "no_face" and row["error"] is None, row["error"]
    assert row["faces"] == 1 and row["nonfinite_scores"] == 1 and row["frames_with_faces"] == 0


def test_aggregation_ignores_non_finite_scores():
    from scanner.aggregate import decide, frame_score

    nan = float("nan")
    assert frame_score(np.array([nan, 0.2]), np.array([100.0, 1.0]), "largest") == 0.2
    assert frame_score(np.array([nan]), np.array([1.0]), "max") is None
    v = decide([0.99, nan, 0.99], 0.5, "mean", 5, 2)
    assert v.verdict == "fake" and v.score == pytest.approx(0.99) and v.frames_with_faces == 2


@pytest.mark.parametrize("shape", ["fewer", "two_per_crop", "column", "logits"])
def test_detector_scores_not_one_per_face_is_an_error(ctx, monkeypatch, shape):
    """Scores pair with faces by position: a detector giving N-1 scores left a face
    unscored (counted as NaN), 2N (two logits per crop, default p_fake) paired faces
    with other crops' logits silently, (N, 1) was a TypeError, raw logits (< 0) read as
    real. Now a specific error,
    in batch and live alike."""
    import torch

    from engines.detector import scores_for
    from engines.errors import DetectorOutputError
    from scanner.live.batcher import FrameAnalyzer
    from scanner.pipeline import scan_video

    orig = ctx.detector.p_fake
    bad = {"fewer": lambda out: orig(out)[:-1], "two_per_crop": lambda out: orig(out).repeat(2),
           "column": lambda out: orig(out)[:, None],
           "logits": lambda out: torch.logit(orig(out)) - 3.0}[shape]  # all < 0: all 'real' before
    monkeypatch.setattr(ctx.detector, "p_fake", bad)
    row = scan_video(DATA / "d2.mp4", ctx)
    assert row["verdict"] == "error" and row["score"] is None
    what = "outside [0, 1]" if shape == "logits" else "of shape"
    assert row["error"]["message"].startswith(f"DetectorOutputError: detector test_tiny returned scores {what}")
    live = object.__new__(FrameAnalyzer)  # the live scoring path, without its face detector
    live.model, live.engine, live.max_crops = ctx.detector, ctx.engine, 4
    with pytest.raises(DetectorOutputError, match=r"outside|for 4 face crop\(s\)"):
        live._score(torch.zeros(6, 3, ctx.detector.spec.size, ctx.detector.spec.size))
    monkeypatch.setattr(ctx.detector, "p_fake", orig)
    assert scores_for(ctx.detector, ctx.engine(torch.zeros(3, 3, ctx.detector.spec.size, ctx.detector.spec.size)), 3).shape == (3,)


# -- 5. frames smaller than the smallest face: no faces, not a crash ------------------------

def test_video_smaller_than_min_face_is_no_face(ctx, tmp_path):
    from conftest import make_video
    from scanner.decode import FrameSampler
    from scanner.pipeline import scan_video

    path = make_video(tmp_path / "tiny.mp4", frames=12, size=(48, 48))
    frames = list(FrameSampler(path, frames=4))
    assert [len(f) for f in ctx.faces.detect(frames)] == [0, 0, 0, 0]
    row = scan_video(path, ctx)
    assert row["verdict"] == "no_face" and row["error"] is None and row["frames"] == 6


# -- 6. error kinds with the default settings (hashing on) --------------------------------

def test_missing_file_is_not_found_with_hashing(tmp_path):
    from scanner.config import ScanConfig
    from scanner.pipeline import build_context, scan_video

    cfg = ScanConfig(frames=4, detector="test_tiny")
    assert cfg.hash  # the default
    row = scan_video(tmp_path / "gone.mp4", build_context(cfg))
    assert row["verdict"] == "error" and row["error"]["kind"] == "not_found", row["error"]


_AS_NOBODY = r"""
import json, os, pwd, sys
from scanner.config import ScanConfig
from scanner.pipeline import build_context, scan_paths
ctx = build_context(ScanConfig(frames=4, detector="test_tiny", workers=1))  # hash on (default)
nobody = pwd.getpwnam("nobody")
os.setgroups([]); os.setgid(nobody.pw_gid); os.setuid(nobody.pw_uid)  # as an unprivileged user
assert os.geteuid() == nobody.pw_uid
rows = list(scan_paths(sys.argv[1:], ctx=ctx))
print(json.dumps({r["path"]: r for r in rows}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to the unprivileged user")
def test_unreadable_file_is_permission_for_an_unprivileged_user(tmp_path):
    """Really unreadable (mode 600, owned by root) for a process running as ``nobody``.

    The subprocess imports and builds everything as root (the repository may live
    where ``nobody`` cannot read), then drops to ``nobody`` before scanning.
    """
    from conftest import ROOT

    d = Path(tempfile.mkdtemp(prefix="dfscan-perm-"))
    try:
        d.chmod(0o755)
        ok, locked = d / "ok.mp4", d / "locked.mp4"
        shutil.copy(DATA / "d1.mp4", ok)
        shutil.copy(DATA / "d1.mp4", locked)
        ok.chmod(0o644)
        locked.chmod(0o600)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", _AS_NOBODY, str(ok), str(locked), str(d / "gone.mp4")],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        rows = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert rows[str(ok)]["verdict"] in ("real", "fake") and len(rows[str(ok)]["sha256"]) == 64
    assert rows[str(locked)]["error"]["kind"] == "permission", rows[str(locked)]["error"]
    assert rows[str(d / "gone.mp4")]["error"]["kind"] == "not_found"


# -- 7. any exception inside one video is that video's error row -----------------------------

@pytest.mark.parametrize("exc", [TypeError("t"), KeyError("k"), AssertionError("a"), ZeroDivisionError("z"),
                                 MemoryError("m"), "av"])
def test_any_exception_in_one_video_is_an_internal_error_row(ctx, monkeypatch, tmp_path, exc):
    import av

    from scanner import pipeline

    if exc == "av":  # a PyAV error that is neither OSError nor ValueError
        assert not issubclass(av.error.ExternalError, (OSError, ValueError, RuntimeError))
        exc = av.error.ExternalError(1, "injected")
    real_align = pipeline.align_faces

    def align_faces(images, *args, **kw):
        if images[0].shape[0] == 512:  # only d1.mp4 (512 px), not the 120 px clip
            raise exc
        return real_align(images, *args, **kw)

    monkeypatch.setattr(pipeline, "align_faces", align_faces)
    from conftest import make_video

    rows = list(pipeline.scan_paths([DATA / "d1.mp4", make_video(tmp_path / "next.mp4", frames=8)], ctx=ctx))
    assert [r["verdict"] for r in rows][0] == "error"
    err = rows[0]["error"]
    assert err["kind"] == "internal" and err["message"].startswith(type(exc).__name__)
    assert rows[1]["verdict"] == "no_face" and rows[1]["frames"] == 6  # the scan went on


# -- 2/5 live: NaN never freezes a rolling verdict; one bad frame loses only itself ---------

def test_live_rolling_verdict_ignores_non_finite_scores():
    from scanner.live.rolling import StreamVerdicts, VerdictSettings

    sv = StreamVerdicts("s", VerdictSettings(window_s=100, min_samples=2, emit_interval_s=1e9))
    box = np.array([[10, 10, 90, 90]], np.float32)
    events = []
    for t, p in enumerate([0.9, float("nan"), 0.9, 0.1, 0.1, 0.1, 0.1, 0.1]):
        events += sv.update(float(t), box, np.array([p], np.float32))
    # NaN is skipped, so the stream turns fake after two 0.9s, then real once the mean drops
    assert [e["verdict"] for e in events if e["track"] is None] == ["fake", "real"]
    assert sv.summary["samples"] == 7 and sv.summary["score"] == pytest.approx((1.8 + 0.5) / 7, abs=1e-4)
    json.dumps([events, sv.summary], allow_nan=False)


def test_live_batch_failure_costs_only_the_failing_frame():
    from scanner.decode import Frame
    from scanner.live.batcher import FrameResult, InferenceWorker
    from scanner.live.source import LiveFrame

    def analyzer(frames):
        if any(f.index == 666 for f in frames):
            raise RuntimeError("cannot analyse this frame")
        return [FrameResult(np.zeros((0, 4)), np.zeros(0), np.zeros(0)) for _ in frames]

    got, failed = [], []
    w = InferenceWorker("cpu", analyzer, lambda f, r: got.append(f.stream),
                        on_error=lambda b, e: failed.extend(f.stream for f in b))
    img = np.zeros((8, 8, 3), np.uint8)
    batch = [LiveFrame(name, 0, 0.0, time.monotonic(), Frame(idx, 0.0, img))
             for name, idx in (("a", 1), ("bad", 666), ("c", 3))]
    w._process(batch)
    assert got == ["a", "c"] and failed == ["bad"]


# -- 3. every row says how many sampled frames were asked for and lost ---------------------

def test_rows_count_requested_and_missed_frames(ctx, monkeypatch, tmp_path):
    from scanner.decode import FrameSampler
    from scanner.pipeline import scan_video

    row = scan_video(DATA / "d18.mp4", ctx)
    assert (row["frames_requested"], row["frames_missed"], row["frames"]) == (6, 0, 6)
    err = scan_video(tmp_path / "gone.mp4", ctx)
    assert err["verdict"] == "error" and "frames_requested" in err and "frames_missed" in err
    # A decoder that never returns one sampled frame (neither after a seek nor in order):
    real = FrameSampler._decode_packet

    def lose_frame_86(self, pkt):
        return [f for f in real(self, pkt) if self.index.rank(f.pts) != 86]

    monkeypatch.setattr(FrameSampler, "_decode_packet", lose_frame_86)
    row = scan_video(DATA / "d18.mp4", ctx)
    assert (row["frames_requested"], row["frames_missed"], row["frames"]) == (6, 1, 5)
    assert [f["index"] for f in row["frames_detail"]] == [0, 43, 129, 172, 215]


def test_a_verdict_needs_enough_decoded_frames_not_just_enough_faces_of_them(ctx, monkeypatch):
    # A damaged file whose decoder returned 2 of 6 sampled frames: frames_needed was
    # capped at the 2 decoded (a rule for 2-frame clips), so 2 faces made a verdict where
    # 3 are asked of a 6-frame sample. Too few decoded frames is an error row saying so.
    from scanner.decode import FrameSampler
    from scanner.pipeline import scan_video

    real = FrameSampler._decode_packet

    def keep_two(self, pkt):
        return [f for f in real(self, pkt) if self.index.rank(f.pts) in (0, 215)]

    monkeypatch.setattr(FrameSampler, "_decode_packet", keep_two)
    row = scan_video(DATA / "d18.mp4", ctx)
    assert row["verdict"] == "error" and row["error"]["kind"] == "frames_missed", row
    assert "2 of 6" in row["error"]["message"]
    assert (row["frames_requested"], row["frames_missed"]) == (6, 4)


def test_live_inference_failing_on_every_frame_logs_once_not_per_frame(caplog):
    # A detector failing on every frame logged a traceback per frame of every stream
    # (plus a warning per batch): the log buried everything else at frame rate.
    from scanner.decode import Frame
    from scanner.live.batcher import InferenceWorker
    from scanner.live.source import LiveFrame

    def analyzer(frames):
        raise ValueError("detector returned 3 scores for 2 faces")

    failed = []
    w = InferenceWorker("cpu", analyzer, lambda f, r: None, on_error=lambda b, e: failed.extend(b))
    img = np.zeros((8, 8, 3), np.uint8)
    with caplog.at_level("WARNING", logger="scanner.live.batcher"):
        for k in range(50):
            w._process([LiveFrame(s, k, 0.0, time.monotonic(), Frame(k, 0.0, img)) for s in ("a", "b")])
    assert len(failed) == 100  # every frame still reported to its stream
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and {r.args[1] for r in errors} == {"a", "b"} and errors[0].exc_info
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
