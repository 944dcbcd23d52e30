"""dfscan eval drill: numbers that came out wrong without an error."""
from __future__ import annotations

import json

import numpy as np
import torch

from scanner.research.augment import parse_perturb
from scanner.research.commands import main
from scanner.research.perturb import Perturbed


def _eval(tmp_path, labels: str, rows: list[dict]) -> dict:
    (tmp_path / "m.csv").write_text(labels)
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(tmp_path / "m.csv"), "--from-jsonl", str(tmp_path / "s.jsonl"), "--quiet",
                 "--out", str(tmp_path / "e.json")]) == 0
    return json.loads((tmp_path / "e.json").read_text())


def test_a_file_name_shared_with_a_scanned_video_is_no_row(tmp_path):
    """b/clip.mp4 was never scanned, but a/clip.mp4 was: the name alone made b/clip.mp4 count
    as a video with a row (no face / error), not_in_jsonl 1 instead of 2."""
    for name, data in (("a/clip.mp4", b"aaa"), ("b/clip.mp4", b"bbbb"), ("c.mp4", b"c"), ("d.mp4", b"d"),
                       ("e/moved.mp4", b"eeeee")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    rows = [{"path": str(tmp_path / "a/clip.mp4"), "score": 0.2, "verdict": "real"},
            {"path": str(tmp_path / "c.mp4"), "score": 0.7, "verdict": "fake"},
            # scanned in another folder, no face: a row of its own (same size), not a missing one
            {"path": "/elsewhere/moved.mp4", "score": None, "verdict": "no_face", "size_bytes": 5}]
    res = _eval(tmp_path, "path,label\na/clip.mp4,real\nb/clip.mp4,fake\nc.mp4,fake\nd.mp4,real\n"
                          "e/moved.mp4,fake\n", rows)
    assert (res["excluded"], res["not_in_jsonl"]) == (3, 2)
    assert [r["score"] for r in res["scores"]] == [0.2, None, 0.7, None, None]


def test_a_same_named_no_face_row_of_another_file_is_no_row(tmp_path):
    """A no-face row of another file (other size) that shares the name is not the labelled file's row."""
    (tmp_path / "x.mp4").write_bytes(b"x")
    (tmp_path / "y.mp4").write_bytes(b"yy")
    rows = [{"path": str(tmp_path / "x.mp4"), "score": 0.9},
            {"path": "/elsewhere/y.mp4", "score": None, "verdict": "no_face", "size_bytes": 7}]
    res = _eval(tmp_path, "path,label\nx.mp4,fake\ny.mp4,real\n", rows)
    assert (res["excluded"], res["not_in_jsonl"]) == (1, 1)


def test_perturbed_noise_does_not_depend_on_crop_order_or_batching():
    """One generator shared by the scan's worker threads drew each crop's noise in the order
    the threads reached it: the same `dfscan eval --perturb noise:30` gave AUC 0.31 or 0.38."""
    perturbs = parse_perturb("noise:30,jpeg:60")
    gen = torch.Generator().manual_seed(0)
    crops = torch.rand(4, 3, 32, 32, generator=gen) * 255
    whole = Perturbed(lambda x: x, perturbs)(crops)
    other = Perturbed(lambda x: x, perturbs)
    reordered = torch.cat([other(crops[[3, 1]]), other(crops[[2]]), other(crops[[0]])])
    assert torch.equal(reordered, whole[[3, 1, 2, 0]])
    assert not torch.equal(whole, crops.round())  # it is perturbed
    assert not torch.equal(Perturbed(lambda x: x, perturbs, seed=1)(crops), whole)  # the seed counts
    u8 = crops.round().clamp(0, 255)
    assert np.abs((whole - u8).numpy()).mean() > 5


def test_resume_with_another_aggregation_is_refused_and_eval_refuses_such_a_file(tmp_path, capsys):
    """Rows did not record how a video's score was made of its frames: a scan resumed with
    --video-agg max after a mean scan appended maxima to means without a word, and
    `dfscan eval --from-jsonl` ranked them together in one AUC."""
    import pytest

    from conftest import DATA
    from engines.errors import DfscanError
    from scanner.cli import EXIT_OK, EXIT_USAGE
    from scanner.cli import main as dfscan
    from scanner.research.evaluate import scores_from_jsonl
    from scanner.research.labelled import Item

    fast = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]
    clips = [str(DATA / n) for n in ("d1.mp4", "d2.mp4")]
    out = tmp_path / "o.jsonl"
    assert dfscan(["scan", clips[0], "--out", str(out), *fast]) == EXIT_OK
    row = json.loads(out.read_text())
    assert row["aggregation"] == {"aggregate": "frames", "frame_agg": "max", "video_agg": "mean"}
    before = out.read_bytes()
    assert dfscan(["scan", *clips, "--out", str(out), "--resume", *fast, "--video-agg", "max"]) == EXIT_USAGE
    assert "aggregation" in capsys.readouterr().err and out.read_bytes() == before
    assert dfscan(["scan", *clips, "--out", str(out), "--resume", *fast]) == EXIT_OK  # same settings: fine
    # a file mixing them anyway (concatenated, or written before rows recorded it) is refused by eval
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows[1]["aggregation"] = {"aggregate": "tracks"}
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DfscanError, match="aggregation"):
        scores_from_jsonl([Item(DATA / "d1.mp4", 1, "a")], out)


