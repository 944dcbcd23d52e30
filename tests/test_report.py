"""`dfscan report` and the scan's HTML output, on real footage (DOM checks in test_report_browser)."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
from html import escape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import DATA
from engines import create_detector
from engines.detector import Detector
from engines.explain import ExplainError, gradcam
from engines.spec import InputSpec
from report_data import CLIPS, ERROR_INPUT, scan_corpus, sections
from scanner.cli import EXIT_OK, EXIT_USAGE, main
from scanner.decode import FrameSampler
from scanner.report import ReportOptions, load_rows, write_report
from scanner.report.thumbnails import crop_box, evidence, remap
from scanner.report.timeline import face_tracks, timeline_svg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return scan_corpus(tmp_path_factory.mktemp("report"))


def _report(results, tmp_path, **kw) -> str:
    out = tmp_path / "r.html"
    write_report(results, out, ReportOptions(**kw))
    return out.read_text(encoding="utf-8")


def _jpeg(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_report_of_real_scan_has_every_part(corpus, tmp_path):
    html = _report(corpus, tmp_path)
    secs = sections(html)
    assert len(secs) == len(CLIPS) + 1  # one per input, the error row included
    err = [s for s in secs if 'class="video error"' in s]
    assert len(err) == 1 and ERROR_INPUT in err[0] and "not_video" in err[0]
    assert "errors by kind</dt><dd>not_video: 1" in html
    ok = [s for s in secs if s not in err]
    for s in ok:
        assert s.count('<svg class="timeline"') == 1 and s.count('class="frame-score"') == 1
        assert s.count("<img ") == 4  # k = 4 thumbnails, JPEG data URIs
        assert s.count('class="artifact"') >= 1  # test_adm boxes drawn on the thumbnails
    assert "http://" not in html.replace('http://www.w3.org', '') and "https://" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    # Size: k JPEG thumbnails keep a video's section small (1,000 videos well under 50 MB).
    assert max(len(s) for s in ok) < 40_000


def test_thumbnail_shows_the_scanned_frame(corpus, tmp_path):
    """The thumbnail's pixels are those of the frame the row names (re-decoded, not guessed)."""
    row = next(r for r in load_rows(corpus)[0] if r["path"].endswith("d18.mp4"))
    face = max(((fr, fc) for fr in row["frames_detail"] for fc in fr["faces"]), key=lambda x: x[1]["score"])
    html = _report(corpus, tmp_path, top_k=1)
    sec = next(s for s in sections(html) if "d18.mp4" in s)
    thumb = _jpeg(sec.split('<img src="', 1)[1].split('"', 1)[0])
    frames = {f.index: f for f in FrameSampler(row["path"], frames=None, fps=1000)}  # every frame

    def diff(idx):
        img = frames[idx].image
        l, t, r, b = crop_box(face[1]["box"], img.shape[1], img.shape[0])
        ref = np.asarray(Image.fromarray(img[t:b, l:r]).resize(thumb.shape[1::-1], Image.LANCZOS))
        return np.abs(ref.astype(int) - thumb.astype(int)).mean()

    i = face[0]["index"]
    assert diff(i) < 4  # JPEG noise only
    # ... and closer than any frame half a second or more away (a talking head moves).
    assert diff(i) < min(diff(j) for j in frames if abs(j - i) >= 15)


def test_report_without_the_videos_then_with_video_root(corpus, tmp_path):
    moved = tmp_path / "archive" / "batch1"
    shutil.copytree(corpus.parent / "videos", moved)
    gone = tmp_path / "gone.jsonl"
    rows = [json.loads(x) for x in corpus.read_text().splitlines()]
    for r in rows:
        r["path"] = "/mnt/old-share/batch1/" + r["path"].rsplit("/", 1)[1]
    gone.write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = _report(gone, tmp_path)
    assert len(sections(html)) == len(rows) and "<img " not in html
    assert html.count("no thumbnails: video not found") == len(CLIPS)
    assert html.count('<svg class="timeline"') == len(CLIPS)  # timelines need only the rows
    for root in (str(tmp_path / "archive"), f"/mnt/old-share={tmp_path / 'archive'}"):
        html = _report(gone, tmp_path, video_root=root)
        assert html.count("<img ") == 4 * len(CLIPS), root



