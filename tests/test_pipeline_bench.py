"""Pipeline benchmark: pure decode time of the frames a scan decodes, and the ratio."""
from __future__ import annotations

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
