"""Audit of `dfscan scan`'s options, inputs and outputs: wrong answers given without an error."""
from __future__ import annotations

import hashlib
import json

import pytest

from conftest import DATA
from scanner.cli import EXIT_OK, EXIT_USAGE, main
from scanner.config import ConfigError, build_config

COMMON = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]


def test_frames_flag_wins_over_a_config_files_fps(tmp_path):
    """fps wins wherever both are set, so `--frames 16` lost to the file's `fps: 2` without a
    word (flags are to win over the file), and `--frames` given with `--fps` was ignored."""
    cfg = tmp_path / "scan.yaml"
    cfg.write_text("fps: 2\n")
    assert (build_config(cfg, {"frames": 16}).fps, build_config(cfg, {"frames": 16}).frames) == (None, 16)
    assert build_config(cfg, {}).fps == 2.0  # the file alone still samples by rate
    c = tmp_path / "frames.yaml"
    c.write_text("frames: 8\n")
    assert build_config(c, {"fps": 1.0}).fps == 1.0
    with pytest.raises(ConfigError, match="--frames and --fps"):
        build_config(None, {"frames": 16, "fps": 2.0})


def _resume_with(out, capsys, flags: list[str], field: str) -> None:
    """Scan d1 into ``out``, then --resume d1 + d2 with ``flags``: refused naming ``field``,
    ``out`` untouched."""
    assert main(["scan", str(DATA / "d1.mp4"), *COMMON, "--out", str(out)]) == EXIT_OK
    before = out.read_bytes()
    capsys.readouterr()
    rc = main(["scan", str(DATA / "d1.mp4"), str(DATA / "d2.mp4"), *COMMON, *flags,
               "--out", str(out), "--resume"])
    assert rc == EXIT_USAGE
    assert field in capsys.readouterr().err
    assert out.read_bytes() == before


def test_csv_resume_refuses_another_aggregation(tmp_path, capsys):
    """A CSV primary recorded no aggregation (nor precision): --resume with --video-agg max
    appended maxima under means, though a JSONL's rows are refused for it."""
    _resume_with(tmp_path / "r.csv", capsys, ["--video-agg", "max"], "aggregation")


def test_dotdot_through_a_symlinked_folder_scans_the_named_file(tmp_path, monkeypatch):
    """`linkdir/../a.mp4` (a list's `../a.mp4` read through a symlinked folder) is the a.mp4
    beside the link's target, as the system opens it; abspath dropped `linkdir/..` as text and
    scanned (and reported) another a.mp4 in the current folder."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "a.mp4").write_bytes((DATA / "d1.mp4").read_bytes())
    (tmp_path / "a.mp4").write_bytes((DATA / "d2.mp4").read_bytes())  # the wrong one
    (tmp_path / "linkdir").symlink_to(real / "sub")
    (real / "sub" / "list.txt").write_text("../a.mp4\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.jsonl"
    assert main(["scan", "linkdir/list.txt", *COMMON, "--out", str(out)]) == EXIT_OK
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(real / "a.mp4")]
    assert rows[0]["sha256"] == hashlib.sha256((DATA / "d1.mp4").read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_refuses_another_face_search(tmp_path, capsys, suffix):
    """Rows did not record how faces were found: --resume with another --min-face or
    --det-max-side appended scores of other faces (other crops, other faces kept) into one file."""
    out = tmp_path / f"r{suffix}"
    _resume_with(out, capsys, ["--min-face", "40"], "face_search")
    # the same settings resume as before
    assert main(["scan", str(DATA / "d1.mp4"), str(DATA / "d2.mp4"), *COMMON, "--out", str(out), "--resume"]) == 0
