"""Engine cache audit: what `engines clear/list` may touch, entries that vanish while read."""
from __future__ import annotations

import json

import pytest

from engines.backends import build_engine, engine_config
from engines.cache import EngineCache, cache_key
from engines.registry import create_detector
from scanner.cli import main

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    return create_detector("test_tiny")


def _entry(cache: EngineCache, name: str = "x") -> str:
    fields = {"detector": name}
    key = cache_key(fields)
    cache.store(key, fields, "model.onnx", lambda p: p.write_bytes(b"graph"))
    return key


def test_clear_all_of_a_cache_dir_set_to_a_home_folder_deletes_only_entries(tmp_path, capsys):
    # `dfscan engines clear --all --cache-dir ~` deleted every folder there (Documents/ ...)
    # and a link into the cache was counted as removed while what it points to was kept.
    home, outside = tmp_path / "home", tmp_path / "outside"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "thesis.txt").write_text("years of work")
    (home / "2024").mkdir()  # digits are hex, but no key
    outside.mkdir()
    (outside / "keep.txt").write_text("not the cache's")
    link = home / ("ab" * 32)  # named like a key, pointing out of the cache
    link.symlink_to(outside, target_is_directory=True)
    key = _entry(EngineCache(home))
    assert main(["engines", "list", "--json", "--cache-dir", str(home)]) == 0
    listed = {r["key"] for r in json.loads(capsys.readouterr().out)["entries"]}
    assert listed == {key, link.name}  # not Documents/ nor 2024/
    assert main(["engines", "clear", "--all", "--cache-dir", str(home)]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert sorted(p.name for p in home.iterdir()) == ["2024", "Documents"]
    assert (home / "Documents" / "thesis.txt").read_text() == "years of work"
    assert (outside / "keep.txt").read_text() == "not the cache's"


def test_clear_by_prefix_matches_entries_only(tmp_path, capsys):
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    (home / "dead").mkdir()  # a hex name, but no key
    key = _entry(EngineCache(home))
    assert main(["engines", "clear", "D", "d", key[:6], "--cache-dir", str(home)]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert sorted(p.name for p in home.iterdir()) == ["Downloads", "dead"]


def test_an_entry_deleted_by_another_process_while_read_is_rebuilt(tiny, tmp_path, monkeypatch):
    # Two scans starting together on a damaged entry: one deletes it to rebuild while the
    # other is reading it; the reader's FileNotFoundError failed its engine build.
    import shutil

    import engines.cache as C

    cfg = engine_config("onnxruntime", batch_sizes=(1, 8), cache_dir=str(tmp_path))
    build_engine(tiny, cfg)
    real = C._foreign

    def deleted_meanwhile(d, *paths):
        why = real(d, *paths)
        shutil.rmtree(d)  # the other process's rebuild, between the check and the read
        return why

    monkeypatch.setattr(C, "_foreign", deleted_meanwhile)
    again = build_engine(tiny, engine_config("onnxruntime", batch_sizes=(1, 8), cache_dir=str(tmp_path)))
    monkeypatch.undo()
    assert again.info.cache == "rebuilt (artifact unreadable: FileNotFoundError)"
    assert again.info.parity["passed"]
    assert build_engine(tiny, cfg).info.cache == "hit"


def test_two_scans_started_together_on_an_empty_cache_share_one_entry(tmp_path):
    # Real processes: both miss, both export, one entry is kept; neither fails nor warns.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cache = tmp_path / "cache"
    env = {**os.environ, "DFSCAN_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    clip = "/work/shared/media/portrait/d1.mp4"
    if not Path(clip).is_file():
        pytest.skip("shared media not here")
    procs = [subprocess.Popen([sys.executable, "-m", "scanner.cli", "scan", clip, "--detector", "test_tiny",
                               "--engine", "onnxruntime", "--frames", "2", "--workers", "1", "--no-progress",
                               "--no-details", "--out", str(tmp_path / f"{i}.jsonl")],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0 and "WARNING" not in err and "error" not in err.lower(), err
    rows = [json.loads((tmp_path / f"{i}.jsonl").read_text()) for i in range(2)]
    assert rows[0]["verdict"] != "error" and rows[0]["score"] == rows[1]["score"]
    (entry,) = EngineCache(cache).list()  # one valid entry, no build folder left behind
    assert entry["backend"] == "onnxruntime" and entry["parity"]["passed"]
    assert [p.name for p in cache.iterdir()] == [entry["key"]]


def test_unwritable_cache_and_temp_folder_still_build_the_engine_uncached(tiny, tmp_path, monkeypatch, caplog):
    # A read-only root file system (a container's): neither the cache nor the temporary
    # folder can be written. The uncached build exported into the latter and failed too.
    import logging
    import tempfile

    import torch

    blocker = tmp_path / "file"
    blocker.write_text("")  # folders below a file are never creatable, even as root
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8), cache_dir=str(blocker / "cache"))
    with caplog.at_level(logging.WARNING):
        e = build_engine(tiny, cfg)
    monkeypatch.undo()
    assert e.info.cache == "none (cache not writable)" and e.info.parity["passed"]
    assert caplog.text.count("cannot be written") == 1  # said once, with the reason
    x = tiny.spec.example_input(3)
    torch.testing.assert_close(e.p_fake(x), tiny.p_fake(tiny(x)), atol=1e-4, rtol=1e-4)