def test_eval_json_records_how_the_scores_were_made(tmp_path):
    """A direct `dfscan eval` JSON said `scored_by: detector:...` only: frames/fps and the
    aggregation were missing, so two evals of other sampling read as the same scan. Both ways
    record the rows' own fields (a --from-jsonl run: what the rows say)."""
    from conftest import DATA
    from scanner.cli import main as dfscan

    fast = ["--detector", "test_tiny", "--frames", "2", "--engine", "eager", "--workers", "1"]
    labels = tmp_path / "m.csv"
    labels.write_text(f"path,label\n{DATA / 'd1.mp4'},real\n{DATA / 'd2.mp4'},fake\n")
    assert main(["eval", str(labels), *fast, "--video-agg", "max", "--quiet", "--out", str(tmp_path / "e.json")]) == 0
    scan = json.loads((tmp_path / "e.json").read_text())["scan"]
    assert scan["sampling"] == {"frames": 2} and scan["aggregation"]["video_agg"] == "max"
    assert (scan["detector"], scan["engine"], scan["precision"]) == ("test_tiny", "eager", "fp32")
    assert scan["weights_hash"] and scan["perturb"] is None
    rows = tmp_path / "s.jsonl"
    assert dfscan(["scan", str(DATA / "d1.mp4"), str(DATA / "d2.mp4"), "--out", str(rows), "--no-progress",
                   *fast, "--video-agg", "max"]) == 0
    assert main(["eval", str(labels), "--from-jsonl", str(rows), "--quiet", "--out", str(tmp_path / "j.json")]) == 0
    assert json.loads((tmp_path / "j.json").read_text())["scan"] == scan


def test_a_subset_without_any_score_is_reported_not_dropped(tmp_path, capsys):
    """A subset whose videos all had no face (or failed) vanished from `subsets` without a word:
    the report read as if the set had no such subset."""
    for n in "abcde":
        (tmp_path / f"{n}.mp4").write_bytes(n.encode())
    rows = [{"path": str(tmp_path / "a.mp4"), "score": 0.9}, {"path": str(tmp_path / "b.mp4"), "score": 0.1},
            {"path": str(tmp_path / "c.mp4"), "score": None, "verdict": "no_face"},
            {"path": str(tmp_path / "d.mp4"), "score": None, "verdict": "error"},
            {"path": str(tmp_path / "e.mp4"), "score": 0.3}]
    res = _eval(tmp_path, "path,label,subset\na.mp4,fake,df\nb.mp4,real,df\nc.mp4,fake,nt\nd.mp4,real,nt\n"
                          "e.mp4,fake,df\n", rows)
    nt = res["subsets"]["nt"]
    assert (nt["n"], nt["excluded"], res["subsets"]["df"]["excluded"]) == (0, 2, 0)
    assert nt["acc"] is None and nt["auc"] is None and nt["hter"] is None and nt["eer"] is None
    assert "nt " in capsys.readouterr().out.replace("│", " ")


def test_a_file_changed_since_the_scan_does_not_take_its_old_score(tmp_path, capsys, caplog):
    """A row matched by path lent its score to whatever the file held now: a video re-encoded
    or replaced after the scan was scored by the old one's row. A row's size_bytes that the file
    no longer has makes it a changed file: excluded and counted, never scored by that row."""
    (tmp_path / "a.mp4").write_bytes(b"now longer")  # scanned at 3 bytes
    (tmp_path / "b.mp4").write_bytes(b"bb")
    (tmp_path / "c.mp4").write_bytes(b"c")
    rows = [{"path": str(tmp_path / "a.mp4"), "score": 0.9, "size_bytes": 3},
            {"path": str(tmp_path / "b.mp4"), "score": 0.1, "size_bytes": 2},
            {"path": str(tmp_path / "c.mp4"), "score": 0.8}]  # no size recorded: taken as it is
    res = _eval(tmp_path, "path,label\na.mp4,fake\nb.mp4,real\nc.mp4,fake\n", rows)
    assert [r["score"] for r in res["scores"]] == [None, 0.1, 0.8]
    assert (res["excluded"], res["changed_since_scan"], res["not_in_jsonl"]) == (1, 1, 0)
    assert "1 changed since the scan" in capsys.readouterr().out
    assert "changed since" in caplog.text and "a.mp4" in caplog.text


def test_eval_modules_stay_within_the_size_guideline():
    """scanner/research/evaluate.py had grown past the ~400-line guideline (JSONL reading and
    matching now live in scanner/research/jsonl_scores.py); functions stay under ~40 lines."""
    import ast

    from conftest import ROOT

    for name in ("evaluate.py", "jsonl_scores.py"):
        text = (ROOT / "scanner" / "research" / name).read_text()
        assert text.count("\n") <= 400, name
        long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
                if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 40]
        assert not long, (name, long)
