"""Audit of the live inference path (multi-stream batches -> results -> verdicts): a frame's
result, error or non-finite score must reach its own stream, be counted where `dfscan serve`
exports it, and be written as the verdict was decided."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from scanner.decode import Frame
from scanner.live.batcher import FrameResult
from scanner.live.config import parse_config
from scanner.live.rolling import StreamVerdicts, VerdictSettings
from scanner.live.service import LiveService, _Stream
from scanner.live.source import LiveFrame

BOX = np.array([[10, 10, 90, 90]], np.float32)
IMG = np.zeros((8, 8, 3), np.uint8)


def _service(s: VerdictSettings | None = None, name: str = "cam"):
    """A service with one stream (no source thread) whose published events are recorded."""
    svc = LiveService(parse_config({}))
    st = _Stream(None, SimpleNamespace(_m=svc.metrics.stream(name), state="live"),
                 StreamVerdicts(name, s or VerdictSettings()), None)
    svc._streams[name] = st
    published: list[dict] = []
    svc.sinks.emit = published.append
    return svc, st, published


def _frame(k: int, t: float, stream: str = "cam") -> LiveFrame:
    return LiveFrame(stream, k, k, t, Frame(k, 0.0, IMG))


def _sample(svc, name: str) -> float | None:
    return svc.metrics.registry.get_sample_value(name, {"stream": "cam"})


def test_nan_face_scores_are_counted_in_the_live_metrics():
    """The analyzer counted NaN/inf scores in the batch registry, which `dfscan serve`'s
    /metrics never renders: a detector scoring every face NaN kept the stream `unknown`
    with nothing in /metrics (nor the log) saying why."""
    svc, st, _ = _service(VerdictSettings(min_samples=1))
    t = time.monotonic()
    svc._on_result(_frame(1, t), FrameResult(np.tile(BOX, (2, 1)), np.ones(2), np.array([np.nan, np.inf])))
    svc._on_result(_frame(2, t + 0.5), FrameResult(BOX, np.ones(1), np.array([0.2])))
    assert _sample(svc, "dfscan_stream_nonfinite_scores_total") == 2.0
    assert b"dfscan_stream_nonfinite_scores_total{stream=\"cam\"} 2.0" in svc.metrics.render()
    assert st.verdicts.summary["verdict"] == "real" and st.verdicts.summary["samples"] == 1
    svc.metrics.remove_stream("cam")  # a removed stream's series goes with the others
    assert b"nonfinite_scores_total{" not in svc.metrics.render()


def test_event_score_is_written_to_the_places_the_verdict_is_decided_on():
    """Verdicts compare the score rounded to 6 places (as a batch row's), events wrote it to 4:
    a window mean of 0.59996 went out as score 0.6 with verdict `uncertain` at fake_above 0.6."""
    s = VerdictSettings(window_s=10, fake_above=0.6, real_below=0.4, min_samples=1, emit_interval_s=1)
    sv = StreamVerdicts("cam", s)
    t = time.monotonic()
    ev = sv.update(t, BOX, np.array([0.59996]))
    stream = [e for e in ev if e["track"] is None][-1]
    assert stream["verdict"] == "uncertain"
    assert stream["score"] < s.fake_above and stream["score"] == 0.59996
    assert sv.summary["score"] == 0.59996 and sv.summary["tracks"]["1"]["score"] == 0.59996
    tick = sv.tick(t + 2)[-1]  # the interval summary, inside the window
    assert tick["score"] == 0.59996 and tick["tracks"] == {"1": 0.59996}


def test_a_failed_frame_of_a_removed_stream_is_not_an_error_of_its_namesake():
    """A frame of a stream removed (and re-added under its name) while in a failing batch was
    counted as an error of the new stream, which _on_result already guards against."""
    svc, st, _ = _service()
    st.added = time.monotonic()
    svc._on_error([_frame(1, st.added - 1.0)], RuntimeError("bad frame"))  # the old stream's
    assert _sample(svc, "dfscan_stream_errors_total") == 0.0
    svc._on_error([_frame(2, st.added + 0.1), _frame(3, st.added + 0.2, "gone")], RuntimeError("bad"))
    assert _sample(svc, "dfscan_stream_errors_total") == 1.0


def test_watch_shows_a_score_on_its_verdicts_side_of_both_bounds():
    """0.5996, `uncertain` below fake_above 0.6, read "0.600" in dfscan watch's table."""
    from rich.console import Console

    from scanner.aggregate import score_text_band
    from scanner.live.watch import stream_table

    assert score_text_band(0.5996, 0.4, 0.6) == "0.5996"
    assert score_text_band(0.4004, 0.4, 0.6) == "0.4004"
    assert score_text_band(0.6, 0.4, 0.6) == "0.600" and score_text_band(0.25, 0.4, 0.6) == "0.250"
    row = {"name": "cam", "state": "live", "fps": 25.0, "frames_sampled": 10, "frames_dropped": 0,
           "reconnects": 0, "faces": 10, "score": 0.5996, "verdict": "uncertain", "last_error": ""}
    console = Console(width=200, record=True)
    console.print(stream_table([row], (0.4, 0.6)))
    assert "0.5996" in console.export_text()


def test_an_analyzer_returning_fewer_results_than_frames_is_an_error_not_a_silent_loss():
    from scanner.live.batcher import InferenceWorker

    errors = []
    w = InferenceWorker.__new__(InferenceWorker)
    w.analyzer = lambda frames: [FrameResult(BOX, np.ones(1), np.array([0.5]))] * (len(frames) - 1)
    w.device, w.on_error = "cpu", lambda batch, e: errors.append(batch[0].seq)
    from scanner.live.throttle import LogThrottle

    w._throttle = LogThrottle()
    out = w._analyse([_frame(1, 0.0), _frame(2, 0.0)])
    assert out == [] and errors == [1, 2]  # each frame alone got no result: an error each