def test_video_root_never_leads_out_of_itself(tmp_path):
    """A row path with ``..`` was followed out of --video-root NEW, and OLD=NEW cut OLD
    mid-name (OLD=/a/b turned /a/bc/x.mp4 into NEWc/x.mp4): both found a video outside NEW."""
    (tmp_path / "root").mkdir()
    for d in ("secret", "rootc"):
        (tmp_path / d).mkdir()
        shutil.copy(DATA / "d1.mp4", tmp_path / d / "d1.mp4")
    root = str(tmp_path / "root")
    assert remap("../secret/d1.mp4", root) == [tmp_path / "root" / "secret" / "d1.mp4", tmp_path / "root" / "d1.mp4"]
    assert remap("/old/../secret/d1.mp4", f"/old={root}") == []
    assert remap("/oldc/d1.mp4", f"/old={root}") == [Path("/oldc/d1.mp4")]
    assert remap("/old/c/d1.mp4", f"/old/={root}") == [tmp_path / "root" / "c" / "d1.mp4"]
    row = {"path": "../secret/d1.mp4", "verdict": "real", "frames_detail": [
        {"index": 0, "time_s": 0.0, "score": 0.1, "faces": [{"box": [0, 0, 60, 60], "score": 0.1}]}]}
    for path, video_root in (("../secret/d1.mp4", root), ("/old/../secret/d1.mp4", f"/old={root}"),
                             ("/mnt/rootc/d1.mp4", f"/mnt/root={root}")):
        ev = evidence({**row, "path": path}, 1, video_root)
        assert not ev.thumbs and ev.note.startswith("video not found"), path

def test_video_root_tries_every_match_before_calling_the_video_changed(tmp_path):
    # Only the longest match under NEW was tried: another video of the same name there made
    # the report say "changed since the scan" though the scanned file was a shorter match.
    from engines.registry import file_hash
    from scanner.report.thumbnails import locate

    root = tmp_path / "root"
    (root / "batch1").mkdir(parents=True)
    shutil.copy(DATA / "d2.mp4", root / "batch1" / "d1.mp4")  # same name, other video
    shutil.copy(DATA / "d1.mp4", root / "d1.mp4")
    row = {"path": "/mnt/old/batch1/d1.mp4", "size_bytes": (DATA / "d1.mp4").stat().st_size,
           "sha256": file_hash(DATA / "d1.mp4", None)}
    path, reason, _ = locate(row, str(root), verify_hash=True)
    assert (path, reason) == (root / "d1.mp4", None)
    (root / "d1.mp4").unlink()
    path, reason, _ = locate(row, str(root), verify_hash=True)
    assert path is None and reason.startswith(f"{root / 'batch1' / 'd1.mp4'} changed since the scan")


