"""`dfscan eval` metrics against scikit-learn, and backbone separability."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from engines.errors import DfscanError
from scanner.research.evaluate import binary_metrics, eer, report, scores_from_jsonl
from scanner.research.labelled import Item, read_labelled
from scanner.research.separability import separability


def _brute_eer(y, s):
    """EER by trying every distinct score as threshold (independent of roc_curve)."""
    cands = []
    for t in np.unique(s):
        pred = s >= t
        fpr = np.mean(pred[y == 0])
        fnr = np.mean(~pred[y == 1])
        cands.append((round(abs(fnr - fpr), 12), (fpr + fnr) / 2, -t))
    gap, mean, neg_t = min(cands)  # smallest gap, then lowest mean, then highest threshold
    return mean, -neg_t


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1).round(3)  # ties on purpose
    m = binary_metrics(y, s)
    pred = (s >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert m["acc"] == accuracy_score(y, pred)
    assert m["auc"] == roc_auc_score(y, s)
    assert m["tpr"] == pytest.approx(tp / (tp + fn)) and m["tnr"] == pytest.approx(tn / (tn + fp))
    assert m["hter"] == pytest.approx((fp / (fp + tn) + fn / (fn + tp)) / 2)
    e, t = _brute_eer(y, s)
    assert m["eer"] == pytest.approx(e) and m["eer_threshold"] == pytest.approx(t)
    p2 = (s >= t).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, p2).ravel()
    assert m["hter_at_eer_threshold"] == pytest.approx((fp / (fp + tn) + fn / (fn + tp)) / 2)
    assert (m["n"], m["n_fake"]) == (300, int(y.sum()))


def test_eer_hand_case():
    # reals 0.1 0.2 0.6, fakes 0.4 0.7 0.9: at t=0.6 FPR=1/3, FNR=1/3
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9])
    assert eer(y, s) == (pytest.approx(1 / 3), 0.6)


def test_single_class_subset_has_no_auc(tmp_path):
    items = [Item(tmp_path / f"{i}.mp4", i % 2, str(i), "A" if i < 4 else "B") for i in range(6)]
    items[5].label = 0  # subset B: {4: real, 5: real}
    scores = {i: 0.2 + 0.1 * i for i in range(6)}
    r = report(items, scores)
    assert r["subsets"]["B"]["auc"] is None and r["subsets"]["A"]["auc"] == 0.75  # 3 of 4 pairs ordered
    assert r["overall"]["n"] == 6 and r["excluded"] == 0
    json.dumps(r)  # JSON-safe (no NaN)


def test_scores_from_jsonl_and_csv_manifest(tmp_path):
    for n in ("a", "b", "c"):
        (tmp_path / f"{n}.mp4").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("path,label,subset\na.mp4,fake,df\nb.mp4,real,df\nc.mp4,0,f2f\n")
    items = read_labelled(tmp_path / "m.csv")
    assert [i.label for i in items] == [1, 0, 0] and items[2].subset == "f2f"
    rows = [{"path": str(tmp_path / "a.mp4"), "score": 0.9, "verdict": "fake"},
            {"path": "/elsewhere/b.mp4", "score": 0.1, "verdict": "real"},
            {"path": str(tmp_path / "c.mp4"), "score": None, "verdict": "no_face"}]
    (tmp_path / "scan.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert scores_from_jsonl(items, tmp_path / "scan.jsonl") == {0: 0.9, 1: 0.1}
    assert report(items, {0: 0.9, 1: 0.1})["excluded"] == 1
    # A non-finite score is no score (excluded, as in a scan), never a low one.
    rows[0]["score"] = float("nan")
    (tmp_path / "scan.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert scores_from_jsonl(items, tmp_path / "scan.jsonl") == {1: 0.1}
    with pytest.raises(DfscanError, match="non-finite scores for 1 input"):
        report(items, {0: float("nan"), 1: 0.1})
    rows[0]["score"] = "high"
    (tmp_path / "scan.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DfscanError, match="not a number"):
        scores_from_jsonl(items, tmp_path / "scan.jsonl")


def test_jsonl_score_never_lent_to_a_same_named_other_video(tmp_path):
    """Name matching is for a set scanned from another folder: a different video that
    shares a scanned one's name (that one matched by path) got its score, unscanned."""
    (tmp_path / "v").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"scanned")
    (tmp_path / "other" / "a.mp4").write_bytes(b"never scanned, another video")
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "b.mp4").write_bytes(b"bee")
    (tmp_path / "m.csv").write_text("path,label\nv/a.mp4,fake\nother/a.mp4,real\nmoved/b.mp4,real\n")
    rows = [{"path": str(tmp_path / "v" / "a.mp4"), "score": 0.9, "size_bytes": 7},
            {"path": "/elsewhere/b.mp4", "score": 0.2, "size_bytes": 3}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_labelled(tmp_path / "m.csv")
    assert scores_from_jsonl(items, tmp_path / "s.jsonl") == {0: 0.9, 2: 0.2}
    rows[0]["path"] = "/elsewhere/a.mp4"  # now unclaimed, but other/a.mp4 is another size
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert scores_from_jsonl(items, tmp_path / "s.jsonl") == {2: 0.2}


def test_odd_jsonl_lines_are_errors_not_scores(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    items = read_labelled(_csv(tmp_path, "path,label\na.mp4,fake\n"))
    for line, msg in (("[1, 2]", "not a result row"), ('{"path": null, "score": 0.5}', "not a result row"),
                      (json.dumps({"path": str(tmp_path / "a.mp4"), "score": True}), "not a number")):
        (tmp_path / "s.jsonl").write_text(line + "\n")
        with pytest.raises(DfscanError, match=msg):
            scores_from_jsonl(items, tmp_path / "s.jsonl")


def test_jsonl_of_more_than_one_scan_is_refused(tmp_path):
    """Two scans concatenated: the later row of each input won silently, or scores of two
    detectors were ranked together in one AUC."""
    for n in ("a", "b"):
        (tmp_path / f"{n}.mp4").write_bytes(b"x")
    items = read_labelled(_csv(tmp_path, "path,label\na.mp4,fake\nb.mp4,real\n"))
    a, b = str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")
    det = {"detector": "meso4_df", "weights_hash": "1234", "sampling": {"frames": 32}}
    cases = (([{"path": a, "score": 0.9, **det}, {"path": a, "score": 0.1, **det}], "already has a row"),
             ([{"path": a, "score": 0.9, **det}, {"path": a, "verdict": "error"}], "already has a row"),
             ([{"path": a, "score": 0.9, **det}, {"path": b, "score": 0.1, **det, "detector": "test_tiny"}],
              "another detector"))
    for rows, msg in cases:
        (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(DfscanError, match=msg):
            scores_from_jsonl(items, tmp_path / "s.jsonl")
    rows = [{"path": a, "score": 0.9, **det}, {"path": b, "verdict": "error"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert scores_from_jsonl(items, tmp_path / "s.jsonl") == {0: 0.9}  # one scan: fine


def _csv(tmp_path, text: str, name: str = "m.csv", **kw):
    (tmp_path / name).write_bytes(text.encode("utf-8", **kw))
    return tmp_path / name


def test_manifest_bom_short_row_and_duplicates(tmp_path):
    for n in ("a", "b"):
        (tmp_path / f"{n}.mp4").write_bytes(b"x")
    bom = _csv(tmp_path, "\ufeffpath,label\r\na.mp4, Fake \r\nb.mp4,0\r\n")  # Excel's UTF-8 CSV
    assert [i.label for i in read_labelled(bom)] == [1, 0]
    with pytest.raises(DfscanError, match=r"m.csv:2: no label"):
        read_labelled(_csv(tmp_path, "path,label\na.mp4\nb.mp4,real\n"))
    with pytest.raises(DfscanError, match="listed twice"):
        read_labelled(_csv(tmp_path, "path,label\na.mp4,fake\nb.mp4,real\n./a.mp4,fake\n"))
    with pytest.raises(DfscanError, match="both real and fake"):
        read_labelled(_csv(tmp_path, "path,label\na.mp4,fake\nb.mp4,real\na.mp4,real\n"))
    lm = " ".join(["1"] * 10), " ".join(["2"] * 10)  # one image, two faces: two samples
    (tmp_path / "i.png").write_bytes(b"x")
    two = _csv(tmp_path, f"path,label,landmarks\ni.png,fake,{lm[0]}\ni.png,fake,{lm[1]}\n")
    assert len(read_labelled(two)) == 2


def test_eval_refuses_a_nan_acc_threshold(tmp_path, capsys):
    from scanner.research.commands import main

    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(SystemExit):
        main(["eval", str(_csv(tmp_path, "path,label\na.mp4,fake\n")), "--from-jsonl", "x.jsonl",
              "--acc-threshold", "nan"])
    assert "argument --acc-threshold: must be a finite number, not 'nan'" in capsys.readouterr().err


def test_eval_cli_from_jsonl(tmp_path, capsys):
    from scanner.research.commands import main

    rng = np.random.default_rng(0)
    lines, rows = ["path,label,subset"], []
    for i in range(20):
        (tmp_path / f"v{i}.mp4").write_bytes(b"x")
        lines.append(f"v{i}.mp4,{i % 2},{'s1' if i < 10 else 's2'}")
        rows.append(json.dumps({"path": str(tmp_path / f"v{i}.mp4"), "score": float(rng.random())}))
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "scan.jsonl").write_text("\n".join(rows) + "\n")
    assert main(["eval", str(tmp_path / "m.csv"), "--from-jsonl", str(tmp_path / "scan.jsonl"),
                 "--out", str(tmp_path / "ev.json")]) == 0
    res = json.loads((tmp_path / "ev.json").read_text())
    y = np.arange(20) % 2
    s = np.array([json.loads(r)["score"] for r in rows])
    assert res["overall"]["auc"] == roc_auc_score(y, s)
    assert set(res["subsets"]) == {"s1", "s2"}
    assert (tmp_path / "ev.png").stat().st_size > 1000
    lo, hi = res["overall"]["auc_ci95"]  # the printed table shows the interval beside the AUC
    assert f"[{lo:.3f}, {hi:.3f}]" in capsys.readouterr().out


def test_separability_hand_case():
    # 2-D, two tight blobs far apart along x; one fake sits in the real blob.
    real = [(0, 0), (0, 1), (1, 0), (1, 1)]
    fake = [(10, 0), (10, 1), (11, 0), (0.5, 0.5)]
    X = np.array(real + fake, float)
    y = np.array([0] * 4 + [1] * 4)
    r = separability(X, y)
    assert r["accuracy"] == pytest.approx(7 / 8)
    assert r["tpr"] == pytest.approx(3 / 4) and r["tnr"] == 1.0
    # flipping the labels is the same clustering read the other way round
    r2 = separability(X, 1 - y)
    assert r2["accuracy"] == pytest.approx(7 / 8) and r2["swapped"] != r["swapped"]
    assert r2["tnr"] == pytest.approx(3 / 4) and r2["tpr"] == 1.0


def test_separability_of_unrelated_features_is_low():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 32))
    y = rng.integers(0, 2, 400)
    r = separability(X, y)
    assert 0.5 <= r["accuracy"] < 0.6


def test_separability_plot(tmp_path):
    from scanner.research.separability import plot

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (30, 8)), rng.normal(3, 1, (30, 8))])
    y = np.array([0] * 30 + [1] * 30)
    r = separability(X, y)
    assert r["accuracy"] > 0.9
    plot(r, y, tmp_path / "s.png", "test")
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_validation_bench_scores_other_weights_of_an_architecture(tmp_path):
    """bench/validation.py eval NAME=WEIGHTS: the registered architecture with other weights,
    reported beside the shipped ones (here Meso4 with its Face2Face weights vs its Deepfake ones)."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "group", "subset"])
        w.writeheader()
        w.writerow({"path": str(root / "tests/data/d1.mp4"), "label": "real", "group": "d1", "subset": "real"})
        w.writerow({"path": str(root / "tests/data/d2.mp4"), "label": "fake", "group": "d2", "subset": "g"})
    other = f"meso4_df={root / 'engines/weights/meso4_f2f.safetensors'}"
    out = tmp_path / "res.json"
    subprocess.run([sys.executable, str(root / "bench/validation.py"), "eval", str(labels), "--frames", "4",
                    "--detectors", other, "meso4_df", "--json", str(out)], check=True, cwd=tmp_path,
                   capture_output=True)
    res = json.loads(out.read_text())["detectors"]
    assert set(res) == {other, "meso4_df"}
    a = [v["frames"] for v in res[other]["videos"]]
    b = [v["frames"] for v in res["meso4_df"]["videos"]]
    assert all(x is not None for x in a + b) and not np.allclose(a, b, atol=1e-3)


def test_jsonl_is_read_as_utf8_whatever_the_locale(tmp_path):
    """The JSONL (UTF-8, text raw) was opened in the locale's encoding: under an ASCII locale
    any non-ASCII byte (here an error message) was a UnicodeDecodeError traceback, under
    Latin-1 a non-ASCII name matched nothing."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    jl = tmp_path / "r.jsonl"
    rows = [{"path": str(tmp_path / "a.mp4"), "verdict": "real", "score": 0.25},
            {"path": str(tmp_path / "b.mp4"), "verdict": "error", "score": None,
             "error": {"kind": "not_video", "message": "a directory, not a video file: /x/café"}}]
    jl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code = ("import sys; from pathlib import Path; from scanner.research.jsonl_scores import _jsonl_scores; "
            "print(sorted(_jsonl_scores(Path(sys.argv[1]), 'score')))")
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0"}  # ASCII locale
    r = subprocess.run([sys.executable, "-c", code, str(jl)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str([str((tmp_path / "a.mp4").resolve())])


@pytest.mark.parametrize("flags", [["--perturb", "jpeg:40"], ["--detector", "meso4_f2f"], ["--frames", "8"],
                                   ["--config", "configs/x.yaml"]])
def test_eval_from_jsonl_refuses_scan_options_it_would_ignore(tmp_path, capsys, flags):
    """--perturb (or --detector, --frames ...) with --from-jsonl was ignored: the report of
    the clean scan was written as if it were the perturbed one."""
    from scanner.cli import main

    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "s.jsonl").write_text(json.dumps({"path": str(tmp_path / "a.mp4"), "score": 0.9}) + "\n")
    m = _csv(tmp_path, "path,label\na.mp4,fake\n")
    assert main(["eval", str(m), "--from-jsonl", str(tmp_path / "s.jsonl"), "--quiet",
                 "--out", str(tmp_path / "e.json"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dfscan: error: eval: --from-jsonl") and flags[0] in err and "\n" not in err
    assert not (tmp_path / "e.json").exists()


def test_eval_says_which_labelled_inputs_have_no_row_in_the_jsonl(tmp_path, capsys, caplog):
    """A labelled video missing from the JSONL (another set's scan, a scan cut short) was
    counted as 'excluded: no score' like a no-face video, unnamed and indistinguishable."""
    from scanner.research.commands import main

    for n in ("a", "b", "c", "d"):
        (tmp_path / f"{n}.mp4").write_bytes(n.encode())
    rows = [{"path": str(tmp_path / "a.mp4"), "score": 0.9}, {"path": str(tmp_path / "b.mp4"), "score": 0.1},
            {"path": str(tmp_path / "c.mp4"), "score": None, "verdict": "no_face"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = _csv(tmp_path, "path,label\na.mp4,fake\nb.mp4,real\nc.mp4,fake\nd.mp4,real\n")
    assert main(["eval", str(m), "--from-jsonl", str(tmp_path / "s.jsonl"), "--quiet",
                 "--out", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert (res["excluded"], res["not_in_jsonl"]) == (2, 1)
    assert "1 of 4 labelled inputs have no row" in caplog.text and "d.mp4" in caplog.text
    assert "1 of them not in the JSONL" in capsys.readouterr().out


def test_jsonl_rows_are_not_held_whole_in_memory(tmp_path):
    """Every row was kept whole (per-frame details) while matching: ~10x the JSONL in memory,
    gigabytes for a large scan's output."""
    import tracemalloc

    (tmp_path / "a.mp4").write_bytes(b"x")
    frames = [{"index": i, "faces": [{"box": [1.0, 2.0, 3.0, 4.0], "landmarks": [[1.0, 2.0]] * 5}]}
              for i in range(32)]
    with open(tmp_path / "s.jsonl", "w") as f:
        for i in range(1000):
            f.write(json.dumps({"path": str(tmp_path / f"v{i}.mp4"), "score": 0.5, "details": frames}) + "\n")
    size = (tmp_path / "s.jsonl").stat().st_size
    tracemalloc.start()
    try:
        scores_from_jsonl([Item(tmp_path / "a.mp4", 1, "a")], tmp_path / "s.jsonl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size / 2, (peak, size)


@pytest.mark.parametrize("spec", [",", " , ", ",,"])
def test_perturb_spec_without_items_is_refused(spec):
    """--perturb ',' parsed to no perturbation: a clean scan reported as 'perturb:,'."""
    from scanner.research.augment import parse_perturb

    with pytest.raises(DfscanError, match="no perturbation in"):
        parse_perturb(spec)


@pytest.mark.parametrize("spec", ["jpeg:40.5", "h264:23.9"])
def test_perturb_quality_must_be_whole(spec):
    """jpeg:40.5 ran as JPEG quality 40 (int()) while the report named 40.5."""
    from scanner.research.augment import parse_perturb

    with pytest.raises(DfscanError, match="takes a whole number"):
        parse_perturb(spec)
    assert parse_perturb(spec.split(".")[0] + ".0")[0].value == int(spec.split(":")[1].split(".")[0])


def test_manifest_with_non_utf8_file_names_is_read(tmp_path):
    """A manifest naming a file by its non-UTF-8 bytes (a Latin-1 name) was a UnicodeDecodeError
    traceback; it names that file, as the file system spells it."""
    import os

    name = os.fsdecode(b"caf\xe9.mp4")  # 'caf\udce9.mp4': the bytes as Python keeps them
    (tmp_path / name).write_bytes(b"x")
    (tmp_path / "m.csv").write_bytes(b"path,label\ncaf\xe9.mp4,fake\n")
    items = read_labelled(tmp_path / "m.csv")
    assert [(it.path, it.label) for it in items] == [(tmp_path / name, 1)]


def test_an_interval_from_a_handful_of_videos_says_it_is_too_narrow(capsys):
    # 1 real and 1 fake (or any small, perfectly separated set) gave AUC 1.0 [1.0, 1.0],
    # a certainty that two videos cannot give, with nothing to say so.
    from scanner.research.evaluate import _print, binary_metrics

    tiny = binary_metrics([0, 1], [0.1, 0.9])
    assert tiny["auc_ci95"] == [1.0, 1.0] and "understates" in tiny["auc_ci95_note"]
    rng = np.random.default_rng(0)
    big = binary_metrics([0] * 12 + [1] * 12, rng.random(24))
    assert "auc_ci95_note" not in big and big["auc_ci95"][0] < big["auc_ci95"][1]
    _print({"excluded": 0, "overall": big, "subsets": {"tiny": tiny}})
    out = capsys.readouterr().out
    assert "[1.000, 1.000]*" in out and "too narrow" in out


def test_a_missing_labelled_file_names_the_one_it_likely_meant(tmp_path):
    # "file not found: .../c.mp4 " hid the trailing space, and a name typed in the other
    # Unicode form (é as one code point vs e + U+0301) gave no hint that the file exists.
    import unicodedata

    from scanner.research.labelled import DatasetError, read_manifest

    (tmp_path / "c.mp4").write_bytes(b"0")
    composed = unicodedata.normalize("NFC", "caf\u00e9.mp4")
    (tmp_path / composed).write_bytes(b"0")
    cases = {"c.mp4 ": "the name has spaces around it; 'c.mp4' exists",
             unicodedata.normalize("NFD", composed): "Unicode NFC form exists"}
    for name, hint in cases.items():
        csv = tmp_path / "labels.csv"
        csv.write_text(f"path,label\n{name},real\n", encoding="utf-8")
        with pytest.raises(DatasetError) as e:
            read_manifest(csv)
        assert f"file not found: {str(tmp_path / name)!r}" in str(e.value) and hint in str(e.value)


def test_validation_bench_reads_a_plain_labels_csv_and_names_a_bad_one(tmp_path):
    """bench/validation.py eval on a `path,label` CSV (what `dfscan eval` takes) ended in a
    KeyError 'generator' traceback, and its --help named the shipped CSV's columns wrongly;
    such a CSV is read (fakes as one subset) and one without a label column is one line."""
    import subprocess
    import sys

    from conftest import DATA, ROOT

    run = lambda labels, out: subprocess.run(  # noqa: E731
        [sys.executable, str(ROOT / "bench/validation.py"), "eval", str(labels), "--frames", "2",
         "--detectors", "test_tiny", "--json", str(out)], cwd=tmp_path, capture_output=True, text=True)
    plain = tmp_path / "plain.csv"
    plain.write_text(f"path,label\n{DATA / 'd1.mp4'},real\n{DATA / 'd2.mp4'},fake\n")
    r = run(plain, tmp_path / "res.json")
    assert r.returncode == 0, r.stderr[-2000:]
    vids = json.loads((tmp_path / "res.json").read_text())["detectors"]["test_tiny"]["videos"]
    assert sorted(v["subset"] for v in vids) == ["fake", "real"]
    # The refusals run in-process (a SystemExit message is Python's one stderr line and exit 1).
    bench = _validation_bench()
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,kind\n{DATA / 'd1.mp4'},real\n")
    with pytest.raises(SystemExit) as e:
        bench.main(["eval", str(bad), "--frames", "2", "--detectors", "test_tiny", "--json", str(tmp_path / "bad.json")])
    assert isinstance(e.value.code, str) and "needs a header with at least 'path' and 'label'" in e.value.code
    assert len(e.value.code.strip().splitlines()) == 1
    # Read as dfscan eval reads it: a listed file that is missing is named, not scanned as an error row.
    missing = tmp_path / "missing.csv"
    missing.write_text("path,label\nnot_here.mp4,fake\n")
    with pytest.raises(SystemExit) as e:
        bench.main(["eval", str(missing), "--frames", "2", "--detectors", "test_tiny",
                    "--json", str(tmp_path / "missing.json")])
    assert isinstance(e.value.code, str) and "file not found: " in e.value.code and "not_here.mp4" in e.value.code
    assert len(e.value.code.strip().splitlines()) == 1 and not (tmp_path / "missing.json").exists()


def _validation_bench():
    """bench/validation.py loaded as a module (it is a script, not a package)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("validation_bench", root / "bench/validation.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_validation_bench_refuses_a_file_listed_twice(tmp_path):
    """bench/validation.py reads labels with dfscan eval's reader but skipped its duplicate
    check: a file listed twice was scored and counted twice in every AUC."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bench = _validation_bench()
    labels = tmp_path / "labels.csv"
    clip = root / "tests/data/d1.mp4"
    labels.write_text(f"path,label\n{clip},real\n{root / 'tests/data/d2.mp4'},fake\n{clip},real\n")
    with pytest.raises(SystemExit, match="listed twice"):
        bench._read_labels(labels)


def test_images_are_scored_on_the_engine_and_precision_the_report_names(tmp_path):
    """Images (synth chips) were scored by the eager fp32 detector whatever --engine and
    --precision said, under a report naming that engine ('engine:auto' at that)."""
    import shutil
    from pathlib import Path

    from scanner.research.commands import main

    face = Path(__file__).parent / "data" / "multiface.jpg"
    for sub in ("real", "fake"):
        (tmp_path / "set" / sub).mkdir(parents=True)
        shutil.copy(face, tmp_path / "set" / sub / "a.jpg")
    scores = {}
    for prec in ("fp32", "bf16"):
        out = tmp_path / f"{prec}.json"
        assert main(["eval", str(tmp_path / "set"), "--detector", "test_tiny", "--engine", "eager",
                     "--precision", prec, "--out", str(out), "--quiet"]) == 0
        res = json.loads(out.read_text())
        assert res["scored_by"].endswith(f"engine:eager {prec}")
        scores[prec] = [s["score"] for s in res["scores"]]
    assert None not in scores["fp32"]
    assert scores["bf16"] != scores["fp32"]  # bf16 logits keep 8 bits: not the fp32 numbers
    assert np.allclose(scores["bf16"], scores["fp32"], atol=0.02)


@pytest.mark.parametrize("out, make_dir", [("ev_dir/", False), ("ev_dir/", True), ("ev_dir", True),
                                           ("ev_dir/.", True)])
def test_eval_out_naming_a_directory_is_one_error_line_and_writes_nothing(tmp_path, capsys, out, make_dir):
    """`--out ev_dir/` wrote a file named ev_dir (and ev_dir.png): Path() drops the slash.
    --out names the JSON file; a directory is refused before any work, as an existing one was."""
    from scanner.cli import main

    for name, score in (("a.mp4", 0.9), ("b.mp4", 0.1)):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"path": str(tmp_path / n), "score": s}) + "\n"
                                              for n, s in (("a.mp4", 0.9), ("b.mp4", 0.1))))
    m = _csv(tmp_path, "path,label\na.mp4,fake\nb.mp4,real\n")
    if make_dir:
        (tmp_path / "ev_dir").mkdir()
    assert main(["eval", str(m), "--from-jsonl", str(tmp_path / "s.jsonl"), "--quiet",
                 "--out", f"{tmp_path}/{out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dfscan: error: cannot write {tmp_path}/ev_dir") and err.count("\n") == 1, err
    assert (tmp_path / "ev_dir").is_dir() == make_dir and not (tmp_path / "ev_dir.png").exists()
    assert not make_dir or not list((tmp_path / "ev_dir").iterdir())


def test_from_jsonl_refuses_items_labelled_by_face_landmarks(tmp_path):
    """One image listed with two landmark sets (two faces) took its one scan row's score twice;
    a row scores the faces its scan found in the whole file, not the labelled face."""
    img = tmp_path / "i.png"
    img.write_bytes(b"x")
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text(json.dumps({"path": str(img), "score": 0.9, "verdict": "fake"}) + "\n")
    lm = " ".join(["1"] * 10), " ".join(["2"] * 10)
    items = read_labelled(_csv(tmp_path, f"path,label,landmarks\ni.png,fake,{lm[0]}\ni.png,fake,{lm[1]}\n"))
    with pytest.raises(DfscanError, match="labelled by face landmarks.*without --from-jsonl"):
        scores_from_jsonl(items, jsonl)
    plain = read_labelled(_csv(tmp_path, "path,label\ni.png,fake\n", name="p.csv"))
    assert scores_from_jsonl(plain, jsonl) == {0: 0.9}
