"""Engine cache drills: a cache that cannot take an entry, entries raced by other processes."""
from __future__ import annotations

import errno
import logging

import pytest
import torch

from engines.backends import build_engine, engine_config
from engines.backends.onnxrt import OnnxRuntimeEngine
from engines.errors import EngineError
from engines.registry import create_detector

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny():
    return create_detector("test_tiny")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_unwritable_cache_builds_the_engine_without_it(tiny, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")  # the cache folder would be below a file: never creatable, even as root
    cfg = engine_config("onnxruntime", batch_sizes=(1, 8), cache_dir=str(blocker / "cache"))
    with caplog.at_level(logging.WARNING):
        e = build_engine(tiny, cfg)  # was EngineError: building ... failed: NotADirectoryError
    assert e.info.cache == "none (cache not writable)" and e.info.parity["passed"]
    assert "cannot be written" in caplog.text and str(blocker / "cache") in caplog.text
    x = tiny.spec.example_input(3)
    torch.testing.assert_close(e.p_fake(x), tiny.p_fake(tiny(x)), atol=1e-4, rtol=1e-4)


def test_full_cache_disk_builds_the_engine_without_it(tiny, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real = OnnxRuntimeEngine._export

    def export(self, path):
        if cache in path.parents:  # writing into the cache: the disk is full
            raise EngineError(f"could not write the ONNX file {path}") from OSError(errno.ENOSPC, "No space left on device")
        real(self, path)

    monkeypatch.setattr(OnnxRuntimeEngine, "_export", export)
    e = build_engine(tiny, engine_config("onnxruntime", batch_sizes=(2,), cache_dir=str(cache)))
    assert e.info.cache == "none (cache not writable)" and e.info.parity["passed"]
    assert [p.name for p in cache.iterdir()] == []  # no half-written entry left behind


def test_an_export_bug_is_still_an_error(tiny, tmp_path, monkeypatch):
    def export(self, path):
        raise EngineError("exporter bug")  # not the cache's fault: no silent uncached retry

    monkeypatch.setattr(OnnxRuntimeEngine, "_export", export)
    with pytest.raises(EngineError, match="exporter bug"):
        build_engine(tiny, engine_config("onnxruntime", batch_sizes=(2,), cache_dir=str(tmp_path / "c")))


def test_a_second_store_keeps_the_valid_entry_another_process_may_be_loading(tmp_path, monkeypatch):
    import os

    from engines.cache import EngineCache, cache_key

    cache, fields = EngineCache(tmp_path), {"detector": "x"}
    key = cache_key(fields)
    # Two processes missed the cache and exported; the first stored its entry and is loading it.
    first = cache.store(key, fields, "model.onnx", lambda p: p.write_bytes(b"graph")).path
    inode = first.stat().st_ino
    present, replace = [], os.replace

    def watched(src, dst):  # the first process's load would run now: is its file there?
        present.append(first.is_file())
        replace(src, dst)

    monkeypatch.setattr(os, "replace", watched)
    second = cache.store(key, fields, "model.onnx", lambda p: p.write_bytes(b"graph")).path
    monkeypatch.undo()
    assert second == first and all(present) and first.stat().st_ino == inode
    assert cache.lookup(key, fields)[1] == "hit"
    assert [p.name for p in tmp_path.iterdir()] == [key]  # the second export was discarded


def test_clear_all_spares_builds_in_progress_and_foreign_metadata_is_not_a_crash(tmp_path):
    # `engines clear --all` deleted other processes' build folders (.tmp-*) and counted them
    # as entries (those builds then ran uncached); update_meta on a meta.json replaced by
    # a JSON list crashed with AttributeError instead of its warning.
    import os
    import time

    from engines.cache import STALE_BUILD_S, EngineCache, cache_key

    cache, fields = EngineCache(tmp_path), {"detector": "x"}
    key = cache_key(fields)
    cache.store(key, fields, "a.bin", lambda p: p.write_bytes(b"1"))
    (tmp_path / key / "meta.json").write_text("[1, 2]")
    assert cache.update_meta(key, parity={"cos": 1.0}) is False
    live, stale = tmp_path / ".tmp-live", tmp_path / ".tmp-stale"
    live.mkdir()
    stale.mkdir()
    old = time.time() - STALE_BUILD_S - 60
    os.utime(stale, (old, old))
    assert cache.clear() == 1  # the entry, not the build folders
    assert live.is_dir() and not stale.exists() and not (tmp_path / key).exists()