def test_changed_video_gives_no_thumbnails(corpus, tmp_path):
    rows = [json.loads(x) for x in corpus.read_text().splitlines()]
    d1 = next(r for r in rows if r["path"].endswith("d1.mp4"))
    d2 = next(r for r in rows if r["path"].endswith("d2.mp4"))
    resized, same_size = tmp_path / "a.mp4", tmp_path / "b.mp4"
    shutil.copy(DATA / "d18.mp4", resized)
    data = bytearray((DATA / "d2.mp4").read_bytes())
    data[len(data) // 2] ^= 0xFF
    same_size.write_bytes(bytes(data))
    res = tmp_path / "changed.jsonl"
    res.write_text(json.dumps({**d1, "path": str(resized)}) + "\n" + json.dumps({**d2, "path": str(same_size)}) + "\n")
    html = _report(res, tmp_path)
    assert "<img " not in html and "changed since the scan (size" in html and "SHA-256 differs" in html



def test_thumbnails_of_a_row_without_sha256_say_they_are_unchecked(corpus, tmp_path):
    """A row without SHA-256 (hash off, an older or foreign row) had its video checked by size
    only, or not at all, and its thumbnails were shown as the scan's evidence without a word."""
    rows = [json.loads(x) for x in corpus.read_text().splitlines()]
    d1 = next(r for r in rows if r["path"].endswith("d1.mp4"))
    res = tmp_path / "nohash.jsonl"
    res.write_text(json.dumps({**d1, "sha256": None}) + "\n"
                   + json.dumps({**d1, "path": d1["path"] + ".x", "sha256": None, "size_bytes": None}) + "\n")
    os.link(d1["path"], d1["path"] + ".x")
    try:
        secs = sections(_report(res, tmp_path, top_k=1))
    finally:
        os.unlink(d1["path"] + ".x")
    assert all(s.count("<img ") == 1 for s in secs)
    assert "no SHA-256: only its size was checked" in secs[0]
    assert "no SHA-256: neither size nor hash was checked" in secs[1]
    assert "no SHA-256" not in _report(corpus, tmp_path)


def test_frames_missed_and_nonfinite_scores_are_shown(tmp_path):
    """The rows count frames no decoder pass produced and NaN/inf face scores ("a lost frame
    is counted, never silent"), but the report showed neither: a verdict on 4 of 32 frames
    read like any other."""
    row = {"path": "/v/a.mp4", "verdict": "fake", "score": 0.9, "frames": 4, "frames_with_faces": 4,
           "faces": 4, "frames_requested": 32, "frames_missed": 28, "nonfinite_scores": 2}
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in [
        row, {**row, "path": "/v/b.mp4", "frames_missed": 0, "nonfinite_scores": 0},
        {**row, "path": "/v/c.mp4", "nonfinite_scores": "2"}]))
    secs = sections(_report(p, tmp_path))
    assert len(secs) == 2 and "28 of 32 requested frames could not be decoded" in secs[0]
    assert "2 face score(s) NaN/inf, left out of the verdict" in secs[0] and "losses" not in secs[1]
    # a picture the decoder could only conceal counts as missed: the page says the file is damaged
    p.write_text(json.dumps({**row, "frames_missed": 1, "video": {"frames_corrupt": 1}}) + "\n")
    assert "1 of 32 requested frames could not be decoded (1 only decoded damaged: the file is damaged)" \
        in sections(_report(p, tmp_path))[0]


def test_a_verdict_of_a_newer_version_is_counted_and_filterable(tmp_path):
    """A verdict this version does not know (a newer scan's) was in no header count (the
    counts did not add up to the videos) and had no filter box (it could not be hidden)."""
    x = '<i>"new'
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps({"path": f"/v/{n}.mp4", "verdict": v, "score": 0.5}) + "\n"
                         for n, v in enumerate(["real", "uncertain", "uncertain", x])))
    html = _report(p, tmp_path)
    assert '<b class="count-uncertain">2</b>' in html and '<b class="count-real">1</b>' in html
    assert 'class="verdict-filter" value="uncertain" checked> uncertain</label>' in html
    assert f'value="{escape(x)}"' in html and "<i>" not in html


def test_thumbnail_warning_puts_no_raw_escape_on_the_terminal(tmp_path, caplog):
    """The warning for a video whose thumbnails failed printed the row's path and the error
    (which quotes a row value) raw: a hand-made row could retitle or rewrite the terminal."""
    esc = "\x1b]0;owned\x07"
    vid = tmp_path / f"a{esc}.mp4"
    shutil.copy(DATA / "d1.mp4", vid)
    row = {"path": str(vid), "verdict": "real", "score": 0.1, "orientation_deg": esc, "frames_detail": [
        {"index": 0, "time_s": 0.0, "score": 0.1, "faces": [{"box": [0, 0, 60, 60], "score": 0.1}]}]}
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(row) + "\n")
    with caplog.at_level("WARNING", logger="dfscan"):
        html = _report(p, tmp_path)
    assert "thumbnails failed: ValueError" in html
    msgs = [r.getMessage() for r in caplog.records if "no thumbnails for" in r.getMessage()]
    assert len(msgs) == 1 and "\x1b" not in msgs[0] and "\\x1b]0;owned\\x07.mp4" in msgs[0]


def test_video_replaced_after_its_hash_check_gives_no_thumbnails(corpus, tmp_path, monkeypatch):
    """The video was hashed against its row, then opened again by name to be decoded: a file
    replaced in between had its frames shown as the scanned video's."""
    import engines.registry

    rows = [json.loads(x) for x in corpus.read_text().splitlines()]
    d1 = next(r for r in rows if r["path"].endswith("d1.mp4"))
    vid = tmp_path / "a.mp4"
    shutil.copy(d1["path"], vid)
    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps({**d1, "path": str(vid)}) + "\n")
    real_hash = engines.registry.file_hash

    def hash_then_replace(path, *a):
        digest = real_hash(path, *a)
        other = tmp_path / "other.mp4"
        shutil.copy(DATA / "d18.mp4", other)
        os.replace(other, vid)
        return digest

    monkeypatch.setattr(engines.registry, "file_hash", hash_then_replace)
    html = _report(res, tmp_path, top_k=1)
    assert "<img " not in html and "changed while the report read it" in html

