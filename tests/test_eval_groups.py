"""`dfscan eval`'s AUC interval resamples the labelled set's groups (a person, a video, a real and
the fakes made from it), not its files one by one: crops of a few people passed for hundreds of
independent files, and the small-set note counted files. Without groups it is unchanged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scanner.research import stats
from scanner.research.evaluate import binary_metrics, report
from scanner.research.labelled import Item, read_labelled


def _pairs(n_groups=6, copies=40, seed=1):
    """``n_groups`` people, each a real and its fake, every one in ``copies`` near-identical
    crops: labels, scores, groups, and the same set with one crop of each."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(size=n_groups)
    y1 = np.tile([0, 1], n_groups)
    s1 = np.repeat(base, 2) + np.tile([0.0, 0.3], n_groups) * rng.uniform(size=2 * n_groups)
    g1 = np.repeat(np.arange(n_groups), 2)
    return (np.repeat(y1, copies), np.repeat(s1, copies), np.repeat(g1, copies)), (y1, s1, g1)


def test_copies_of_a_few_people_get_their_interval_not_a_files_one():
    """40 crops of each of 6 people (a real and its fake in each group): the group interval is
    that of the 12 crops themselves (the same groups drawn, each file weighted alike); files
    resampled one by one made 480 files of it, an interval a fraction as wide and no note."""
    (y, s, g), (y1, s1, g1) = _pairs()
    crops = stats.group_auc_ci(y, s, g, n=500)
    people = stats.group_auc_ci(y1, s1, g1, n=500)
    assert crops["ci_unit"] == people["ci_unit"] == "group" and crops["n_groups"] == 6
    np.testing.assert_allclose(crops["ci"], people["ci"], atol=1e-12)
    assert crops["ci_note"].startswith("6 group(s) hold the smaller class")
    files = stats.auc_ci(y, s, n=500)
    assert "ci_note" not in files
    assert files["ci"][1] - files["ci"][0] < 0.5 * (crops["ci"][1] - crops["ci"][0])


def test_group_replicates_equal_sklearn_with_sample_weights():
    """Each replicate's AUC is roc_auc_score weighted by how often each file's group was drawn
    (groups of both classes, tied scores across classes)."""
    rng = np.random.default_rng(3)
    g = rng.integers(0, 9, 50)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.normal(size=50) + 0.4 * y, 1)
    _, inv = np.unique(g, return_inverse=True)
    has = np.zeros((inv.max() + 1, 2), bool)
    has[inv, y] = True
    draws = np.concatenate(list(stats._group_draws(has, 40, 5, [0])))
    got = stats._drawn_aucs(y, s, inv, len(has), [draws])
    counts = np.stack([np.bincount(d, minlength=len(has)) for d in draws])[:, inv]
    want = [roc_auc_score(y, s, sample_weight=w) for w in counts]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_draws_of_one_class_are_drawn_again_and_counted():
    """All fakes in one of 4 groups: about a third of the draws miss it and have no AUC."""
    y = np.r_[np.ones(5, int), np.zeros(9, int)]
    s = np.linspace(0, 1, 14)[::-1]
    g = np.r_[np.zeros(5, int), np.repeat([1, 2, 3], 3)]
    got = stats.group_auc_ci(y, s, g, n=300)
    assert got["n_boot"] == 300 and 50 < got["n_redrawn"] < 250, got
    assert got["ci"] == [1.0, 1.0] and got["ci_note"].startswith("1 group(s)")
    m = binary_metrics(y, s, groups=g)
    assert m["auc_ci95_unit"] == "group" and m["auc_ci95_n_redrawn"] > 0 and m["auc_ci95_n_groups"] == 4


def test_group_memory_is_bounded(monkeypatch):
    """A smaller chunk budget draws the same replicates and gives the same interval."""
    (y, s, g), _ = _pairs(n_groups=12, copies=5)
    ci = stats.group_auc_ci(y, s, g, n=200)
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 2 * len(y))
    assert stats.group_auc_ci(y, s, g, n=200) == ci


