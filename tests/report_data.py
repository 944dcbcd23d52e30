"""Real-footage scan results shared by the report tests (not a test module)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from conftest import DATA
from scanner.cli import EXIT_INPUT_ERROR, main

CLIPS = ("d1.mp4", "d2.mp4", "d18.mp4")
ERROR_INPUT = "notes.mp4"  # a text file renamed .mp4


def scan_corpus(root: Path, detector: str = "test_adm", frames: int = 8, clips=CLIPS) -> Path:
    """Scan copies of the bundled clips plus one non-video into ``root/results.jsonl``."""
    vids = root / "videos"
    vids.mkdir(parents=True)
    for name in clips:
        shutil.copy(DATA / name, vids / name)
    (vids / ERROR_INPUT).write_text("this is not a video\n" * 40)
    out = root / "results.jsonl"
    code = main(["scan", str(vids), "--out", str(out), "--detector", detector, "--frames", str(frames),
                 "--no-progress", "--workers", "1"])
    assert code == EXIT_INPUT_ERROR  # the text file is an error row, the scan went on
    return out


def sections(html: str) -> list[str]:
    """The per-video ``<details>`` sections of a report."""
    return re.findall(r'<details class="video .*?</details>', html, flags=re.S)
