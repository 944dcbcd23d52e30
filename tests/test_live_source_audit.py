"""Frame times, pacing, stalls and backoff of live sources; verdict bounds around a threshold."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from conftest import make_video, wait_for
from scanner.live.config import VerdictConfig
from scanner.live.rolling import Hysteresis, VerdictSettings
from scanner.live.source import LiveSource, SourceSettings
from scanner.live.urls import SourceError
from scanner.live.watchdog import Watchdog


def _play(path, **kw) -> tuple[list, float, LiveSource]:
    """Play file ``path`` as a live source to its end: (sampled frames, wall seconds, source)."""
    kw = {"allow_files": True, "max_retries": 0, "buffer_frames": 64, "sample_fps": 2, **kw}
    src = LiveSource("f", str(path), SourceSettings(**kw))
    t0 = time.monotonic()
    src.start()
    try:
        wait_for(lambda: src.state == "stopped", 10, what="the file to end")
    finally:
        src.stop()
    items = []
    while (item := src.buffer.get()) is not None:
        items.append(item)
    return items, time.monotonic() - t0, src


def test_a_file_with_a_timestamp_on_every_other_picture_plays_paced(tmp_path):
    # H.264 in MPEG-PS: every other decoded picture has no PTS. The source took the monotonic
    # clock (hours) for those, so the file "played as live" slept for hours after its 2nd frame.
    path = make_video(tmp_path / "ps.mpg", frames=20, fps=10, fmt="vob")
    items, wall, src = _play(path)
    times = [i.time_s for i in items]
    assert src.stats.decoded == 20 and len(items) == 4, times
    assert all(b - a == pytest.approx(0.5, abs=0.06) for a, b in zip(times, times[1:])), times
    assert 1.3 < wall < 5


def test_a_raw_h264_file_without_timestamps_plays_at_its_rate(tmp_path):
    # No PTS at all: the wall clock stood in, so 2 s of video decoded in milliseconds and one
    # frame was sampled instead of one each 0.5 s (the rest never scanned).
    path = make_video(tmp_path / "raw.h264", frames=20, fps=10, fmt="h264", options={"bf": "0"})
    items, wall, _ = _play(path)
    assert [round(i.time_s, 3) for i in items] == [0.0, 0.5, 1.0, 1.5]
    assert wall > 1.3


def test_a_slow_file_is_paced_not_taken_as_stalled(tmp_path):
    # One frame a second with stall_s 0.4: the watchdog flagged the paced wait as a stall and
    # the file was reconnected, i.e. started again (forever, with retries): frames lost.
    path = make_video(tmp_path / "slow.mp4", frames=4, fps=1, options={"bf": "0"})
    src = LiveSource("slow", str(path), SourceSettings(allow_files=True, max_retries=0, buffer_frames=8,
                                                        stall_s=0.4))
    dog = Watchdog(lambda: [src], interval_s=0.05).start()
    try:
        src.start()
        wait_for(lambda: src.state == "stopped", 10, what="the file to end")
    finally:
        dog.stop()
        src.stop()
    assert src.stats.last_error == "end of stream" and src.stats.errors == 0
    assert src.stats.sampled == 4


def _live(monkeypatch, frames, **kw) -> tuple[list[float], LiveSource]:
    """Run a (not file) source's decode loop over fake ``frames``: the sample times taken."""
    src = LiveSource("cam", "rtsp://127.0.0.1:9/live", SourceSettings(**kw))
    taken = []
    monkeypatch.setattr(src, "_frames", lambda container, stream: iter(frames))
    monkeypatch.setattr(src, "_push", lambda frame, t, now, sar: taken.append(t))
    cc = SimpleNamespace(sample_aspect_ratio=None)
    src._decode(None, SimpleNamespace(sample_aspect_ratio=None, codec_context=cc, guessed_rate=25))
    return taken, src


def _frames(times, corrupt=False, sleep_s=0.0):
    for t in times:
        time.sleep(sleep_s)
        yield SimpleNamespace(time=t, is_corrupt=corrupt)


def test_a_live_stream_with_a_timestamp_on_every_other_picture_is_sampled_at_sample_fps(monkeypatch):
    # Stream and wall clock alternated: each frame looked like a jump forward or back, and
    # every one was sampled (25 fps into a 2 fps pipeline: drops, load, a skewed window).
    times = [i / 25 if i % 2 == 0 else None for i in range(25)]
    taken, _ = _live(monkeypatch, _frames(times, sleep_s=0.04))
    assert 2 <= len(taken) <= 4, taken  # 13 before (every other frame)
    assert taken == sorted(taken)


