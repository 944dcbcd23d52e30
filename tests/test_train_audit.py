"""Audit of `dfscan train` / `dfscan synth`: results that must not depend on the machine."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Prints a hash of H.264 round trips at the sizes training uses (224 px crops, and the small
# faces of --p-low-res), with the process allowed on the CPUs given in argv.
_CHILD = """
import hashlib, os, sys
import cv2, numpy as np
os.sched_setaffinity(0, {int(c) for c in sys.argv[1:]})
from scanner.research import augment
img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (224, 224, 3)).astype(np.uint8), (0, 0), 2)
h = hashlib.sha256()
for side in (56, 97, 134, 224):
    h.update(augment.h264(cv2.resize(img, (side, side)), 30).tobytes())
print(h.hexdigest())
"""


def _h264_hash(cpus) -> str:
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, cpus)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs to compare")
def test_h264_augmentation_does_not_depend_on_the_cpu_count():
    """libx264 cut a frame into one slice per CPU the process could use, and the slices change
    the decoded pixels: the 15 % of training crops (and `--perturb h264`) went another way on a
    machine with other cores, so the shipped weights did not rebuild there."""
    cpus = sorted(os.sched_getaffinity(0))
    assert _h264_hash(cpus[:1]) == _h264_hash(cpus[:2]) == _h264_hash(cpus)


def _tiny_cache(d: Path) -> Path:
    """24 random 64 px "faces" of 12 people in two families (enough for a split)."""
    import csv

    import numpy as np

    rng = np.random.default_rng(0)
    n = 24
    lm = np.array([[22, 27], [42, 27], [32, 37], [24, 47], [40, 47]], np.float32)
    np.save(d / "crops.npy", rng.integers(0, 255, (n, 64, 64, 3)).astype(np.uint8))
    np.save(d / "landmarks.npy", np.repeat(lm[None], n, 0))
    with open(d / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "group", "frame"])
        for i in range(n):
            w.writerow([f"v{i // 2}.mp4", f"fam{i % 2}:p{i // 4}", i])
    return d


def test_the_card_names_the_starting_weights_by_content(tmp_path, one_torch_thread):
    """`--init FILE` was recorded by its path alone: another file at that path (the shipped ADM
    head starts from `runs/effnet_lite0_sbi_aff29bc.safetensors`) trained other weights under
    the same card, and a resume after the file changed was not refused."""
    import hashlib

    from engines.errors import DfscanError
    from engines.files import write_safetensors
    from engines.registry import create_detector
    from scanner.research.train import TrainConfig, train

    cache = _tiny_cache(tmp_path)
    init = tmp_path / "init.safetensors"
    write_safetensors(create_detector("test_effnet_lite", size=64).state_dict(), init)
    cfg = dict(arch="test_effnet_lite", size=64, epochs=2, steps=1, batch_size=4, val_size=8, freeze=1,
               threads=1, seed=3, init=str(init))
    card = train(TrainConfig(**cfg, max_minutes=1e-9), cache, tmp_path / "run")  # epoch 1 only
    assert card["data"]["init_sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    other = create_detector("test_effnet_lite", size=64)
    for p in other.parameters():
        p.data.add_(1.0)
    write_safetensors(other.state_dict(), init)  # other weights under the same name
    with pytest.raises(DfscanError, match="init_sha256"):
        train(TrainConfig(**cfg), cache, tmp_path / "run")