def test_without_groups_the_interval_is_the_files_as_before():
    """Every file its own group: exactly auc_ci's stratified file bootstrap, unit 'file'."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(7, int), np.zeros(30, int)]
    s = rng.normal(size=37) + y
    before = stats.auc_ci(y, s, n=1000)
    got = stats.group_auc_ci(y, s, [f"f{i}" for i in range(37)], n=1000)
    assert got == {**before, "ci_unit": "file"} and "ci_note" in got
    m = binary_metrics(y, s, groups=np.arange(37))
    assert m["auc_ci95"] == before["ci"] and m["auc_ci95_unit"] == "file"
    assert m["auc_ci95_note"] == before["ci_note"] and "auc_ci95_n_groups" not in m


def test_one_class_set_has_no_group_interval():
    got = stats.group_auc_ci([1, 1, 1], [0.1, 0.2, 0.3], ["a", "a", "b"], n=50)
    assert got == {"auc": None, "ci": None, "n_boot": 0, "ci_unit": "group"}


def _manifest(tmp_path, with_groups: bool):
    (tmp_path / "x").mkdir()
    lines = ["path,label,subset" + (",group" if with_groups else "")]
    for k in range(40):
        (tmp_path / "x" / f"{k}.png").write_bytes(b"")
        lines.append(f"x/{k}.png,{k % 2},s{k % 4 // 2}" + (f",p{k // 8}" if with_groups else ""))
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    return read_labelled(tmp_path / "m.csv")


def test_eval_report_resamples_the_manifest_groups_overall_and_per_subset(tmp_path):
    """5 people of 8 crops (4 real, 4 fake): overall and each subset's interval resample the 5
    people and say so; their notes count people, not the 20-40 crops. (A real and a fake of one
    person scored alike make the groups' interval narrower than the files', like a paired test.)"""
    items = _manifest(tmp_path, with_groups=True)
    rng = np.random.default_rng(2)
    person = rng.normal(size=5)
    scores = {i: float(person[i // 8] + 0.5 * it.label + 0.1 * rng.normal()) for i, it in enumerate(items)}
    r = report(items, scores)
    for m in [r["overall"], *r["subsets"].values()]:
        assert m["auc_ci95_unit"] == "group" and m["auc_ci95_n_groups"] == 5
        assert m["auc_ci95_note"].startswith("5 group(s) hold the smaller class")
    y = np.array([it.label for it in items])
    s = np.array([scores[i] for i in range(len(items))])
    g = np.array([it.group for it in items])
    assert r["overall"]["auc_ci95"] == stats.group_auc_ci(y, s, g, n=1000)["ci"]
    sub = np.array([it.subset == "s0" for it in items])
    assert r["subsets"]["s0"]["auc_ci95"] == stats.group_auc_ci(y[sub], s[sub], g[sub], n=1000)["ci"]


def test_eval_report_without_a_group_column_is_unchanged(tmp_path):
    """A manifest without groups: every file is its own group (its path), the interval is the
    file bootstrap's, bit for bit, overall and per subset."""
    items = _manifest(tmp_path, with_groups=False)
    rng = np.random.default_rng(2)
    scores = {i: float(rng.normal() + it.label) for i, it in enumerate(items)}
    r = report(items, scores)
    y = np.array([it.label for it in items])
    s = np.array([scores[i] for i in range(len(items))])
    assert r["overall"]["auc_ci95"] == stats.auc_ci(y, s, n=1000)["ci"]
    assert r["overall"]["auc_ci95_unit"] == "file" and "auc_ci95_note" not in r["overall"]
    sub = np.array([it.subset == "s1" for it in items])
    assert r["subsets"]["s1"]["auc_ci95"] == stats.auc_ci(y[sub], s[sub], n=1000)["ci"]


def test_folder_groups_a_fake_with_its_real(tmp_path):
    """real/a.png with fake/a_blend.png and fake/a_swap.png: one group of the folder reader's,
    resampled whole; a real without fakes is its own group."""
    for sub in ("real", "fake"):
        (tmp_path / sub).mkdir()
    for k in range(12):
        (tmp_path / "real" / f"p{k}.png").write_bytes(b"")
        if k < 9:
            (tmp_path / "fake" / f"p{k}_blend.png").write_bytes(b"")
            (tmp_path / "fake" / f"p{k}_swap.png").write_bytes(b"")
    items = read_labelled(tmp_path)
    rng = np.random.default_rng(0)
    scores = {i: float(rng.uniform() + 0.3 * it.label) for i, it in enumerate(items)}
    m = report(items, scores)["overall"]
    assert m["auc_ci95_unit"] == "group" and m["auc_ci95_n_groups"] == 12
    assert m["auc_ci95_note"].startswith("9 group(s) hold the smaller class")


@pytest.mark.parametrize("n_groups", [1, 2])
def test_a_few_groups_of_both_classes_still_give_an_interval(n_groups):
    """Groups of both classes are never redrawn; one group holding everything: every replicate
    is the set itself."""
    y = np.tile([0, 1], 6)
    s = np.linspace(0, 1, 12)
    got = stats.group_auc_ci(y, s, np.arange(12) * n_groups // 12, n=100)
    assert got["n_redrawn"] == 0 and got["ci_note"].startswith(f"{n_groups} group(s)")
    if n_groups == 1:
        assert got["ci"] == pytest.approx([got["auc"], got["auc"]])


def test_items_each_in_its_own_group_are_files():
    a, b = Item(Path("/x/a.png"), 1, "/x/a.png"), Item(Path("/x/b.png"), 0, "/x/b.png")
    assert report([a, b], {0: 0.9, 1: 0.1})["overall"]["auc_ci95_unit"] == "file"