def test_rows_torn_line_and_rescanned_input(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"path": "a.mp4", "verdict": "error"}\n{"path": "b.mp4", "verdict": "real"}\n'
                 '{"path": "a.mp4", "verdict": "fake", "score": 0.9}\n{"path": "c.mp4", "verd')
    rows, bad = load_rows(p)
    assert bad == 1 and [(r["path"], r["verdict"]) for r in rows] == [("a.mp4", "fake"), ("b.mp4", "real")]
    html = _report(p, tmp_path)
    assert len(sections(html)) == 2 and "1 unreadable line(s)" in html


def test_rows_of_the_wrong_types_are_skipped_not_a_traceback(tmp_path):
    """A hand-edited or foreign row (a string score, a string face count, a string time in
    frames_detail) crashed the sort, the header sums or the timeline with a traceback."""
    ok = {"path": "ok.mp4", "verdict": "real", "score": 0.1, "frames": 2, "faces": 1,
          "frames_detail": [{"index": 0, "time_s": 0.0, "score": 0.1,
                             "faces": [{"box": [1, 2, 30, 40], "prob": 0.9, "score": 0.1}]}]}
    x = '"><script>alert(1)</script>'
    odd = [{**ok, "path": "s.mp4", "score": x}, {**ok, "path": "f.mp4", "faces": x},
           {**ok, "path": "e.mp4", "error": x}, {**ok, "path": "n.mp4", "score": True},
           {**ok, "path": "t.mp4", "frames_detail": [{**ok["frames_detail"][0], "time_s": x}]},
           {**ok, "path": "b.mp4", "frames_detail": [{**ok["frames_detail"][0], "faces": [{"box": x}]}]}]
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in [ok, *odd]))
    rows, bad = load_rows(p)
    assert bad == len(odd) and [r["path"] for r in rows] == ["ok.mp4"]
    html = _report(p, tmp_path)
    assert len(sections(html)) == 1 and f"{len(odd)} unreadable line(s)" in html and "<script>alert" not in html



def test_rows_with_an_odd_error_kind_or_track_are_skipped_not_a_traceback(tmp_path):
    """A non-string error kind or a non-integer face track id crashed the header's counts and
    the timeline (AttributeError, TypeError, ValueError); a face-tracked frame without
    ``time_s`` (None is allowed) crashed the timeline with a KeyError."""
    face = {"box": [1, 2, 30, 40], "prob": 0.9, "score": 0.1}
    ok = {"path": "ok.mp4", "verdict": "real", "score": 0.1, "frames": 2, "faces": 2,
          "frames_detail": [{"index": 0, "score": 0.1, "faces": [{**face, "track": 1},
                                                                  {**face, "box": [50, 2, 80, 40], "track": 2}]}]}
    err = {"path": "e.mp4", "verdict": "error", "error": {"kind": None, "message": "m"}}
    odd = [{**err, "path": "k.mp4", "error": {"kind": 5, "message": "m"}},
           {**err, "path": "l.mp4", "error": {"kind": ["a"], "message": "m"}}]
    for i, track in enumerate(["x", None, 1.5, True]):
        odd.append({**ok, "path": f"t{i}.mp4", "frames_detail": [
            {**ok["frames_detail"][0], "faces": [{**face, "track": track}]}]})
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in [ok, err, *odd]))
    rows, bad = load_rows(p)
    assert bad == len(odd) and [r["path"] for r in rows] == ["ok.mp4", "e.mp4"]
    html = _report(p, tmp_path)
    assert len(sections(html)) == 2 and html.count('class="track"') == 2
    assert "errors by kind</dt><dd>unknown: 1" in html


