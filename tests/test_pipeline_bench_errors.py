"""dfscan bench --pipeline on a video that cannot be read: it was counted in videos/s
(3000 videos/s for one missing file) and the command exited 0."""
from scanner.cli import main
from scanner.pipeline_bench import _summarise


def test_failed_videos_do_not_count_as_throughput():
    rows = [{"path": "a.mp4", "verdict": "error", "frames": 0, "faces": 0, "timings": {"total": 0.0}},
            {"path": "b.mp4", "verdict": "real", "frames": 4, "faces": 4, "timings": {"total": 1.0}}]
    res = _summarise(rows, 2.0)
    assert res["videos"] == 2 and res["errors"] == 1 and res["videos_per_s"] == 0.5


def test_pipeline_bench_exits_1_when_no_video_scanned(tmp_path):
    missing = tmp_path / "missing.mp4"
    assert main(["bench", "--pipeline", str(missing), "--detectors", "test_tiny", "--out", str(tmp_path)]) == 1