def test_a_live_stream_whose_timestamps_restart_keeps_being_sampled(monkeypatch):
    # A publisher restarting at PTS 0 after 2 s: no frame was sampled until its clock got back
    # to where the old one had stopped (a jump back under 2 s was never resynced).
    times = [i / 25 for i in range(50)] * 2
    taken, _ = _live(monkeypatch, _frames(times))
    assert len(taken) == 8, taken
    assert all(b > a for a, b in zip(taken, taken[1:])), taken


def test_after_a_gap_the_next_sample_is_a_period_later(monkeypatch):
    # After a jump forward the grid restarted at that frame, and the next frame (40 ms on)
    # was sampled too: twice the sample rate, a verdict reached on half the evidence.
    times = [i / 25 for i in range(25)] + [3 + i / 25 for i in range(25)]
    taken, _ = _live(monkeypatch, _frames(times))
    assert [round(t, 2) for t in taken] == [0.0, 0.52, 3.0, 3.52]


def test_a_file_with_a_damaged_stretch_plays_on(monkeypatch):
    # Reconnecting a file replays it from its start, where the same damage caught it again.
    src = LiveSource("cam", "x.mp4", SourceSettings(allow_files=True, stall_s=0.05, sample_fps=25))
    taken = []
    monkeypatch.setattr(src, "_frames", lambda container, stream: iter(
        [SimpleNamespace(time=i / 25, is_corrupt=i < 5) for i in range(8)]))
    monkeypatch.setattr(src, "_push", lambda frame, t, now, sar: taken.append(t))
    cc = SimpleNamespace(sample_aspect_ratio=None)
    src._decode(None, SimpleNamespace(sample_aspect_ratio=None, codec_context=cc, guessed_rate=25))
    assert [round(t, 2) for t in taken] == [0.2, 0.24, 0.28] and src.stats.corrupt == 5


def test_a_stream_of_only_damaged_pictures_reconnects(monkeypatch):
    # Concealed pictures kept the heartbeat going: the stream stayed 'live' for good, no
    # sample taken, never reconnected (a frozen picture reconnects after stall_s).
    with pytest.raises(SourceError, match="damaged"):
        _live(monkeypatch, _frames([i / 25 for i in range(50)], corrupt=True, sleep_s=0.02), stall_s=0.3)


def test_a_stream_live_for_long_that_stalls_resets_the_backoff(monkeypatch):
    # The backoff was reset only when the *state* had lasted 1 s; a stall had just set it to
    # 'stalled', so a stream live for hours waited the long backoff of earlier failures.
    src = LiveSource("cam", "rtsp://127.0.0.1:9/live", SourceSettings(backoff_initial_s=0.01, backoff_max_s=0.01))
    src._backoff.attempt = 7
    calls = []

    def session():
        calls.append(src._backoff.attempt)
        if len(calls) == 2:
            src._stop.set()
            raise SourceError("stopped")
        src._went_live_over(None)
        src._set_state("live")
        time.sleep(1.1)
        src.flag_stall()
        raise SourceError("stalled: no frames within the watchdog limit")

    monkeypatch.setattr(src, "_session", session)
    src._run()
    assert calls == [7, 1]


@pytest.mark.parametrize("threshold", [0.2, 0.35, 0.7])
def test_band_bounds_are_the_decimal_sums(threshold):
    # In binary 0.2 + 0.1 is 0.30000000000000004: a score of 0.3 never became 'fake' though
    # fake_above reads 0.3, and 0.35 - 0.1 made a score of 0.25 miss real_below.
    d = VerdictConfig().resolved(threshold)
    fake, real = round(threshold + 0.1, 6), round(threshold - 0.1, 6)
    assert (d["fake_above"], d["real_below"]) == (fake, real)
    s = VerdictSettings(**d)
    assert Hysteresis(s).update(fake, 3)[1] == "fake" and Hysteresis(s).update(real, 3)[1] == "real"


def test_band_zero_keeps_the_detector_threshold_exactly():
    for t in (0.5123456789012345, 0.1 + 0.2, 1 / 3):
        d = VerdictConfig(band=0).resolved(t)
        assert d["fake_above"] == d["real_below"] == t