@pytest.mark.parametrize("how", ["load_rows", "write_report"])
def test_results_replaced_while_indexed_are_not_mixed(tmp_path, monkeypatch, how):
    """The rows were indexed through one open of the file and read back (by byte offset)
    through another: a file replaced in between (scan --retry-errors rewrites it without
    the error rows) gave a JSONDecodeError traceback, or one video's section the
    per-frame details of another."""
    import scanner.report.rows as rows_mod

    def row(name, score):
        return {"path": f"/v/{name}.mp4", "verdict": "real", "score": score, "frames": 1, "faces": 1,
                "frames_detail": [{"index": 0, "time_s": 0.5, "score": score,
                                   "faces": [{"box": [1, 2, 30, 40], "prob": 0.9, "score": score}]}]}
    p = tmp_path / "r.jsonl"
    err = {"path": "/v/e.mp4", "verdict": "error", "error": {"kind": "not_video", "message": "m"}}
    p.write_text("".join(json.dumps(r) + "\n" for r in [err, row("a", 0.111), row("b", 0.222)]))
    rewritten = tmp_path / "new.jsonl"
    rewritten.write_text("".join(json.dumps(r) + "\n" for r in [row("b", 0.222), row("a", 0.111)]))
    real_check = rows_mod.well_formed

    def replaced_meanwhile(r):
        if rewritten.exists():
            os.replace(rewritten, p)
        return real_check(r)

    monkeypatch.setattr(rows_mod, "well_formed", replaced_meanwhile)
    if how == "load_rows":
        got = load_rows(p)[0]
        assert [(r["path"], (r.get("frames_detail") or [{}])[0].get("score")) for r in got] == [
            ("/v/e.mp4", None), ("/v/a.mp4", 0.111), ("/v/b.mp4", 0.222)]
        return
    html = _report(p, tmp_path, thumbnails=False)
    for name, score in (("a", "0.111"), ("b", "0.222")):
        sec = next(s for s in sections(html) if f"/v/{name}.mp4" in s)
        assert f"P(fake)={score}" in sec

def _two_faces(n=6, with_ids=False):
    frames = []
    for i in range(n):
        faces = [{"box": [10 + i, 10, 60 + i, 70], "prob": 0.99, "score": 0.9},
                 {"box": [200 - i, 20, 250 - i, 80], "prob": 0.99, "score": 0.1}]
        if with_ids:
            faces[0]["track"], faces[1]["track"] = 7, 9
        frames.append({"index": i * 5, "time_s": i * 0.2, "score": 0.9, "faces": faces})
    return frames


@pytest.mark.parametrize("with_ids", [False, True])
def test_timeline_has_one_line_per_face_track(with_ids):
    frames = _two_faces(with_ids=with_ids)
    tracks = face_tracks(frames)
    assert len(tracks) == 2 and sorted(len(v) for v in tracks.values()) == [6, 6]
    assert sorted(round(v[0][1], 1) for v in tracks.values()) == [0.1, 0.9]  # each keeps its face
    svg = timeline_svg({"frames_detail": frames}, 0.5)
    assert svg.count('class="track"') == 2 and 'class="threshold"' in svg


def test_faces_without_a_track_id_and_boxes_without_a_confidence_are_named_so():
    # A face without a track id, among faces with one, was drawn as "face track -1"; an
    # ADM artifact box without a confidence showed "confidence nan".
    from scanner.report.render import _thumb
    from scanner.report.thumbnails import Thumb

    frames = _two_faces(with_ids=True)
    for fr in frames:
        del fr["faces"][1]["track"]
    svg = timeline_svg({"frames_detail": frames}, 0.5)
    assert "face track -1" not in svg and "faces without a track id" in svg and "face track 7" in svg
    t = Thumb(0, 0.0, 0.9, "data:,", 10, 10, (1.0, 1.0, 5.0, 5.0), [(1.0, 1.0, 2.0, 2.0, float("nan"))])
    assert "confidence not recorded" in _thumb(t) and "nan" not in _thumb(t)


class _Spot(Detector):
    """logit = mean of a ReLU'd 1x1 conv map: evidence is wherever the input is bright."""

    cam_layer = "act"

    def __init__(self):
        super().__init__(InputSpec(size=32))
        self.conv, self.act = nn.Conv2d(3, 4, 1), nn.ReLU()
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(-0.5)

    def network(self, x):
        return self.act(self.conv(x)).mean((1, 2, 3))


