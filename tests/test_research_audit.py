"""Research commands audit (eval / separability / probe fit): results lost or misreported
without an error."""
from __future__ import annotations

import json
import os

import pytest

from engines.errors import DfscanError
from engines.spec import InputSpec
from scanner.cli import main
from scanner.research.features import CropConfig, CropSource, Embedder, embed_items
from scanner.research.labelled import Item, read_labelled


def _labelled(tmp_path):
    for name, data in (("a.mp4", b"x"), ("b.mp4", b"yy")):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"path": str(tmp_path / n), "score": s}) + "\n"
                                              for n, s in (("a.mp4", 0.9), ("b.mp4", 0.1))))
    (tmp_path / "m.csv").write_text("path,label\na.mp4,fake\nb.mp4,real\n")
    return ["eval", "m.csv", "--from-jsonl", "s.jsonl", "--quiet"]


@pytest.mark.parametrize("name", ["roc.png", "roc.PNG"])
def test_eval_out_named_like_its_plot_is_refused_not_overwritten_by_it(tmp_path, monkeypatch, capsys, name):
    """`--out roc.png` wrote the metrics JSON, then the ROC plot over it ("wrote roc.png and
    roc.png"): the metrics were lost, with exit 0."""
    monkeypatch.chdir(tmp_path)
    assert main(_labelled(tmp_path) + ["--out", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: eval: --out") and err.count("\n") == 1, err
    assert not os.path.lexists(tmp_path / name)


def test_separability_out_named_like_its_plot_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from scanner.research import separability

    monkeypatch.setattr(separability, "run_separability", lambda args: pytest.fail("work was started"))
    assert main(["separability", str(tmp_path), "--detector", "test_tiny", "--out", str(tmp_path / "s.png")]) == 2
    assert "would be replaced by the plot" in capsys.readouterr().err


@pytest.mark.parametrize("labels", [("fake", "real"), ("fake", "fake")])
def test_a_hard_link_is_the_file_it_links(tmp_path, labels):
    """Two hard-link names of one video (`cp -al` sets) passed the duplicate check, which compared
    resolved paths: the same video counted as real and as fake, or counted twice."""
    (tmp_path / "a.mp4").write_bytes(b"video")
    os.link(tmp_path / "a.mp4", tmp_path / "b.mp4")
    (tmp_path / "m.csv").write_text(f"path,label\na.mp4,{labels[0]}\nb.mp4,{labels[1]}\n")
    with pytest.raises(DfscanError, match="both real and fake" if labels[0] != labels[1] else "listed twice"):
        read_labelled(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("path,label\na.mp4,fake\n")  # one name alone is fine
    assert len(read_labelled(tmp_path / "m.csv")) == 1


@pytest.mark.parametrize("cache", [False, True])
def test_an_unreadable_video_is_skipped_as_unreadable_not_as_faceless(tmp_path, cache):
    """separability / probe fit listed a corrupt video under `skipped` as "no face found" (and
    cached it so): the decode error was only a log line."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(4000))
    emb = Embedder("k", InputSpec(size=32), lambda x: x.mean(dim=(2, 3)))
    cache_dir = tmp_path / "cache" if cache else None
    for _ in range(2):  # the second run reads the cache, when there is one
        with pytest.raises(DfscanError, match="no face crops in any input file") as e:
            embed_items([Item(bad, 1, "b")], emb, CropSource(CropConfig(frames=2)), cache_dir)
        assert "no face found" not in str(e.value) and "not a video file" in str(e.value), e.value
    assert not cache or not any((tmp_path / "cache").rglob("*.npz"))


@pytest.mark.parametrize("name", ["card.json", "probe.safetensors"])
def test_probe_fit_json_naming_a_file_of_the_probe_is_refused_before_any_work(tmp_path, monkeypatch, capsys, name):
    """`--json DIR/card.json` was written after the probe: the summary replaced its card, and the
    probe just fitted could not be loaded (exit 0)."""
    from scanner.research import labelled

    monkeypatch.setattr(labelled, "read_labelled", lambda labels: pytest.fail("work was started"))
    out = tmp_path / "p"
    assert main(["probe", "fit", str(tmp_path), "--backbone", "torchvision", "--backbone-weights", "w.pth",
                 "--out", str(out), "--json", str(out / "sub" / ".." / name), "--quiet"]) == 2
    assert "is a file of the probe folder" in capsys.readouterr().err


def test_plots_show_dollar_signs_literally(tmp_path):
    """Two '$' in the JSONL's path (or a subset or model name) started matplotlib mathtext: the
    ROC plot failed in a ValueError traceback (exit 1) after eval.json was written."""
    import numpy as np

    from scanner.research.separability import plot, separability

    _labelled(tmp_path)
    jsonl = (tmp_path / "s.jsonl").rename(tmp_path / "run_$x\\frac$.jsonl")
    (tmp_path / "m.csv").write_text("path,label,subset\na.mp4,fake,$\\alpha_{$\nb.mp4,real,$\\alpha_{$\n")
    assert main(["eval", str(tmp_path / "m.csv"), "--from-jsonl", str(jsonl), "--quiet",
                 "--out", str(tmp_path / "e.json")]) == 0
    assert (tmp_path / "e.png").stat().st_size > 0
    y = np.r_[[0] * 3, [1] * 3]
    res = separability(y[:, None] + np.arange(6)[:, None] * [0.1, 0.2], y)
    plot(res, y, tmp_path / "s.png", "w_$\\frac$.pth")
    assert (tmp_path / "s.png").stat().st_size > 0


def test_plots_take_non_utf8_names(tmp_path):
    """A JSONL or subset whose name is not UTF-8 (a surrogate in Python) was a TypeError in
    matplotlib: the ROC plot failed in a traceback after eval.json was written."""
    _labelled(tmp_path)
    jsonl = (tmp_path / "s.jsonl").rename(tmp_path / "scan\udcff.jsonl")
    with open(tmp_path / "m.csv", "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("path,label,subset\na.mp4,fake,caf\udce9\nb.mp4,real,caf\udce9\n")  # Latin-1 bytes
    assert main(["eval", str(tmp_path / "m.csv"), "--from-jsonl", str(jsonl), "--quiet",
                 "--out", str(tmp_path / "e.json")]) == 0
    assert (tmp_path / "e.png").stat().st_size > 0


def test_feature_cache_key_follows_the_crop_code(tmp_path, monkeypatch):
    """Cached embeddings are keyed by the code that made their crops, not only by settings: a
    change to alignment (or decoding, detection) kept serving embeddings of the old crops."""
    from pathlib import Path

    from scanner.research import features

    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 64)
    emb = Embedder("m", InputSpec(size=32), lambda x: x, "cpu", 4)
    key = lambda: features._cache_path(tmp_path, emb, CropConfig(), Item(video, 0, "g"))  # noqa: E731
    features.crop_code_hash.cache_clear()
    before = key()
    assert key() == before  # stable for the same code
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda p: real(p) + b"# edited" if p.name == "align.py" else real(p))
    features.crop_code_hash.cache_clear()
    try:
        assert key() != before
    finally:
        monkeypatch.undo()
        features.crop_code_hash.cache_clear()
    assert key() == before
