"""Report audit: what the page says must match the rows (tiny synthetic clips, hand-made rows)."""
from __future__ import annotations

import json
import re

import pytest

from conftest import make_video
from engines.registry import file_hash
from scanner.cli import EXIT_OK, main
from scanner.report import ReportOptions, write_report
from scanner.report.thumbnails import evidence
from scanner.report.timeline import timeline_svg


def _row(video, **kw) -> dict:
    detail = [{"index": i, "time_s": i / 25, "score": 0.1,
               "faces": [{"box": [20, 20, 80, 80], "score": 0.1, "prob": 0.99, "track": 0}]} for i in range(4)]
    return {"path": str(video), "verdict": "real", "score": 0.1, "threshold": 0.5, "frames": 4,
            "frames_with_faces": 4, "faces": 4, "size_bytes": video.stat().st_size,
            "sha256": file_hash(video, None), "frames_detail": detail, **kw}


def _sections(html: str) -> list[str]:
    return re.findall(r'<details class="video .*?</details>', html, flags=re.S)


@pytest.fixture()
def clip(tmp_path):
    return make_video(tmp_path / "a.mp4", frames=8)


@pytest.mark.parametrize("size", [True, False])
def test_a_row_without_sha256_says_its_thumbnails_are_unchecked_without_verify_too(clip, size):
    """README: "a row without a hash says its thumbnails are unchecked". With --no-verify, and
    in a scan's own report (rendered with verify_hash=False), such a row's thumbnails, from a
    file checked by size only or not at all, were shown without a word."""
    row = _row(clip, sha256=None, **({} if size else {"size_bytes": None}))
    for verify in (True, False):
        ev = evidence(row, 1, verify_hash=verify)
        assert len(ev.thumbs) == 1 and ev.note and "no SHA-256" in ev.note, (verify, ev.note)
    assert evidence(_row(clip), 1, verify_hash=False).note is None  # hashed row: nothing to say


def test_report_with_no_verify_says_so_in_its_header(clip, tmp_path):
    """With --no-verify every thumbnail came from a file checked by size only, yet the page
    read like one whose videos had matched their rows' SHA-256."""
    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps(_row(clip)) + "\n")
    for flag, said in ((["--no-verify"], True), ([], False)):
        out = tmp_path / "r.html"
        assert main(["report", str(res), "--out", str(out), "--top-k", "1", *flag]) == EXIT_OK
        html = out.read_text(encoding="utf-8")
        assert html.count("<img ") == 1
        assert ("checked against its row by size only" in html) == said, flag


def test_faces_scored_only_nan_are_not_called_no_face_found(clip, tmp_path):
    """A no_face row whose faces were all scored NaN/inf (null in the row; faces 2,
    nonfinite_scores 2) said "no thumbnails: no face was found" next to its own losses line."""
    detail = [{"index": i, "time_s": i / 25, "score": None,
               "faces": [{"box": [20, 20, 80, 80], "score": None, "prob": 0.99, "track": 0}]} for i in range(2)]
    row = _row(clip, verdict="no_face", score=None, faces=2, nonfinite_scores=2, frames_detail=detail)
    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps(row) + "\n")
    write_report(res, tmp_path / "r.html", ReportOptions())
    sec = _sections((tmp_path / "r.html").read_text(encoding="utf-8"))[0]
    assert "no face was found" not in sec and "no face has a finite score" in sec
    assert "no face was found" in evidence(_row(clip, frames_detail=[
        {"index": 0, "time_s": 0.0, "score": None, "faces": []}]), 1).note


def test_a_face_below_the_threshold_does_not_read_as_the_threshold(clip, tmp_path):
    """The video's score reads on its verdict's side of the threshold, but a face at 0.4996
    (below 0.5: no artifact boxes, not fake) read "P(fake) 0.500" in its thumbnail caption
    and in the timeline's hover, beside "threshold 0.5"."""
    row = _row(clip)
    row["frames_detail"][2]["score"] = row["frames_detail"][2]["faces"][0]["score"] = 0.4996
    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps(row) + "\n")
    write_report(res, tmp_path / "r.html", ReportOptions(top_k=1))
    sec = _sections((tmp_path / "r.html").read_text(encoding="utf-8"))[0]
    assert "P(fake) 0.4996" in sec and "P(fake) 0.500" not in sec
    svg = timeline_svg(row, 0.5)
    assert "P(fake)=0.4996" in svg and "P(fake)=0.500<" not in svg
    assert "P(fake)=0.100<" in svg  # far from it: 3 decimals as before


def test_the_most_suspicious_face_track_is_always_drawn():
    """Only the 6 longest tracks were drawn: in a crowd of 7 real faces, the one fake face
    (3 of 8 frames at 0.97, the track an --aggregate tracks verdict rests on) was among the
    "shorter tracks not drawn"."""
    frames = []
    for i in range(8):
        faces = [{"box": [10 + 40 * k, 10, 40 + 40 * k, 40], "prob": 0.99, "score": 0.1, "track": k} for k in range(7)]
        if i < 3:
            faces.append({"box": [400, 10, 430, 40], "prob": 0.99, "score": 0.97, "track": 99})
        frames.append({"index": i, "time_s": i * 0.5, "score": max(f["score"] for f in faces), "faces": faces})
    svg = timeline_svg({"frames_detail": frames}, 0.5)
    assert "face track 99" in svg and svg.count('class="track"') == 6 and "(2 other tracks not drawn" in svg
