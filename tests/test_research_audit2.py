"""Research audit 2: training results that were wrong without an error (identity leakage
through duplicated footage, a card describing other weights than the run folder holds)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from scanner.research import train as train_mod
from scanner.research.data import FaceCache, person_groups, split_groups
from scanner.research.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
S = 64
LM = np.array([[22, 27], [42, 27], [32, 37], [24, 47], [40, 47]], np.float32)
TINY = dict(arch="test_effnet_lite", size=S, epochs=3, steps=1, batch_size=4, val_size=8,
            freeze=1, threads=1, seed=3)


def _cache(d: Path, rows: list[tuple[str, str, int]]) -> Path:
    """A face cache whose row ``(source, group, picture)`` holds random picture number ``picture``."""
    d.mkdir(parents=True, exist_ok=True)
    pics = [np.random.default_rng(p).integers(0, 256, (S, S, 3), dtype=np.uint8) for _, _, p in rows]
    np.save(d / "crops.npy", np.stack(pics))
    np.save(d / "landmarks.npy", np.repeat(LM[None], len(rows), 0))
    with open(d / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "group", "frame"])
        w.writerows([(s, g, i) for i, (s, g, _) in enumerate(rows)])
    return d


def _sides(cache: FaceCache, rows: np.ndarray, seed: int) -> set[bool]:
    return set(split_groups(person_groups(cache), 0.5, seed)[rows].tolist())


def test_one_file_under_two_group_names_stays_on_one_side(tmp_path):
    # The same clip in a cache built by file names and in one built by folders: before, its
    # faces were two "people", one of them held out for validation, the other trained on.
    people = [(f"/d/p{k}/c.mp4", f"folder:/d/p{k}", 10 + k) for k in range(6)]
    a = _cache(tmp_path / "a", [("/d/p0/c.mp4", "p0:c", 10)] + people[1:])
    b = _cache(tmp_path / "b", people[:1])
    cache = FaceCache.load([a, b])
    same = np.flatnonzero(cache.sources == "/d/p0/c.mp4")
    assert len(same) == 2 and all(len(_sides(cache, same, s)) == 1 for s in range(20))


def test_a_copy_of_a_still_under_another_name_stays_on_its_sides(tmp_path):
    # Byte-identical photos under two names (7 such pairs in train_stills/utkface_part1):
    # their crops are identical, so validation held out faces that training had seen.
    rows = [(f"s/{k}.jpg", f"s:{k}", k) for k in range(12)] + [("s/copy.jpg", "s:copy", 0)]
    cache = FaceCache.load(_cache(tmp_path / "c", rows))
    dup = np.array([0, 12])
    assert all(len(_sides(cache, dup, s)) == 1 for s in range(20))
    # Groups sharing nothing keep their names: their split is what it was.
    assert person_groups(cache)[1:12].tolist() == cache.groups[1:12].tolist()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    rows = [(f"v{i // 2}.mp4", f"fam{i % 2}:p{i // 4}", i) for i in range(16)]
    return _cache(tmp_path_factory.mktemp("c"), rows)


def _scripted_auc(monkeypatch, aucs: dict[int, float], stop_at: int, where: str = "_train_epoch"):
    """Validation AUCs by epoch (1-based) and a kill (KeyboardInterrupt) at ``stop_at`` in ``where``."""
    done = {"epoch": 0}

    def validate(*_a, **_k):
        done["epoch"] += 1
        return {"auc": aucs[done["epoch"]]}

    real = getattr(train_mod, where)

    def killed(*a, **k):
        if done["epoch"] == (stop_at - 1 if where == "_train_epoch" else stop_at):
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "validate", validate)
    monkeypatch.setattr(train_mod, where, killed)
    return done


def test_a_run_killed_after_a_resume_leaves_the_card_of_its_best_weights(cache_dir, tmp_path, monkeypatch):
    from engines.registry import file_hash

    run = tmp_path / "run"
    train(TrainConfig(**TINY, max_minutes=1e-9), cache_dir, run)  # a --max-minutes stop: card of epoch 1
    first = json.loads((run / "card.json").read_text())["best_val_auc"]
    done = _scripted_auc(monkeypatch, {1: first, 2: first + 0.5}, stop_at=3)
    done["epoch"] = 1
    with pytest.raises(KeyboardInterrupt):  # epoch 2 is better; killed in epoch 3
        train(TrainConfig(**TINY), cache_dir, run)
    card = json.loads((run / "card.json").read_text())
    # Before: card.json still said best epoch 1 while best.safetensors held epoch 2's weights.
    assert card["best_epoch"] == 2 and card["best_val_auc"] == first + 0.5
    assert card["best_sha256"] == file_hash(run / "best.safetensors", None)


def test_card_refuses_weights_written_after_the_record_of_the_run(cache_dir, tmp_path, monkeypatch):
    from scanner.research import card

    monkeypatch.setattr(card, "WEIGHTS", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    run = tmp_path / "run"
    train(TrainConfig(**TINY, max_minutes=1e-9), cache_dir, run)
    first = json.loads((run / "card.json").read_text())["best_val_auc"]
    done = _scripted_auc(monkeypatch, {1: first, 2: first + 0.5}, stop_at=2, where="_save_last")
    done["epoch"] = 1
    with pytest.raises(KeyboardInterrupt):  # killed after epoch 2's export, before its records
        train(TrainConfig(**TINY), cache_dir, run)
    # Before: shipped epoch 2's weights under epoch 1's card (its AUC, best epoch, history).
    with pytest.raises(ValueError, match="not the weights card.json describes"):
        card.write_card(run, "test_model", "", [])
    assert not (tmp_path / "weights" / "test_model.safetensors").exists()


def test_a_run_from_before_the_split_rule_resumes_only_with_split_groups(tmp_path):
    """Checkpoints written before `split` was in the recipe split by the cache's groups: resumed
    with the new default, people would have switched sides mid-run without a word."""
    from engines.errors import DfscanError
    from scanner.research.train_checks import _same_recipe

    old = {"arch": "x", "seed": 0}  # no "split": an earlier run's recipe
    _same_recipe(tmp_path, old, {"arch": "x", "seed": 0, "split": "groups"})
    with pytest.raises(DfscanError, match="split: 'groups' -> 'persons'"):
        _same_recipe(tmp_path, old, {"arch": "x", "seed": 0, "split": "persons"})
