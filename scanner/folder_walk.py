"""Which files of a folder are taken as videos, and a count of those that are not.

One rule for every folder walk (``dfscan scan`` and the labelled sets of ``eval``,
``probe fit``, ``separability``): a file is a video when its extension is one of
:data:`scanner.decode.VIDEO_EXTENSIONS`, or when it has no extension at all and its first
bytes are those of a video container (:func:`sniff_video`): carved and downloaded files
(``evidence_0001``, ``videoplayback``) often have no extension, and skipping them left a
forensic user no sign that they were never scanned.

Every other file is counted in :class:`Skipped` (the count and three example names, never
the whole list), so the caller can say how many were left out and how to scan them anyway,
except files nobody expects to be scanned, which would only drown that line:

* hidden files (``.DS_Store``, ``._clip.mp4`` without a video extension) and any file
  under a hidden folder (``.git`` objects, ``.Trash-1000``, ``.thumbnails``): application
  and system data; a file there *with* a video extension is still scanned, as before;
* camera, subtitle and disc sidecars (:data:`SIDECAR_SUFFIXES`): they describe a video.

Examples prefer files with no or an unfamiliar extension (likely videos) over images,
audio and documents (:data:`FAMILIAR_NOT_VIDEO`), which are counted all the same.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Iterator

from .decode import VIDEO_EXTENSIONS

# Files that describe a video: camera metadata and proxies (.xmp .thm .lrv .lrf .aae, Sony
# .xml), subtitles, checksums, DVD/AVCHD/Blu-ray navigation, Thumbs.db, desktop.ini.
SIDECAR_SUFFIXES = frozenset(
    ".xmp .thm .lrv .lrf .aae .xml .srt .vtt .ass .ssa .sub .idx .sbv .nfo .md5 .sha1 .sha256 .sfv "
    ".ifo .bup .cpi .mpl .bdm .bdmv .clpi .mpls .db .ini".split())
FAMILIAR_NOT_VIDEO = frozenset(
    ".jpg .jpeg .png .gif .bmp .tif .tiff .webp .heic .heif .dng .cr2 .nef .arw .mp3 .wav .m4a .aac "
    ".flac .ogg .opus .wma .txt .pdf .doc .docx .rtf .odt .xls .xlsx .csv .json .jsonl .html .htm "
    ".md .log .zip .7z .rar .tar .gz".split())
SNIFF_BYTES = 1024  # enough for four MPEG-TS packets; every other signature is at the start
EXAMPLES = 3

_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_MXF = bytes.fromhex("060e2b34020501010d010201")  # partition pack key
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
# ISO BMFF brands of stills and audio (HEIF/AVIF photos, iTunes audio): not videos.
_NOT_VIDEO_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis",
                     b"M4A ", b"M4B ", b"M4P ", b"crx ", b"jp2 ")


class Skipped:
    """How many files a walk left out as not video, and up to :data:`EXAMPLES` of them."""

    def __init__(self) -> None:
        self.count = 0
        self._likely: list[Path] = []  # no or an unfamiliar extension: could be a video
        self._other: list[Path] = []

    def add(self, path: Path) -> None:
        if path.name.startswith(".") or path.suffix.lower() in SIDECAR_SUFFIXES:
            return
        self.count += 1
        keep = self._other if path.suffix.lower() in FAMILIAR_NOT_VIDEO else self._likely
        if len(keep) < EXAMPLES:
            keep.append(path)

    @property
    def examples(self) -> list[Path]:
        return (self._likely + self._other)[:EXAMPLES]


def sniff_video(path: Path) -> bool:
    """Whether the regular file ``path`` starts like a video container.

    Only called for files without an extension, reads :data:`SNIFF_BYTES` at most and
    follows nothing: a symbolic link, FIFO or device is no video here (opening a FIFO
    would block the walk); name it explicitly to scan it.
    """
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            head = os.read(fd, SNIFF_BYTES)
        finally:
            os.close(fd)
    except OSError:  # unreadable: skipped and counted, naming it gives a row that says why
        return False
    return _video_head(head)


def _video_head(head: bytes) -> bool:
    if head[4:8] in _ISO_BOXES:
        return not (head[4:8] == b"ftyp" and head[8:12] in _NOT_VIDEO_BRANDS)
    if head[:4] == b"RIFF":
        return head[8:12] in (b"AVI ", b"AVIX")
    starts = (b"\x1a\x45\xdf\xa3", _ASF, _MXF, b"FLV\x01", b"\x00\x00\x01\xba", b"YUV4MPEG2 ")
    return head.startswith(starts) or _mpegts(head)


def _mpegts(head: bytes) -> bool:
    """Four sync bytes 188 bytes apart (MPEG-TS), or 192 after a 4-byte stamp (M2TS)."""
    return any(len(head) >= first + 3 * step + 1 and all(head[first + i * step] == 0x47 for i in range(4))
               for first, step in ((0, 188), (4, 192)))


def is_video_file(path: Path, also: frozenset[str] = frozenset()) -> bool:
    """A video by extension (or one of ``also``), or an extensionless file that sniffs as one."""
    suffix = path.suffix.lower()
    if suffix:
        return suffix in VIDEO_EXTENSIONS or suffix in also
    return not path.name.startswith(".") and sniff_video(path)


def walk_videos(folder: Path, skipped: Skipped | None = None, also: frozenset[str] = frozenset(),
                unlisted: Callable[[OSError], None] | None = None) -> Iterator[Path]:
    """Video files under ``folder`` (recursive, sorted per folder; see module doc).

    ``also``: more extensions to take (a labelled set's images); ``unlisted`` is called with
    the error of a folder that cannot be listed (os.walk's ``onerror``), in walk order.
    """
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlisted):
        dirnames.sort()
        hidden = _hidden_below(Path(dirpath), folder)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            suffix = path.suffix.lower()
            if suffix in VIDEO_EXTENSIONS or suffix in also:
                yield path
            elif hidden:
                continue  # app/system data: neither sniffed nor counted
            elif not suffix and not name.startswith(".") and sniff_video(path):
                yield path
            elif skipped is not None:
                skipped.add(path)


def _hidden_below(dirpath: Path, top: Path) -> bool:
    """Whether a folder between ``top`` (excluded: the user named it) and ``dirpath`` is hidden."""
    try:
        rel = dirpath.relative_to(top)
    except ValueError:
        return False
    return any(part.startswith(".") for part in rel.parts)


def skipped_line(skipped: Skipped, how: str, escape: Callable[[str], str] = str) -> str | None:
    """One line on the files ``skipped`` counted, None when there were none.

    ``how``: how to scan such a file anyway; ``escape`` makes a name safe to print."""
    if not skipped.count:
        return None
    names = ", ".join(escape(str(p)) for p in skipped.examples)
    return (f"{skipped.count} file(s) in the folders given not scanned, not video by their extension "
            f"(or by their first bytes when they have none): e.g. {names}; {how}")
