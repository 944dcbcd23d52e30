"""`dfscan train` refuses inputs that used to give a traceback or a wrong run without an error."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scanner.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "test_effnet_lite", "--size", "64", "--epochs", "1", "--steps", "1", "--batch-size", "4",
        "--val-size", "8", "--quiet"]


def _cache(d: Path, sources: list[str]) -> Path:
    """A complete face cache (as built before build.json was recorded) of ``sources``."""
    d.mkdir()
    n = len(sources)
    np.save(d / "crops.npy", np.zeros((n, 96, 96, 3), np.uint8))
    np.save(d / "landmarks.npy", np.zeros((n, 5, 2), np.float32))
    with open(d / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "group", "frame"])
        w.writerows([s, f"data:{Path(s).stem}", 0] for s in sources)
    return d


def _code(argv: list[str]) -> int:
    """main's exit code, also when argparse refuses an argument (SystemExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("opt,value,says", [
    ("--epochs", "0", "argument --epochs: must be an integer >= 1, not '0'"),  # was ZeroDivisionError in the schedule
    ("--steps", "0", "argument --steps: must be an integer >= 1"),
    ("--batch-size", "0", "argument --batch-size: must be an integer >= 1"),
    ("--val-size", "1", "argument --val-size: must be an integer >= 2"),  # one class: no AUC, no best.safetensors
    ("--p-mfs", "-1", "argument --p-mfs: must be a number in [0, 1]"),  # were taken silently
    ("--p-edge", "nan", "argument --p-edge: must be a number in [0, 1], not 'nan'"),
    ("--p-low-res", "2", "argument --p-low-res: must be a number in [0, 1]"),
    # tracebacks from torch or numpy once the cache was loaded, or taken silently:
    ("--threads", "0", "argument --threads: must be an integer >= 1"),
    ("--workers", "-1", "argument --workers: must be an integer >= 0"),
    ("--cache-frames", "0", "argument --cache-frames: must be an integer >= 1"),
    ("--freeze", "-1", "argument --freeze: must be an integer >= 0"),
    ("--freeze", "99", "--freeze 99: this backbone has"),
    ("--seed", "-1", "argument --seed: must be an integer from 0 to 4294967295"),
    ("--lr", "nan", "argument --lr: must be a positive finite number"),
    ("--lr", "-0.1", "argument --lr: must be a positive finite number"),
    ("--max-minutes", "0", "argument --max-minutes: must be a positive finite number"),  # was: no budget at all
    ("--max-minutes", "nan", "argument --max-minutes: must be a positive finite number"),
    ("--size", "0", "argument --size: must be an integer from 32 to 4096"),  # trained at the default side, the card saying 0
])
def test_bad_numbers_are_one_line_errors(tmp_path, capsys, opt, value, says):
    cache = _cache(tmp_path / "c", ["a.mp4", "b.mp4"])
    assert _code(["train", "--cache", str(cache), "--out", str(tmp_path / "run"), *TINY, opt, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: train: ") and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_cache_of_other_inputs_is_not_reused(tmp_path, capsys):
    """A complete cache was served whatever --data named: 'face cache ready' for other footage."""
    data = ROOT / "tests" / "data"
    cache = _cache(tmp_path / "c", [str(data / "d1.mp4"), str(data / "d2.mp4")])
    args = ["train", "--cache-only", "--cache", str(cache), "--data"]
    assert main([*args, str(data / "d1.mp4"), str(data / "d2.mp4")]) == 0  # the same inputs: reused
    assert main([*args, str(data / "d1.mp4")]) == 2
    assert "built from other files, e.g." in capsys.readouterr().err
    (cache / "build.json").write_text('{"files": ["%s"], "frames": 24}' % (data / "d1.mp4"))
    assert main([*args, str(data / "d1.mp4"), "--cache-frames", "8"]) == 2
    assert "built from 1 files, 24 frames per clip" in capsys.readouterr().err
    assert main([*args, str(data / "d1.mp4")]) == 0
    # Without --data they changed nothing, yet "face cache ready" was printed.
    assert main(["train", "--cache-only", "--cache", str(cache), "--every", "5"]) == 2
    assert "give --data too" in capsys.readouterr().err
    rel = os.path.relpath(data / "d1.mp4")  # the same file named relative: the same input
    assert main([*args, rel]) == 0
    assert main(["train", "--cache", str(cache), str(cache), "--out", str(tmp_path / "r"), "--data", "x"]) == 2
    assert "--data build one cache" in capsys.readouterr().err


def test_cache_build_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not an image")
    (tmp_path / "afile").write_text("")
    for cache, data, says in ((tmp_path / "c1", tmp_path / "empty", "no videos or images in"),
                              (tmp_path / "c2", tmp_path / "bad", "no faces found in the 1 files (1 unreadable"),
                              (tmp_path / "afile", ROOT / "tests" / "data" / "multiface.jpg", "is a file")):
        assert main(["train", "--cache-only", "--cache", str(cache), "--data", str(data)]) == 2
        assert says in capsys.readouterr().err


def test_damaged_last_pt_is_a_one_line_error(tmp_path, capsys):
    cache = _cache(tmp_path / "c", ["a.mp4", "b.mp4", "c.mp4"])
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 0}, run / "last.pt")
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:100])  # copied short
    assert main(["train", "--cache", str(cache), "--out", str(run), *TINY]) == 2
    assert "last.pt is unreadable" in capsys.readouterr().err


