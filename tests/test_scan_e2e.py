"""End-to-end `dfscan scan` on real face footage, synthetic video and bad inputs."""
from __future__ import annotations

import csv
import json
import os
import shutil
import threading
import urllib.request

import numpy as np
import pytest

from conftest import DATA, SAMPLES, make_video
from scanner import metrics
from scanner.cli import EXIT_FAKE, EXIT_INPUT_ERROR, EXIT_OK, EXIT_USAGE, main
from scanner.config import ScanConfig
from scanner.pipeline import build_context, scan_paths
from scanner.research.features import iter_face_crops

EXPECTED_ERRORS = {
    "bad/empty.mp4": "empty_file",
    "bad/trunc.mp4": "truncated",
    "bad/noise.mp4": "not_video",
    "bad/text.mp4": "not_video",
    "bad/photo.mp4": "not_video",
    "bad/audio.mp4": "no_video_stream",
    "bad/zeroed.mp4": "no_frames",
}


def _audio(path):
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray((np.zeros((1, 8000))).astype(np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 16000
        for p in list(s.encode(frame)) + list(s.encode()):
            c.mux(p)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "real").mkdir()
    (root / "bad").mkdir()
    for name in ("d1.mp4", "d2.mp4"):
        shutil.copy(DATA / name, root / "real" / name)
    shutil.copy(SAMPLES / "d5.mp4", root / "real" / "d5.mp4")
    make_video(root / "synthetic.mp4", frames=40)
    real = (DATA / "d18.mp4").read_bytes()
    (root / "bad/empty.mp4").write_bytes(b"")
    (root / "bad/trunc.mp4").write_bytes(real[: len(real) // 2])
    (root / "bad/noise.mp4").write_bytes(np.random.default_rng(1).bytes(40_000))
    (root / "bad/text.mp4").write_bytes(b"just some text\n" * 50)
    (root / "bad/photo.mp4").write_bytes((DATA / "multiface.jpg").read_bytes())
    _audio(root / "bad/audio.mp4")
    zeroed = bytearray(real)
    a, b = zeroed.find(b"mdat") + 4, zeroed.find(b"moov") - 4
    zeroed[a:b] = bytes(b - a)
    (root / "bad/zeroed.mp4").write_bytes(bytes(zeroed))
    (root / "notes.txt.bak").write_text("not a video, not scanned")
    return root


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, val = line.rpartition(" ")
            out[key] = float(val)
    return out


@pytest.fixture(scope="module")
def scanned(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "scan.jsonl"
    server, port = metrics.serve(0)
    before = _scrape(port)
    code = main(["scan", str(corpus), "--out", str(out), "--frames", "8", "--no-progress"])
    after = _scrape(port)
    server.shutdown()
    return code, _rows(out), before, after, out


def test_one_row_per_input_with_specific_errors(scanned, corpus):
    code, rows, *_ = scanned
    assert code == EXIT_INPUT_ERROR  # some inputs errored
    by_rel = {str(__import__("pathlib").Path(r["path"]).relative_to(corpus)): r for r in rows}
    assert len(rows) == len(by_rel) == 4 + len(EXPECTED_ERRORS)
    for rel, kind in EXPECTED_ERRORS.items():
        assert by_rel[rel]["verdict"] == "error" and by_rel[rel]["error"]["kind"] == kind, rel
        assert by_rel[rel]["error"]["message"]
    assert by_rel["synthetic.mp4"]["verdict"] == "no_face"


def test_real_clips_have_faces_and_verdicts(scanned):
    _, rows, *_ = scanned
    real = [r for r in rows if "/real/" in r["path"]]
    assert len(real) == 3
    for r in real:
        assert r["verdict"] in ("real", "fake") and 0.0 <= r["score"] <= 1.0
        assert r["frames"] == 8 and r["frames_with_faces"] >= 6 and r["faces"] >= 6
        assert r["sha256"] and len(r["sha256"]) == 64 and r["size_bytes"] > 0
        assert r["detector"] == "meso4_df" and r["weights_hash"] != "random-init"
        assert set(r["timings"]) >= {"decode", "detect", "align", "infer", "aggregate", "total"}
        face = r["frames_detail"][0]["faces"][0]
        assert len(face["box"]) == 4 and 0 <= face["score"] <= 1 and face["prob"] >= 0.9
        # The video score is the mean of the frame scores (default aggregation).
        fs = [f["score"] for f in r["frames_detail"] if f["score"] is not None]
        assert r["score"] == pytest.approx(np.mean(fs), abs=1e-5)


def test_metrics_count_the_scan(scanned):
    _, rows, before, after, _ = scanned
    delta = lambda k: after.get(k, 0.0) - before.get(k, 0.0)  # noqa: E731
    faces = sum(r["faces"] for r in rows)
    frames = sum(r["frames"] for r in rows)
    assert delta("dfscan_faces_detected_total") == faces > 0
    assert delta("dfscan_frames_decoded_total") == frames
    assert delta('dfscan_videos_total{verdict="error"}') == len(EXPECTED_ERRORS)
    assert delta('dfscan_errors_total{kind="truncated"}') == 1
    analysed = sum(r["verdict"] != "error" for r in rows)  # error rows have no stage times
    assert delta('dfscan_stage_duration_seconds_count{stage="detect"}') == analysed
    assert any(k.startswith("dfscan_build_info") for k in after)


def test_resume_skips_done_inputs(scanned, corpus, capsys):
    *_, out = scanned
    n = len(_rows(out))
    extra = make_video(corpus / "later.mp4", frames=10)
    try:
        code = main(["scan", str(corpus), "--out", str(out), "--frames", "8", "--resume",
                     "--no-progress"])
        rows = _rows(out)
        # only the new input was scanned, and it did not error; the kept error rows still count
        assert code == EXIT_INPUT_ERROR and "counted in the exit code" in capsys.readouterr().out
        assert len(rows) == n + 1 and rows[-1]["path"].endswith("later.mp4")
    finally:
        extra.unlink()


def test_csv_output_and_fail_on_fake(tmp_path):
    out = tmp_path / "scan.csv"
    code = main(["scan", str(DATA / "d1.mp4"), "--out", str(out), "--frames", "4", "--threshold", "0",
                 "--fail-on-fake", "--no-progress"])
    assert code == EXIT_FAKE
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["verdict"] == "fake" and float(rows[0]["threshold"]) == 0
    # what a JSONL row says about lost frames, dropped scores and turning is in the CSV too
    assert (rows[0]["frames_requested"], rows[0]["frames_missed"]) == ("4", "0")
    assert (rows[0]["nonfinite_scores"], rows[0]["orientation_deg"]) == ("0", "0")
    # (score >= 0 holds for any score.) The threshold changes the verdict, never the score:
    ref = tmp_path / "ref.jsonl"
    assert main(["scan", str(DATA / "d1.mp4"), "--out", str(ref), "--frames", "4", "--no-progress"]) == EXIT_OK
    (again,) = _rows(ref)
    assert again["verdict"] == "real" and float(rows[0]["score"]) == pytest.approx(again["score"], abs=1e-6)


def test_path_disappearing_mid_scan(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    shutil.copy(DATA / "d1.mp4", a)
    shutil.copy(DATA / "d2.mp4", b)
    ctx = build_context(ScanConfig(frames=4, detector="test_tiny", hash=False, workers=1))
    rows = []
    for row in scan_paths([a, b], ctx=ctx):
        rows.append(row)
        b.unlink(missing_ok=True)  # vanishes after the first video finished
    assert rows[0]["verdict"] != "error"
    assert rows[1]["verdict"] == "error" and rows[1]["error"]["kind"] == "not_found"


def test_fifo_or_device_named_like_a_video_is_an_error_not_a_hang(tmp_path):
    # Opening a FIFO blocks until a writer appears: hashing or decoding one hung the
    # whole scan (and its graceful SIGTERM) forever; /dev/zero was hashed without end.
    fifo = tmp_path / "capture.mp4"
    os.mkfifo(fifo)
    ctx = build_context(ScanConfig(frames=4, detector="test_tiny", workers=1))
    rows: list[dict] = []
    t = threading.Thread(target=lambda: rows.extend(scan_paths([fifo, "/dev/null"], ctx=ctx)), daemon=True)
    t.start()
    t.join(20)
    hung = t.is_alive()
    while t.is_alive():  # let a reader stuck in open() see EOF, so the test ends
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        t.join(0.2)
    assert not hung, "scanning a FIFO blocked"
    assert [(r["verdict"], r["error"]["kind"]) for r in rows] == [("error", "not_video")] * 2
    assert "FIFO" in rows[0]["error"]["message"] and "device" in rows[1]["error"]["message"]


def test_yaml_config_validation(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("frames: 8\nframez: 3\n")
    assert main(["scan", str(DATA / "d1.mp4"), "--config", str(bad)]) == EXIT_USAGE
    assert "framez: unknown key" in capsys.readouterr().err
    bad.write_text("batch_size: -1\n")
    assert main(["scan", str(DATA / "d1.mp4"), "--config", str(bad)]) == EXIT_USAGE
    assert "batch_size" in capsys.readouterr().err


def test_yaml_slips_are_errors_not_settings(tmp_path):
    """`frames: true` scanned 1 frame per video and a key given twice took the last value,
    silently; a YAML syntax error was a multi-line message."""
    from scanner.config import ConfigError, build_config

    bad = tmp_path / "bad.yaml"
    for text, msg in (("frames: true\n", "frames: .*true/false"), ("threshold: false\n", "threshold"),
                      ("threshold: 0.5\nthreshold: 0.9\n", "'threshold' is given twice .*line 2"),
                      ("frames: [1\n", r"bad.yaml: .*\(line 2, column 1\)$")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=msg) as e:
            build_config(bad)
        assert "\n" not in str(e.value)
    bad.write_text("hash: false\nfail_on_fake: true\nframes: 4\n")  # real booleans still are
    assert build_config(bad).fail_on_fake is True


def test_yaml_sets_options_and_flags_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("frames: 3\ndetector: test_tiny\nhash: false\n")
    out = tmp_path / "o.jsonl"
    assert main(["scan", str(DATA / "d1.mp4"), "--config", str(cfg), "--frames", "5", "--out", str(out),
                 "--no-progress"]) == EXIT_OK
    row = _rows(out)[0]
    assert row["frames"] == 5 and row["detector"] == "test_tiny" and row["sha256"] is None


def test_face_crops_iterator_on_real_clip():
    from engines import create_detector

    spec = create_detector("meso4_df").spec
    got = list(iter_face_crops([DATA / "d2.mp4"], spec, ScanConfig(frames=4)))
    assert len(got) == 4
    for path, idx, crops in got:
        assert crops.dtype == np.uint8 and crops.shape[1:] == (256, 256, 3) and crops.std() > 10


def test_shipped_scan_yaml_is_valid_and_lists_every_key():
    import yaml

    from conftest import ROOT
    from scanner.config import build_config

    path = ROOT / "configs" / "scan.yaml"
    assert set(yaml.safe_load(path.read_text())) == set(ScanConfig.model_fields)
    assert build_config(path) == ScanConfig()


@pytest.mark.gpu
def test_cuda_scan_matches_cpu():
    """Same clip on cuda and cpu: same faces, scores within fp32 noise, same verdict."""
    rows = {}
    for device in ("cpu", "cuda"):
        ctx = build_context(ScanConfig(frames=8, device=device, hash=False))
        rows[device] = next(scan_paths([DATA / "d2.mp4"], ctx=ctx))
    cpu, gpu = rows["cpu"], rows["cuda"]
    assert gpu["verdict"] == cpu["verdict"] and gpu["faces"] == cpu["faces"]
    assert gpu["score"] == pytest.approx(cpu["score"], abs=2e-2)


def test_pipeline_benchmark_structure():
    from scanner.pipeline_bench import benchmark_pipeline

    res = benchmark_pipeline([str(DATA / "d1.mp4")], {"detectors": ["test_tiny"], "batch_sizes": [8]})
    (r,) = res["results"]
    assert res["machine"]["cpu_count"] >= 1 and r["detector"] == "test_tiny"
    assert r["videos"] == 1 and r["errors"] == 0 and r["frames"] == 16 and r["faces"] > 0
    assert r["videos_per_s"] > 0 and r["faces_per_s"] > 0
    assert sum(r["stage_share"].values()) == pytest.approx(1.0, abs=0.01)
