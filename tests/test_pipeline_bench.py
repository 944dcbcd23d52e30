"""Pipeline benchmark: pure decode time of the frames a scan decodes, and the ratio."""
from __future__ import annotations

import pytest
from conftest import DATA
from scanner.config import ScanConfig
from scanner.decode import FrameSampler
from scanner.pipeline_bench import benchmark_pipeline


def test_pipeline_benchmark_reports_decode_floor_per_video():
    res = benchmark_pipeline([str(DATA / "d1.mp4"), str(DATA / "d18.mp4")],
                             {"detectors": ["test_tiny"], "batch_sizes": [8]})
    dec = res["results"][0]["decode"]
    assert set(dec) == {"d1.mp4", "d18.mp4"}
    for name, d in dec.items():
        assert d["decode_only_s"] > 0 and d["pipeline_s"] == res["results"][0]["per_video_s"][name]
        assert abs(d["pipeline_over_decode"] - d["pipeline_s"] / d["decode_only_s"]) < 0.01


def test_decode_floor_decodes_what_the_scan_samples():
    cfg = ScanConfig(frames=7)
    frames = list(FrameSampler(DATA / "d18.mp4", cfg.frames, cfg.fps, cfg.det_max_side, cfg.seek))
    assert len(frames) == 7 and all(f.small is not None or max(f.image.shape) <= 960 for f in frames)


def test_same_named_videos_in_two_folders_both_keep_their_results(tmp_path):
    """Per-video results were keyed by file name: a/clip.mp4's were overwritten by b/clip.mp4's."""
    import shutil

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(DATA / "d1.mp4", tmp_path / d / "clip.mp4")
    shutil.copy(DATA / "d18.mp4", tmp_path / "a" / "other.mp4")
    res = benchmark_pipeline([str(tmp_path / "a"), str(tmp_path / "b")],
                             {"detectors": ["test_tiny"], "batch_sizes": [8]})["results"][0]
    want = {"a/clip.mp4", "b/clip.mp4", "other.mp4"}
    assert res["videos"] == 3 and set(res["per_video_s"]) == want and set(res["decode"]) == want


def test_video_labels_are_the_shortest_unique_tails():
    from scanner.pipeline_bench import video_labels

    assert video_labels(["x/a.mp4", "/r/x/a.mp4", "y/b.mp4"]) == {
        "x/a.mp4": "x/a.mp4", "/r/x/a.mp4": "r/x/a.mp4", "y/b.mp4": "b.mp4"}


def test_pipeline_bench_scans_with_the_workers_and_threads_of_dfscan_scan(monkeypatch):
    """build_context sets torch to cores/workers threads, and the bench then scanned one video
    at a time: on 2 cores one thread did all the work and videos/s read half a real scan's."""
    import threading

    import torch

    from scanner import pipeline
    from scanner.pipeline import resolve_workers

    monkeypatch.setattr(pipeline, "usable_cpus", lambda: 2)
    scanned_in, real_scan = [], pipeline.scan_video

    def recording(path, ctx):
        scanned_in.append(threading.current_thread().name)
        return real_scan(path, ctx)

    monkeypatch.setattr(pipeline, "scan_video", recording)
    threads = torch.get_num_threads()
    try:
        res = benchmark_pipeline([str(DATA / "d1.mp4"), str(DATA / "d18.mp4")],
                                 {"detectors": ["test_tiny"], "batch_sizes": [8]})["results"][0]
    finally:
        torch.set_num_threads(threads)
    want = resolve_workers(ScanConfig(detector="test_tiny"), res["engine"])
    assert want == 2 and (res["workers"], res["threads"]) == (2, 1)
    assert len(scanned_in) == 2 and all(n.startswith("scan") for n in scanned_in)  # the scan's pool


def test_bench_pipeline_of_inputs_naming_no_video_is_one_error_line(tmp_path, capsys):
    """A pattern or folder with no video in it made the warm-up scan an IndexError traceback."""
    from scanner.cli import main

    (tmp_path / "notes.txt").write_text("")
    assert main(["bench", "--pipeline", str(tmp_path / "*.mp4"), str(tmp_path), "--detectors", "test_tiny",
                 "--engines", "eager", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: bench --pipeline: no video file found in ") and err.count("\n") == 1, err
    assert not list(tmp_path.glob("out/*.json"))


def _bench_pipeline_p(tmp_path) -> list[str]:
    return ["bench", "--pipeline", str(DATA / "d1.mp4"), "--detectors", "test_tiny", "--engines", "eager",
            "onnxruntime", "--out", str(tmp_path), "--name", "p"]


def test_an_interrupted_pipeline_bench_keeps_its_first_result_marked_incomplete(tmp_path, monkeypatch, capsys):
    """bench --pipeline wrote its JSON only at the end: stopped (or crashed) after an hour of
    detectors x engines, it kept nothing, and the Ctrl-C note said so."""
    import json

    from scanner import pipeline_bench
    from scanner.cli import main

    (tmp_path / "p.json").write_text('{"complete": true, "results": []}')
    real, calls = pipeline_bench._bench_one, []

    def first_then_interrupt(*a):
        calls.append(a[1].engine)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(pipeline_bench, "_bench_one", first_then_interrupt)
    assert main(_bench_pipeline_p(tmp_path)) == 130
    res = json.loads((tmp_path / "p.json").read_text())
    assert calls == ["eager", "onnxruntime"] and res["complete"] is False
    assert [(r["detector"], r["engine_requested"], r["videos"]) for r in res["results"]] == [("test_tiny", "eager", 1)]
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # written whole: no temp file left
    assert capsys.readouterr().err.endswith(f"dfscan: interrupted; {tmp_path}/p.json holds what was measured "
                                            "so far, marked complete: false\n")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_pipeline_bench_stopped_before_its_first_result_leaves_an_earlier_file(stop, tmp_path, monkeypatch,
                                                                                capsys):
    from scanner import pipeline_bench
    from scanner.cli import main

    earlier = '{"complete": true, "results": [{"old": 1}]}'
    (tmp_path / "p.json").write_text(earlier)

    def fail(*_a):
        raise stop

    monkeypatch.setattr(pipeline_bench, "_bench_one", fail)
    if stop is KeyboardInterrupt:
        assert main(_bench_pipeline_p(tmp_path)) == 130
        assert capsys.readouterr().err.endswith(f"dfscan: interrupted; nothing written ({tmp_path}/p.json from "
                                                "before is left as it was)\n")
    else:
        with pytest.raises(RuntimeError):
            main(_bench_pipeline_p(tmp_path))
    assert (tmp_path / "p.json").read_text() == earlier and [p.name for p in tmp_path.iterdir()] == ["p.json"]