def test_gradcam_heat_is_where_the_evidence_is():
    x = torch.zeros(1, 3, 32, 32)
    x[..., 4:12, 20:28] = 255.0  # one bright patch, top right
    res = gradcam(_Spot().eval(), x)
    heat = res.heatmap[0]
    assert heat.shape == (32, 32) and float(heat.max()) == pytest.approx(1.0)
    assert float(heat[4:12, 20:28].mean()) > 0.9 and float(heat[20:, :12].max()) < 0.05


def test_gradcam_needs_a_conv_map():
    d = create_detector("test_tiny")
    assert d.describe()["cam_layer"] == "body.4"
    res = gradcam(d, d.spec.example_input(2))
    assert res.heatmap.shape == (2, 64, 64) and res.p_fake.shape == (2,)
    assert all(p.grad is None for p in d.parameters())  # the model is left untouched
    d.cam_layer = None
    with pytest.raises(ExplainError, match="no convolutional feature map"):
        gradcam(d, d.spec.example_input(1))


def test_report_gradcam_on_meso4_df(tmp_path):
    res = scan_corpus(tmp_path, detector="meso4_df", frames=4, clips=("d1.mp4",))
    html = _report(res, tmp_path, explain="gradcam", top_k=2)
    assert "Grad-CAM on meso4_df layer bn4" in html
    assert html.count('<figure class="cam">') == 2
    assert "differs from the scan" not in html  # eager Grad-CAM pass = the scan's score
    f2f = create_detector("meso4_f2f").weights_source
    html = _report(res, tmp_path, explain="gradcam", weights=f2f)
    assert '<figure class="cam">' not in html and "are not the scan&#x27;s" in html


def test_scan_out_html_writes_jsonl_and_resume_keeps_every_row(tmp_path):
    out = tmp_path / "x.html"
    common = ["--detector", "test_tiny", "--frames", "4", "--no-progress", "--workers", "1"]
    assert main(["scan", str(DATA / "d1.mp4"), "--out", str(out), *common]) == EXIT_OK
    assert len(load_rows(tmp_path / "x.jsonl")[0]) == 1 and len(sections(out.read_text())) == 1
    assert main(["scan", str(DATA / "d1.mp4"), str(DATA / "d2.mp4"), "--out", str(out), "--resume",
                 *common]) == EXIT_OK
    assert len(load_rows(tmp_path / "x.jsonl")[0]) == 2
    assert len(sections(out.read_text())) == 2  # regenerated from the whole JSONL



