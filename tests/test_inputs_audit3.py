"""Audit of how `dfscan scan` expands patterns into inputs: every matched video one row, and a
pattern through a tree holding symbolic links back up ends instead of hanging the scan."""
from __future__ import annotations

import glob
import json
import os
import shutil
import threading

from conftest import DATA
from scanner.cli import EXIT_OK, main
from scanner.sources import expand_inputs

COMMON = ["--detector", "test_tiny", "--frames", "4", "--no-progress", "--workers", "1"]


def _expand_within(items: list[str], seconds: float = 20.0) -> list:
    """expand_inputs(items) run in a daemon thread: a hang fails the test instead of the run."""
    box: list = []
    t = threading.Thread(target=lambda: box.append(expand_inputs(items)), daemon=True)
    t.start()
    t.join(seconds)
    assert box, f"expanding {items} did not end within {seconds} s"
    return box[0]


def test_a_pattern_through_symlink_loops_ends_and_scans_each_video_once(tmp_path):
    """'w/**/*.mp4' with w/s1/up and w/s2/up linking back to w: glob's ** followed each link
    to the 40-link limit, every level doubling the names (2**40 of them): the scan hung
    before its first row (killed after 20 s, no output). One link made 40 names per video."""
    w = tmp_path / "w"
    for sub in ("s1", "s2"):
        (w / sub).mkdir(parents=True)
        (w / sub / "up").symlink_to("..")
    shutil.copy(DATA / "d1.mp4", w / "a.mp4")
    shutil.copy(DATA / "d2.mp4", w / "s1" / "b.mp4")
    assert _expand_within([str(w / "**" / "*.mp4")]) == [w / "a.mp4", w / "s1" / "b.mp4"]
    assert _expand_within([str(w / "**" / "b.mp4")]) == [w / "s1" / "b.mp4"]
    out = tmp_path / "r.jsonl"
    assert main(["scan", str(w / "**" / "*.mp4"), *COMMON, "--out", str(out)]) == EXIT_OK
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(w / "a.mp4"), str(w / "s1" / "b.mp4")]


def test_patterns_match_what_glob_matches_in_a_tree_without_loops(tmp_path, monkeypatch):
    """The walk that replaced glob.glob matches the same names (hidden names, ``**`` at either
    end, brackets, a trailing separator for folders only, ``..``, upper-case extensions); only
    a second name of one folder through a symlink is not repeated (one input either way)."""
    from scanner.sources import _pattern_walk

    for n in ("a/x.mp4", "a/b/y.mp4", "a/b/c/z.MP4", ".h/x/q.mp4", ".top.mp4", "d1/.hid.mp4",
              "e/k [1].mp4", "r.mp4", "br[1]/m.mp4"):
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).touch()
    (tmp_path / "dang.mp4").symlink_to("nowhere.mp4")
    monkeypatch.chdir(tmp_path)
    patterns = ["**", "**/*.mp4", "*/*.mp4", "a/**", "a/**/", "*/", "**/", "a/b/*", "**/y.mp4",
                "a/*/c/*", ".h/**", "**/.hid.mp4", "**/.*", "*", "e/*", "br[[]1]/*", "a/**/b/**/*.mp4",
                "./a/*.mp4", f"../{tmp_path.name}/a/*.mp4", f"{tmp_path}/**/*.mp4", "a/x.mp[4]",
                "dang.mp[4]", "**/*.MP4", "nope/*", "a/b/?/*"]
    for pattern in patterns:
        want = sorted(os.path.normpath(m) for m in glob.glob(pattern, recursive=True))
        got = sorted(os.path.normpath(m) for m in _pattern_walk(pattern)[0])
        assert got == want, pattern
    (tmp_path / "e" / "la").symlink_to(tmp_path / "a")  # glob: e/la/x.mp4 too, the same file
    assert [str(p) for p in _pattern_walk("**/x.mp4")[0]] == ["a/x.mp4"]
