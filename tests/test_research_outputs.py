"""What eval / separability / probe fit write, and that they say so.

Without --out, eval and separability wrote eval.json / separability.json (and a .png)
into the current folder, and a second run there replaced the first run's results without
a word. The default name is now refused when a file of an earlier run is there (exit 2,
one line, before any work); an --out given is replaced, as `dfscan scan --out` is.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from scanner.cli import main


def _labelled(tmp_path):
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"path": str(tmp_path / n), "score": s}) + "\n"
                                              for n, s in (("a.mp4", 0.9), ("b.mp4", 0.1))))
    (tmp_path / "m.csv").write_text("path,label\na.mp4,fake\nb.mp4,real\n")
    return ["eval", "m.csv", "--from-jsonl", "s.jsonl", "--quiet"]


def test_eval_without_out_never_replaces_an_earlier_runs_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = _labelled(tmp_path)
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith("wrote eval.json and eval.png\n")
    first = (tmp_path / "eval.json").read_bytes(), (tmp_path / "eval.png").read_bytes()
    (tmp_path / "s.jsonl").write_text("")  # a second run would score nothing: must not reach it
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1, cap.err
    assert cap.err.startswith("dfscan: error: eval: eval.json and eval.png from an earlier run are in "
                              "this folder") and "pass --out" in cap.err
    assert ((tmp_path / "eval.json").read_bytes(), (tmp_path / "eval.png").read_bytes()) == first


def test_eval_without_out_is_refused_when_only_the_plot_is_there(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eval.png").write_bytes(b"old plot")
    assert main(_labelled(tmp_path)) == 2
    assert "eval.png from an earlier run is in this folder" in capsys.readouterr().err
    assert (tmp_path / "eval.png").read_bytes() == b"old plot" and not (tmp_path / "eval.json").exists()


def test_eval_with_out_replaces_that_file_and_names_what_it_wrote(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eval.json").write_text("{}")
    assert main(_labelled(tmp_path) + ["--out", "eval.json"]) == 0  # asked for by name, as scan --out
    assert capsys.readouterr().out.endswith("wrote eval.json and eval.png\n")
    assert json.loads((tmp_path / "eval.json").read_text())["overall"]["n"] == 2


def test_separability_without_out_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from scanner.research import separability

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(separability, "run_separability", lambda args: pytest.fail("work was started"))
    (tmp_path / "separability.json").write_text("{}")
    assert main(["separability", str(tmp_path), "--detector", "test_tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: separability: separability.json from an earlier run is in this folder")
    assert err.count("\n") == 1 and (tmp_path / "separability.json").read_text() == "{}"


def test_separability_default_out_is_used_in_an_empty_folder(tmp_path, monkeypatch):
    from scanner.research import separability

    seen = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(separability, "run_separability", lambda args: seen.append(args.out) or 0)
    assert main(["separability", str(tmp_path), "--detector", "test_tiny"]) == 0
    assert seen == ["separability.json"]


def test_probe_fit_names_its_json_summary_among_the_files_written(tmp_path, monkeypatch, capsys):
    """--json was written after the "wrote DIR/" line, which did not name it."""
    from engines.detectors import probe as probe_det
    from scanner.research import features, labelled

    X, y = np.r_[np.zeros((4, 3)), np.ones((4, 3))] + np.arange(8)[:, None] * 0.01, np.r_[[0] * 4, [1] * 4]
    fs = SimpleNamespace(X=X, y=y, groups=np.arange(8), item=np.arange(8), skipped=[])
    model = SimpleNamespace(info=SimpleNamespace(arch="fake", feature_dim=3))
    monkeypatch.setattr(labelled, "read_labelled", lambda labels: list(range(8)))
    monkeypatch.setattr(features, "backbone_embedder", lambda *a: (SimpleNamespace(spec=None), model))
    monkeypatch.setattr(features, "embed_items", lambda *a: fs)
    monkeypatch.setattr(probe_det, "save_probe", lambda out, *a: out)
    out, js = tmp_path / "p", tmp_path / "train.json"
    assert main(["probe", "fit", str(tmp_path), "--backbone", "torchvision", "--backbone-weights", "w.pth",
                 "--out", str(out), "--json", str(js), "--heldout", "0.5", "--quiet"]) == 0
    assert f"wrote {out}/ and {js} (scan with" in capsys.readouterr().out
    assert json.loads(js.read_text())["C"] > 0
