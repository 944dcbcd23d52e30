"""A folder walk scans every video it can tell is one and says what it left out.

`dfscan scan FOLDER` took files by a short extension list and skipped the rest without
a word: a video saved as ``evidence_0001`` (carved, downloaded) or ``clip.MXF`` had no
row, and the scan exited 0 as if the folder had been scanned."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess

import pytest
from conftest import DATA, make_video

from scanner.cli import EXIT_OK, main

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg CLI")

SCAN = ["--detector", "test_tiny", "--frames", "1", "--workers", "1", "--no-progress"]
# name -> (muxer, encoder); copies: other extensions of the same bytes
CLIPS = {"a.mxf": ("mxf", "mpeg2video"), "a.vob": ("vob", "mpeg2video"), "a.3g2": ("3g2", "mpeg4"),
         "a.f4v": ("f4v", "libx264"), "a.qt": ("mov", "mpeg4"), "a.asf": ("asf", "wmv2"),
         "a.m2v": ("mpeg2video", "mpeg2video"), "a.tod": ("mpegts", "mpeg2video"),
         "a.divx": ("avi", "mpeg4"), "a.ogm": ("ogg", "libtheora"), "a.h264": ("h264", "libx264"),
         "a.hevc": ("hevc", "libx265"), "a.ivf": ("ivf", "libvpx"), "a.mjpeg": ("mjpeg", "mjpeg")}
COPIES = {"a.mod": "a.vob", "a.xvid": "a.divx", "a.264": "a.h264", "a.h265": "a.hevc", "a.265": "a.hevc",
          "B.MXF": "a.mxf"}


def _scan(tmp_path, *inputs) -> tuple[int, dict, str]:
    out = tmp_path / "rows.jsonl"
    rc = main(["scan", *map(str, inputs), "--out", str(out), *SCAN])
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return rc, {r["path"]: r for r in rows}, out


def _encoders() -> str:
    return subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout


def test_every_added_video_extension_is_walked_and_scanned(tmp_path, capsys):
    # Containers FFmpeg reads under the format whitelist but missing from the extension list
    # (MXF, DVD VOB and camcorder .mod/.tod, .qt, .f4v, .3g2, .asf, DivX/Xvid AVI, OGM, raw
    # DVR exports .h264/.264/.hevc, .m2v, .ivf, .mjpeg): a folder scan skipped them silently.
    folder, have = tmp_path / "in", _encoders()
    folder.mkdir()
    for name, (fmt, codec) in CLIPS.items():
        if f" {codec} " not in have:  # an FFmpeg build without this external encoder
            continue
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(DATA / "d1.mp4"), "-an", "-frames:v", "4",
                        "-vf", "scale=64:64", "-c:v", codec, "-f", fmt, str(folder / name)], check=True)
    for name, src in COPIES.items():
        if (folder / src).exists():
            shutil.copy(folder / src, folder / name)
    made = sorted(p.name for p in folder.iterdir())
    assert len(made) >= 15  # those FFmpeg encodes itself, and their copies
    rc, rows, _ = _scan(tmp_path, folder)
    assert rc == EXIT_OK and sorted(p.rsplit("/", 1)[1] for p in rows) == made
    assert not [(p, r["error"]) for p, r in rows.items() if r["verdict"] == "error"]
    assert "not scanned" not in capsys.readouterr().out


def test_a_folder_scan_says_what_it_skipped_and_scans_extensionless_videos(tmp_path, capsys):
    folder = tmp_path / "evidence"
    (folder / ".git" / "objects").mkdir(parents=True)
    shutil.copy(DATA / "d1.mp4", folder / "d1.mp4")
    shutil.copy(DATA / "d1.mp4", folder / "evidence_0001")  # a carved video: no extension
    shutil.copy(DATA / "multiface.jpg", folder / "multiface.jpg")
    for name in ("notes.txt", "readme", "clip.xyz", "bad\x1b[2Jname.bin", ".DS_Store", "d1.srt",
                 ".git/objects/0123abcd"):
        (folder / name).write_text("not a video\n")
    rc, rows, _ = _scan(tmp_path, folder)
    assert rc == EXIT_OK and sorted(rows) == [str(folder / "d1.mp4"), str(folder / "evidence_0001")]
    assert rows[str(folder / "evidence_0001")]["verdict"] != "error"
    said = [line for line in capsys.readouterr().out.splitlines() if "not scanned" in line]
    # Counted: no, unknown and familiar non-video extensions; not: hidden files, files in
    # hidden folders, sidecars. Examples: the likely videos first, escaped for the terminal.
    assert len(said) == 1 and said[0].startswith("5 file(s) in the folders given not scanned")
    examples = f"e.g. {folder}/bad\\x1b[2Jname.bin, {folder}/clip.xyz, {folder}/readme;"
    assert examples in said[0] and "\x1b" not in said[0]
    assert "name it on the command line or in a .txt list file" in said[0]
    # ... and naming one does scan it: a not_video row, not silence.
    rc, rows, _ = _scan(tmp_path, folder / "clip.xyz")
    assert rows[str(folder / "clip.xyz")]["error"]["kind"] == "not_video"


def test_extensionless_files_are_sniffed_and_nothing_else_is_opened(tmp_path, monkeypatch):
    import os

    from scanner.folder_walk import EXAMPLES, Skipped
    from scanner.sources import expand_inputs

    for fmt, codec in (("matroska", "libx264"), ("avi", "mpeg4"), ("mpegts", "mpeg2video"),
                       ("mpeg", "mpeg2video"), ("asf", "wmv2"), ("flv", "flv"), ("mp4", "mpeg4")):
        make_video(tmp_path / f"v_{fmt}", frames=2, size=(32, 32), codec=codec, fmt=fmt, options={})
    (tmp_path / "heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")  # a photo
    (tmp_path / "text").write_text("plain text\n" * 1000)
    os.mkfifo(tmp_path / "fifo")  # opening it would block the walk forever
    (tmp_path / "link").symlink_to(tmp_path / "v_mp4")  # followed by nothing
    for i in range(50):
        (tmp_path / f"n{i}.dat").write_text("x")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(os.path.basename(p)) or real_open(p, *a, **k))
    skipped = Skipped()
    found = expand_inputs([str(tmp_path)], skipped=skipped)
    assert [p.name for p in found] == sorted(f"v_{f}" for f in ("matroska", "avi", "mpegts", "mpeg", "asf",
                                                                  "flv", "mp4"))
    assert sorted(opened) == sorted(["heic", "text", *(p.name for p in found)])  # a few KB each
    assert skipped.count == 54 and len(skipped.examples) == EXAMPLES
    assert [p.name for p in skipped.examples] == ["fifo", "heic", "link"]


def test_labelled_folders_are_walked_as_a_scan_walks_them(tmp_path, caplog):
    # `dfscan eval/probe fit/separability` read real/ and fake/ with a list of their own
    # (no .mts .m2ts .dv .y4m, no extensionless videos) and left the rest out silently.
    from scanner.research.labelled import read_labelled

    for sub in ("real", "fake"):
        (tmp_path / sub).mkdir()
    shutil.copy(DATA / "d1.mp4", tmp_path / "real" / "a.mp4")
    make_video(tmp_path / "real" / "cam.mts", frames=2, size=(32, 32), fmt="mpegts")
    shutil.copy(DATA / "d1.mp4", tmp_path / "fake" / "download")
    shutil.copy(DATA / "multiface.jpg", tmp_path / "fake" / "still.jpg")
    (tmp_path / "fake" / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING):
        items = read_labelled(tmp_path)
    assert [(i.path.relative_to(tmp_path).as_posix(), i.label, i.is_image) for i in items] == [
        ("real/a.mp4", 0, False), ("real/cam.mts", 0, False), ("fake/download", 1, False),
        ("fake/still.jpg", 1, True)]
    said = [r.getMessage() for r in caplog.records if "not scanned" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("1 file(s)") and "notes.txt" in said[0]
    assert "CSV manifest" in said[0]