def test_non_utf8_file_name_in_a_face_cache(tmp_path):
    """index.csv could not store a non-UTF-8 source name (UnicodeEncodeError); the split and
    the recipe hash could not hash its identity."""
    from scanner.research.data import FaceCache, _store, check_built_from

    names = [str(tmp_path / "a\udcff.mp4"), str(tmp_path / "b.mp4"), str(tmp_path / "c.mp4")]
    rows = [{"source": s, "group": f"d:{Path(s).stem}", "frame": 0} for s in names]
    cache = tmp_path / "c"
    cache.mkdir()
    lm = np.array([[33, 40], [63, 40], [48, 56], [36, 70], [60, 70]], np.float32)
    crops = np.random.default_rng(0).integers(0, 255, (3, 96, 96, 3), dtype=np.uint8)
    _store(cache, crops, np.repeat(lm[None], 3, 0), rows,
           {"files": names, "frames": 2})
    assert FaceCache.load(cache).sources.tolist() == names
    check_built_from(cache, [Path(s) for s in names], 2)
    assert main(["train", "--cache", str(cache), "--out", str(tmp_path / "run"), *TINY]) == 0


def test_synth_size_zero_is_refused(tmp_path, capsys):
    """--size 0 wrote whole frames as 'chips' (cv2 takes dsize 0 as the source size)."""
    img = str(ROOT / "tests" / "data" / "multiface.jpg")
    assert _code(["synth", img, "--out", str(tmp_path / "s"), "--size", "0"]) == 2
    assert "argument --size: must be an integer from 16 to 4096" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("share", ["0", "1.5", "nan"])
def test_probe_heldout_share_is_checked_before_features(tmp_path, capsys, share):
    """--heldout 0 / 1.5 / nan was a scikit-learn ValueError traceback after all features were made."""
    with pytest.raises(SystemExit) as e:
        main(["probe", "fit", str(tmp_path), "--backbone", "torchvision", "--backbone-weights", "x",
              "--out", str(tmp_path / "p"), "--heldout", share])
    assert e.value.code == 2 and "argument --heldout: must be a number in (0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("cmd, flag, value, msg", [
    ("probe", "--C", "1,,10", "must be a positive finite number, not '' (in '1,,10')"),
    ("probe", "--C", "abc", "must be a positive finite number, not 'abc'"),
    ("probe", "--C", "0", "positive finite"), ("probe", "--C", "nan", "positive finite"),
    ("probe", "--seed", "-1", "must be an integer from 0 to 4294967295"),
    ("separability", "--seed", "-1", "must be an integer from 0 to 4294967295"),
    ("separability", "--seed", str(2**32), "must be an integer from 0 to"),
    ("synth", "--seed", "-5", "must be an integer from 0 to")])
