"""The faces' hash (a train recipe's ``crops_sha256``) is recorded in ``build.json`` when a face
cache is built, and read from there at train start while the arrays are unchanged: the value
is the one a full hash of the arrays gives, byte for byte, and an edited cache is noticed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engines.errors import DfscanError
from scanner.research import data
from scanner.research.data import FaceCache
from scanner.research.train import TrainConfig, recipe_of, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(arch="test_effnet_lite", size=64, epochs=2, steps=1, batch_size=4, val_size=8, freeze=1,
            threads=1, seed=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(cache: Path) -> Path:
    """A face cache of two bundled clips (two people), built by `dfscan train --cache-only`."""
    from scanner.cli import main

    clips = [str(ROOT / "tests" / "data" / n) for n in ("d1.mp4", "d2.mp4")]
    assert main(["train", "--cache-only", "--cache", str(cache), "--cache-frames", "2", "--data", *clips]) == 0
    return cache


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Built once for the module and never changed: tests that change a cache copy it."""
    return _build(tmp_path_factory.mktemp("faces") / "cache")


@pytest.fixture
def cache(built, tmp_path) -> Path:
    """A copy of the built cache: new files (inode, change time), so its record is not used."""
    return Path(shutil.copytree(built, tmp_path / "cache"))


def _full_hash(caches: list[Path]) -> str:
    """The recipe's crops_sha256 as train computed it before it was recorded: every crop's
    bytes of the caches, then every landmark's."""
    crops = np.concatenate([np.load(c / "crops.npy") for c in caches])
    lms = np.concatenate([np.load(c / "landmarks.npy") for c in caches])
    return hashlib.sha256(np.ascontiguousarray(crops).tobytes() + np.ascontiguousarray(lms).tobytes()).hexdigest()


def _recipe_hash(caches) -> str:
    return recipe_of(TrainConfig(**TINY), SimpleNamespace(cache=FaceCache.load(caches)))["crops_sha256"]


def test_the_recorded_hash_is_the_full_hash_and_a_train_start_reads_it(built, monkeypatch):
    rec = json.loads((built / "build.json").read_text())
    assert rec["crops_sha256"] == _full_hash([built]) and set(rec["arrays"]) == {"crops.npy", "landmarks.npy"}
    assert np.load(built / "crops.npy").shape[0] == 4  # 2 frames of 2 clips
    with monkeypatch.context() as m:
        m.setattr(data, "hash_faces", lambda *a: pytest.fail("hashed again although recorded"))
        assert _recipe_hash(built) == rec["crops_sha256"]
    copy = Path(shutil.copytree(built, built.parent / "copy"))  # as cp -p: the same times
    assert FaceCache.load(copy).recorded_sha256 is None and _recipe_hash(copy) == rec["crops_sha256"]


def test_an_older_cache_gives_the_same_hash(cache):
    rec = json.loads((cache / "build.json").read_text())
    old = {k: v for k, v in rec.items() if k not in ("crops_sha256", "arrays")}
    (cache / "build.json").write_text(json.dumps(old))  # as built before the record
    assert FaceCache.load(cache).recorded_sha256 is None and _recipe_hash(cache) == rec["crops_sha256"]
    (cache / "build.json").unlink()  # as built before build.json
    assert _recipe_hash(cache) == rec["crops_sha256"]


def test_several_caches_are_hashed_together(cache, built):
    assert FaceCache.load([built, cache]).recorded_sha256 is None
    assert _recipe_hash([built, cache]) == _full_hash([built, cache])


def test_an_edited_crop_file_is_noticed_by_the_next_train_start(tmp_path):
    """Also when the edit puts the file's modification time back (touch -d, cp -p, rsync -t):
    the change time, which no tool sets back, is part of the record."""
    cache = _build(tmp_path / "cache")
    rec = json.loads((cache / "build.json").read_text())
    train(TrainConfig(**TINY, max_minutes=1e-9), cache, tmp_path / "run")  # epoch 0 only
    assert FaceCache.load(cache).recorded_sha256 == rec["crops_sha256"]
    st = os.stat(cache / "crops.npy")
    time.sleep(0.02)  # file times tick with the kernel's coarse clock: an edit is a tick later
    with open(cache / "crops.npy", "r+b") as f:  # one pixel, in place: same size
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(cache / "crops.npy", ns=(st.st_atime_ns, st.st_mtime_ns))  # the time put back
    assert FaceCache.load(cache).recorded_sha256 is None
    assert _recipe_hash(cache) == _full_hash([cache]) != rec["crops_sha256"]
    with pytest.raises(DfscanError, match="crops_sha256"):
        train(TrainConfig(**TINY), cache, tmp_path / "run")
