"""`dfscan train` audit 2: a face cache served for footage that changed since its build, and a
``--recon`` autoencoder trained on other face caches (another split) accepted as the run's."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.errors import DfscanError
from scanner.cli import main
from scanner.research.data import FaceCache, person_groups, split_groups
from scanner.research.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
STILLS = ROOT.parent / "shared" / "media" / "train_stills" / "utkface_part1"
S = 64
LM = np.array([[22, 27], [42, 27], [32, 37], [24, 47], [40, 47]], np.float32)


def _cache(d: Path, groups: list[str]) -> Path:
    """A face cache of random pictures, one row per group name."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(list(d.name.encode()))  # other pictures in each cache
    np.save(d / "crops.npy", rng.integers(0, 256, (len(groups), S, S, 3), dtype=np.uint8))
    np.save(d / "landmarks.npy", np.repeat(LM[None], len(groups), 0))
    with open(d / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "group", "frame"])
        w.writerows([(f"{d.name}/{g[2:]}.mp4", g, 0) for g in groups])
    return d


@pytest.mark.skipif(not STILLS.is_dir(), reason="needs the shared training stills")
def test_a_cache_of_footage_changed_since_its_build_is_refused_not_reused(tmp_path, capsys):
    photos = sorted(STILLS.glob("*.jpg"))
    data = tmp_path / "data"
    data.mkdir()
    for p in photos[:2]:
        shutil.copy(p, data / p.name)
    args = ["train", "--cache-only", "--data", str(data), "--cache"]
    assert main([*args, str(tmp_path / "c1")]) == 0
    assert main([*args, str(tmp_path / "c2")]) == 0  # built twice from the same footage: the same cache
    for name in ("crops.npy", "landmarks.npy", "index.csv"):
        assert (tmp_path / "c1" / name).read_bytes() == (tmp_path / "c2" / name).read_bytes()
    assert main([*args, str(tmp_path / "c1")]) == 0  # unchanged: reused
    os.utime(data / photos[0].name, ns=(1, 1))  # new stamps, the same bytes: reused
    assert main([*args, str(tmp_path / "c1")]) == 0
    capsys.readouterr()
    shutil.copy(photos[5], data / photos[0].name)  # another person's photo under the same name
    # Before: "face cache ready", and training went on with the old photo's faces.
    assert main([*args, str(tmp_path / "c1")]) == 2
    err = capsys.readouterr().err
    assert f"{data / photos[0].name} changed since this face cache was built" in err and err.count("\n") == 1


def test_an_autoencoder_trained_on_other_face_caches_is_refused(tmp_path):
    """The same seed and share split other caches otherwise: trained on cache A, the autoencoder
    had seen a person that a run on A + B holds out for validation, and it was accepted."""
    from scanner.research.recon import train_ae

    seed = 3
    a = _cache(tmp_path / "a", [f"f:a{k}" for k in range(10)])
    b = _cache(tmp_path / "b", [f"f:b{k}" for k in range(10)])
    ae = tmp_path / "ae.safetensors"
    train_ae(a, ae, steps=1, batch=2, side=32, threads=1, seed=seed)
    both = FaceCache.load([a, b])
    run_val = set(both.groups[split_groups(person_groups(both), 0.15, seed)].tolist())
    one = FaceCache.load(a)
    ae_train = set(one.groups[~split_groups(person_groups(one), 0.15, seed)].tolist())
    assert run_val & ae_train  # the leak the check exists for
    cfg = dict(arch="test_effnet_lite", size=S, epochs=1, steps=1, batch_size=4, val_size=8, freeze=1,
               threads=1, seed=seed, recon=str(ae), p_recon=0.5)
    with pytest.raises(DfscanError, match="trained on other face caches"):
        train(TrainConfig(**cfg), [a, b], tmp_path / "run")
    assert not (tmp_path / "run").exists()
    card = train(TrainConfig(**cfg), a, tmp_path / "run")  # its own caches: the same split
    assert card["recipe"]["p_recon"] == 0.5 and card["history"]
    assert json.loads(Path(str(ae) + ".json").read_text())["identities_sha256"]


@pytest.mark.skipif(not STILLS.is_dir(), reason="needs the shared training stills")
def test_files_named_with_upper_case_extensions_are_training_footage(tmp_path, capsys):
    """Cameras name files IMG_0001.JPG, MVI_0001.MP4: globbed by lower-case patterns, such a
    folder was "no videos or images", and in a mixed folder those files were left out silently."""
    from scanner.research.data import sources

    data = tmp_path / "data"
    data.mkdir()
    photos = sorted(STILLS.glob("*.jpg"))
    shutil.copy(photos[0], data / "IMG_0001.JPG")
    shutil.copy(photos[1], data / "IMG_0002.Jpeg")
    shutil.copy(ROOT / "tests" / "data" / "d1.mp4", data / "MVI_0003.MP4")
    (data / "folder.mp4").mkdir()  # a folder is no footage, whatever its name
    assert [p.name for p in sources([data])] == ["IMG_0001.JPG", "IMG_0002.Jpeg", "MVI_0003.MP4"]
    (data / "MVI_0003.MP4").unlink()  # the stills are enough to build a cache (no clip to decode)
    assert main(["train", "--cache-only", "--data", str(data), "--cache", str(tmp_path / "c")]) == 0
    assert "2 faces of 2 identities from 2 files" in capsys.readouterr().out