def test_resumed_scan_report_checks_the_earlier_videos_hash(tmp_path):
    """scan --resume --out x.html rendered the earlier runs' rows without the SHA-256 check
    ("the scan has just hashed these files"): a video changed in place since (same size)
    showed its new frames as the scan's evidence."""
    vid, out = tmp_path / "a.mp4", tmp_path / "x.html"
    shutil.copy(DATA / "d1.mp4", vid)
    common = ["--detector", "test_tiny", "--frames", "4", "--no-progress", "--workers", "1"]
    assert main(["scan", str(vid), "--out", str(out), *common]) == EXIT_OK
    data, st = bytearray(vid.read_bytes()), vid.stat()
    data[len(data) // 2] ^= 0xFF
    vid.write_bytes(bytes(data))
    # Its modification time set back (rsync --inplace --times): --resume, which rescans a file
    # whose size or time moved since its row, keeps the row; only the hash tells.
    os.utime(vid, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(["scan", str(vid), str(DATA / "d2.mp4"), "--out", str(out), "--resume", *common]) == EXIT_OK
    sec = {("a.mp4" in s): s for s in sections(out.read_text())}
    assert "<img " not in sec[True] and "SHA-256 differs" in sec[True]
    assert "<img " in sec[False]  # the video this run scanned


def test_interrupted_scan_report_says_its_thumbnails_are_missing(tmp_path, monkeypatch):
    """scan --out x.html writes a quick report without thumbnails before the full one; when
    the full one was interrupted, the quick one stayed without saying why it had none."""
    import scanner.report.scan_report as report_mod

    real_write, calls = report_mod.write_report, []

    def interrupted_second(*a, **kw):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(*a, **kw)

    monkeypatch.setattr(report_mod, "write_report", interrupted_second)
    out = tmp_path / "x.html"
    common = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]
    assert main(["scan", str(DATA / "d1.mp4"), "--out", str(out), *common]) == 130
    html = out.read_text()
    assert "<img " not in html and "no thumbnails: the report with them was not finished (interrupted" in html
    monkeypatch.setattr(report_mod, "write_report", real_write)
    assert main(["scan", str(DATA / "d1.mp4"), "--out", str(out), *common]) == EXIT_OK
    assert "<img " in out.read_text() and "not finished" not in out.read_text()

def test_report_command(corpus, tmp_path):
    out = tmp_path / "cli.html"
    assert main(["report", str(corpus), "--out", str(out), "--no-thumbnails"]) == EXIT_OK
    html = out.read_text()
    assert len(sections(html)) == len(CLIPS) + 1 and "<img " not in html
    assert main(["report", str(tmp_path / "missing.jsonl")]) == EXIT_USAGE
    assert main(["report", str(corpus), "--out", str(corpus)]) == EXIT_USAGE


def test_report_of_a_csv_or_foreign_file_is_refused(tmp_path, capsys):
    """`dfscan report results.csv` wrote an empty report, said '0 videos' and exited 0."""
    csv_out = tmp_path / "r.csv"
    common = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]
    assert main(["scan", str(DATA / "d1.mp4"), "--out", str(csv_out), *common]) == EXIT_OK
    capsys.readouterr()
    html = tmp_path / "r.html"
    assert main(["report", str(csv_out), "--out", str(html)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "holds no dfscan result row (2 unreadable line(s))" in err and "Traceback" not in err
    assert not html.exists()
    empty = tmp_path / "empty.jsonl"  # a scan that had no row yet still renders (0 videos)
    empty.write_text("")
    assert main(["report", str(empty), "--out", str(html), "--no-thumbnails"]) == EXIT_OK


@pytest.mark.parametrize("where", ["folder", "missing_parent", "full"])
def test_report_out_that_cannot_be_written_is_one_line(tmp_path, capsys, where):
    """--out a folder, under a path that cannot be created, or on a full disk: tracebacks."""
    from scanner.cli import EXIT_OUTPUT

    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps({"path": "/x/a.mp4", "verdict": "real", "score": 0.1}) + "\n")
    out = {"folder": tmp_path, "missing_parent": tmp_path / "r.jsonl" / "sub" / "x.html",
           "full": "/dev/full"}[where]
    if where == "full" and not os.path.exists(out):
        pytest.skip("no /dev/full here")
    assert main(["report", str(res), "--out", str(out), "--no-thumbnails"]) == EXIT_OUTPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"dfscan report: cannot write {out}: ")



@pytest.mark.parametrize("stem", ["a" * 250, "é" * 125])
def test_report_out_with_a_long_name_is_written(tmp_path, stem):
    """An --out name near the 255-byte limit failed with 'File name too long': the
    temporary file beside it (.NAME.PID.tmp) is longer than the name itself."""
    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps({"path": "/x/a.mp4", "verdict": "real", "score": 0.1}) + "\n")
    out = tmp_path / f"{stem}.html"
    assert main(["report", str(res), "--out", str(out), "--no-thumbnails"]) == EXIT_OK
    assert len(sections(out.read_text())) == 1 and sorted(os.listdir(tmp_path)) == sorted([out.name, "r.jsonl"])

def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    # The report streams into .NAME.PID.tmp and renames it; SIGTERM killed the process
    # mid-write and left that file behind (the finally that removes it never ran).
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    row = {"path": "", "verdict": "real", "score": 0.1, "frames": 32, "frames_with_faces": 32,
           "faces": 32, "error": None, "detector": "test_tiny", "weights_hash": "h",
           "sampling": {"frames": 32}}
    src = tmp_path / "big.jsonl"
    with open(src, "w") as f:
        for i in range(60000):
            f.write(json.dumps({**row, "path": f"/v/{i:06d}.mp4", "score": (i % 997) / 997}) + "\n")
    out = tmp_path / "r.html"
    p = subprocess.Popen([sys.executable, "-m", "scanner.cli", "report", str(src), "--out", str(out),
                          "--top-k", "0"], cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".r.html.*.tmp")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, "the report finished before it could be interrupted"
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM
    assert not list(tmp_path.glob(".r.html.*")) and not out.exists()
