"""Audit of how `dfscan scan` turns its arguments into inputs and rows: every input one row,
every failure a specific reason, nothing scanned that was not named."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import DATA, make_video
from scanner.cli import EXIT_INPUT_ERROR, EXIT_USAGE, main
from scanner.config import ConfigError
from scanner.decode import FrameSampler, VideoError
from scanner.sources import expand_inputs
from test_edit_lists_multi import _player_ids, _with_edits, needs_ffmpeg

COMMON = ["--detector", "test_tiny", "--frames", "2", "--no-progress", "--workers", "1"]


def _rows(out) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}


def test_empty_path_argument_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, capsys):
    """`dfscan scan "$DIR"` with DIR unset: Path('') is '.', so the whole current folder was
    scanned (exit 0, rows for files nobody named) and the empty name got no row."""
    shutil.copy(DATA / "d1.mp4", tmp_path / "unrelated.mp4")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="empty PATH"):
        expand_inputs([""])
    out = tmp_path / "r.jsonl"
    assert main(["scan", "", str(DATA / "d2.mp4"), *COMMON, "--out", str(out)]) == EXIT_USAGE
    assert "empty PATH" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("text, encoding", [
    ("clip.mp4\n", "utf-16"),  # Windows PowerShell's `dir -Name > list.txt` writes UTF-16LE
    ("clip.mp4\nbad\0name.mp4\n", "utf-8"),
])
def test_list_with_a_nul_byte_is_one_error_line_not_a_traceback(tmp_path, capsys, text, encoding):
    """A NUL in a list's line reached os.path.realpath, whose ValueError ended the scan in a
    traceback (every error is to be one line)."""
    shutil.copy(DATA / "d1.mp4", tmp_path / "clip.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text(text, encoding=encoding)
    out = tmp_path / "r.jsonl"
    assert main(["scan", str(lst), *COMMON, "--out", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: line ") and "NUL byte" in err and "UTF-8" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("elst") / "src.mp4", frames=40, gop=12)


@needs_ffmpeg
@pytest.mark.parametrize("edits", [[(50, 10, 1)], [(0, 0, 1)]])  # starts past the end; keeps 0 frames
def test_edit_list_showing_no_frame_is_no_frames_not_internal(clip, tmp_path, edits):
    """An edit list that shows none of the frames (FFmpeg plays none): the sampler ended in
    ValueError 'max() arg is an empty sequence', an `internal` row without a reason."""
    path = _with_edits(clip, tmp_path / "none.mp4", edits)
    assert _player_ids(path) == []
    with pytest.raises(VideoError, match="edit list") as e:
        list(FrameSampler(path, frames=4))
    assert e.value.kind == "no_frames"
    out = tmp_path / "r.jsonl"
    assert main(["scan", str(path), *COMMON, "--out", str(out)]) == EXIT_INPUT_ERROR
    assert _rows(out)[str(path)]["error"]["kind"] == "no_frames"


def test_awkward_names_and_file_kinds_each_get_one_row(tmp_path):
    """Names with a newline, a tab, non-UTF-8 bytes or an upper-case extension, an
    extensionless video, a FIFO, a zero-byte file, a dangling link and a link loop: one row
    each, with the reason; a link to a file named before is scanned once."""
    root = tmp_path / "root"
    root.mkdir()
    videos = ["new\nline.mp4", "tab\tx.mp4", "UPPER.MP4", "evidence_0001", "-dash.mp4"]
    for name in videos:
        shutil.copy(DATA / "d1.mp4", root / name)
    shutil.copy(DATA / "d1.mp4", os.path.join(os.fsencode(root), b"bad\xff.mp4"))
    (root / "zero.mp4").touch()
    os.mkfifo(root / "fifo.mp4")
    (root / "dangling.mp4").symlink_to("nowhere.mp4")
    (root / "loop1.mp4").symlink_to("loop2.mp4")
    (root / "loop2.mp4").symlink_to("loop1.mp4")
    (root / "link.mp4").symlink_to(root / "UPPER.MP4")
    (root / "notes").write_text("not a video")  # extensionless, not a video: counted, no row
    out = tmp_path / "r.jsonl"
    assert main(["scan", str(root / "UPPER.MP4"), str(root), *COMMON, "--out", str(out)]) == EXIT_INPUT_ERROR
    rows = _rows(out)
    want = {os.fsdecode(os.path.join(os.fsencode(root), b"bad\xff.mp4")), *(str(root / n) for n in videos)}
    assert {p for p, r in rows.items() if r["verdict"] != "error"} == want
    errors = {os.path.basename(p): r["error"]["kind"] for p, r in rows.items() if r["verdict"] == "error"}
    assert errors == {"zero.mp4": "empty_file", "fifo.mp4": "not_video", "dangling.mp4": "not_found",
                      "loop1.mp4": "not_found", "loop2.mp4": "not_found"}
    assert len(out.read_text().splitlines()) == len(want) + len(errors)  # link.mp4: no second row


def test_missing_file_named_with_brackets_gets_its_not_found_row(tmp_path, capsys):
    """`Interview [2019].mp4` moved away: glob read it as a pattern matching nothing, so it got
    a warning line, no row, and the scan exited 0 on the other inputs."""
    shutil.copy(DATA / "d1.mp4", tmp_path / "Talk [2018].mp4")
    missing = tmp_path / "Interview [2019].mp4"
    assert expand_inputs([str(missing)]) == [missing]
    # a bracket pattern that matches is still a pattern, one with '*' that matches nothing too
    assert expand_inputs([str(tmp_path / "Talk [[]2018].mp4")]) == [tmp_path / "Talk [2018].mp4"]
    unmatched: list[str] = []
    assert expand_inputs([str(tmp_path / "Talk [0-9]*.mp4")], unmatched=unmatched) == []
    assert unmatched == [str(tmp_path / "Talk [0-9]*.mp4")]
    assert expand_inputs([str(tmp_path / "Talk [2]018].mp4")]) == [tmp_path / "Talk [2]018].mp4"]
    out = tmp_path / "r.jsonl"
    rc = main(["scan", str(missing), str(DATA / "d2.mp4"), *COMMON, "--out", str(out)])
    rows = _rows(out)
    assert rows[str(missing)]["error"]["kind"] == "not_found"
    assert rc == EXIT_INPUT_ERROR and len(rows) == 2


def test_name_too_long_is_not_found_and_an_empty_list_is_said(tmp_path, capsys):
    """A name over the system's limit got an `internal` row quoting the path twice; a list
    file naming nothing was passed over without a word (an empty folder is said)."""
    long = tmp_path / ("x" * 300 + ".mp4")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    out = tmp_path / "r.jsonl"
    rc = main(["scan", str(long), str(empty), str(DATA / "d2.mp4"), *COMMON, "--out", str(out)])
    rows = _rows(out)
    assert len(rows) == 2 and rc == EXIT_INPUT_ERROR
    err = rows[str(long)]["error"]
    assert err["kind"] == "not_found" and "longer than this system allows" in err["message"]
    assert err["message"].count("x" * 300) == 1
    assert "empty.txt: no video file found there" in capsys.readouterr().out.replace("\n", "")