def test_research_c_and_seed_are_checked_before_features(tmp_path, capsys, cmd, flag, value, msg):
    """--C abc / 0 / nan and --seed -1 were a ValueError or scikit-learn traceback, only after
    every feature (or chip) was computed."""
    args = {"probe": ["probe", "fit", str(tmp_path), "--backbone", "torchvision", "--backbone-weights", "x",
                      "--out", str(tmp_path / "p")],
            "separability": ["separability", str(tmp_path), "--detector", "meso4_df"],
            "synth": ["synth", str(tmp_path), "--out", str(tmp_path / "s")]}[cmd]
    with pytest.raises(SystemExit) as e:
        main([*args, flag, value])
    assert e.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.parametrize("args, msg", [
    (["separability", "."], "give exactly one of --backbone or --detector"),
    (["separability", ".", "--backbone", "torchvision"], "--backbone-weights FILE is required"),
    (["separability", ".", "--detector", "test_tiny", "--size", "128", "--arch", "resnet18"],
     "separability: --arch, --size would be ignored with --detector: leave them out"),
    (["separability", ".", "--backbone", "torchvision", "--backbone-weights", "x", "--weights", "w"],
     "separability: --weights would be ignored with --backbone: leave it out"),
    (["probe", "fit", ".", "--backbone", "torchvision", "--out", "p"], "--backbone-weights FILE is required")])
def test_research_usage_errors_are_one_dfscan_error_line(capsys, args, msg):
    """These printed their bare text and exited 1 (SystemExit), unlike every other usage error."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: ") and msg in err and err.count("\n") == 1


@pytest.mark.parametrize("cmd", [["eval", "m.csv", "--from-jsonl", "s.jsonl"], ["synth", "in.png"],
                                 ["separability", "m.csv", "--detector", "meso4_df"],
                                 ["probe", "fit", "m.csv", "--backbone", "torchvision", "--backbone-weights", "x"]])
@pytest.mark.parametrize("out", ["a_file/x.json", "a_dir"])
def test_research_unwritable_out_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, cmd, out):
    """An --out under a file, or a directory as a report file, was an OSError traceback (after
    every input was scored, or at synth's first chip)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    if cmd[0] in ("synth", "probe") and out == "a_dir":  # --out names a folder there: a file is wrong
        out = "a_file"
    assert main([*cmd, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dfscan: error: cannot write {out}") and err.count("\n") == 1


def test_card_commit_says_when_the_code_was_not_committed(tmp_path):
    """The card named HEAD even when the training code had uncommitted changes."""
    import subprocess

    from scanner.research.train import _git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "scanner").mkdir()
    (tmp_path / "scanner" / "x.py").write_text("a = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    head = _git_commit(tmp_path)
    assert len(head) == 40
    (tmp_path / "scanner" / "x.py").write_text("a = 2\n")
    assert _git_commit(tmp_path) == head + "-dirty"
    assert _git_commit(tmp_path / "scanner").endswith("-dirty")  # also from inside


def _faces(d: Path, n: int = 12, side: int = 96) -> Path:
    """A complete face cache of ``n`` random crops, two per identity, one family."""
    d.mkdir()
    lm = np.array([[33, 40], [63, 40], [48, 56], [36, 70], [60, 70]], np.float32) * side / 96
    np.save(d / "crops.npy", np.random.default_rng(0).integers(0, 255, (n, side, side, 3), dtype=np.uint8))
    np.save(d / "landmarks.npy", np.repeat(lm[None], n, 0))
    with open(d / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([["source", "group", "frame"]] + [[f"v{i}.mp4", f"f:p{i // 2}", 0] for i in range(n)])
    return d


def test_a_diverging_loss_stops_with_one_line_and_saves_no_weights(tmp_path, capsys):
    """A NaN loss was trained on for the rest of the epoch, then validation ended in a
    scikit-learn 'Input contains NaN' traceback; no weights of a diverged step may be saved."""
    cache = _faces(tmp_path / "c")
    run = tmp_path / "run"
    assert main(["train", "--cache", str(cache), "--out", str(run), *TINY, "--threads", "1",
                 "--lr", "1e30", "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: train: the loss is nan at epoch 1, step ") and "lower --lr" in err
    assert err.count("\n") == 1
    assert not (run / "best.safetensors").exists() and not (run / "last.pt").exists()


def test_adm_size_is_refused_not_ignored(tmp_path, capsys):
    """--size 160 with an ADM architecture trained at 224 under a recipe (and card) saying 160."""
    cache = _faces(tmp_path / "c")
    args = ["train", "--cache", str(cache), "--out", str(tmp_path / "run"), *TINY, "--arch", "test_effnet_lite_adm"]
    assert main([*args, "--size", "160"]) == 2
    assert "the ADM head needs 224 px crops" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_caches_of_other_crop_sizes_are_one_line(tmp_path, capsys):
    """--cache A B with crops of other sizes was a numpy concatenate traceback."""
    a, b = _faces(tmp_path / "a"), _faces(tmp_path / "b", side=64)
    assert main(["train", "--cache", str(a), str(b), "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: ") and "its crops are 64 px" in err and err.count("\n") == 1


def test_unwritable_run_folder_and_full_disk_are_one_line(tmp_path, capsys, monkeypatch):
    """An --out under a file, or a disk full while saving last.pt, was an OSError traceback."""
    from scanner.research import train

    cache = _faces(tmp_path / "c")
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--cache", str(cache), "--out", str(tmp_path / "afile" / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: train: cannot write the run folder") and err.count("\n") == 1

    def full(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train.torch, "save", full)
    assert main(["train", "--cache", str(cache), "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["best.safetensors"]  # no torn last.pt


def test_a_foreign_or_other_model_last_pt_is_one_line(tmp_path, capsys):
    """A last.pt of another tool (no 'model'), or one from before the recipe check of another
    architecture, was a KeyError / load_state_dict traceback."""
    cache = _faces(tmp_path / "c")
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 0, "state": {}}, run / "last.pt")
    assert main(["train", "--cache", str(cache), "--out", str(run), *TINY]) == 2
    assert "last.pt is not a dfscan train checkpoint" in capsys.readouterr().err
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(lin.parameters())
    torch.save({"model": lin.state_dict(), "opt": opt.state_dict(), "epoch": 0, "history": "[]", "best": 0.5},
               run / "last.pt")
    assert main(["train", "--cache", str(cache), "--out", str(run), *TINY]) == 2
    err = capsys.readouterr().err
    assert "last.pt does not fit --arch test_effnet_lite" in err and err.count("\n") == 1


def test_a_run_stopped_by_its_budget_says_so(tmp_path, capsys):
    """--max-minutes ended the run after an epoch with the same message as a finished run."""
    cache = _faces(tmp_path / "c")
    args = ["train", "--cache", str(cache), "--out", str(tmp_path / "run"), *TINY, "--epochs", "2"]
    assert main([*args, "--max-minutes", "1e-9"]) == 0
    assert "stopped by --max-minutes after 1 of 2 epochs: the same command continues" in capsys.readouterr().out
    assert main(args) == 0
    assert "stopped by --max-minutes" not in capsys.readouterr().out


def test_identity_folder_keeps_each_person_on_one_side_of_the_split(tmp_path, capsys):
    # Each clip or still was its own identity (MEAD/GRID aside), so a user's several clips of
    # one person landed in both training and validation, and validation AUC (which picks
    # the exported epoch) was measured on people the model had trained on.
    import shutil

    from scanner.research.data import FaceCache, identity

    data = tmp_path / "data"
    for person in ("alice", "bob"):
        (data / person).mkdir(parents=True)
        for n in range(2):
            shutil.copy(ROOT / "tests" / "data" / "d1.mp4", data / person / f"clip{n}.mp4")
    assert identity(data / "alice" / "clip0.mp4") != identity(data / "alice" / "clip1.mp4")  # the default
    assert identity(data / "alice" / "clip0.mp4", "folder") == identity(data / "alice" / "clip1.mp4", "folder")
    cache = tmp_path / "cache"
    build = ["train", "--cache-only", "--cache", str(cache), "--data", str(data), "--cache-frames", "2"]
    assert main([*build, "--identity", "folder"]) == 0
    groups = set(FaceCache.load(cache).groups.tolist())
    assert groups == {f"folder:{os.path.realpath(data / p)}" for p in ("alice", "bob")}
    assert main(build) == 2  # the same files, identities by name: not this cache
    assert "identities by folder" in capsys.readouterr().err
    assert main(["train", "--cache", str(cache), "--identity", "folder", "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "give --data too" in capsys.readouterr().err  # --identity shapes a build, as --every does


def test_the_best_epoch_is_said_as_the_progress_bar_counts(tmp_path, capsys):
    """The bar counts epochs from 1 ("epoch 1/1"); the closing line said "(epoch 0)"."""
    import json

    cache = _faces(tmp_path / "c")
    assert main(["train", "--cache", str(cache), "--out", str(tmp_path / "run"), *TINY]) == 0
    assert "(epoch 1); weights " in capsys.readouterr().out
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["best_epoch"] == 1 and [r["epoch"] for r in card["history"]] == [1]
