"""Labelled media sets for `probe fit`, `separability`, `eval` and `synth`.

Two ways to name a labelled set:

* a folder with ``real/`` and ``fake/`` sub-folders (searched recursively for
  videos and images, by the rule ``dfscan scan`` walks folders by:
  :mod:`scanner.folder_walk`; the files left out are counted in one warning). Groups
  come from the names, paths taken relative to ``real/`` or ``fake/`` without the
  extension: a real file is its own group, except that ``dfscan synth``'s chips of one
  source (``clip_f00008_00001``: ``{source}_f{frame}_{n}``) are one group; a fake whose name is a
  real's, or a real's followed by ``_`` and more (``a_blend``, FaceForensics++'s ``000_003``,
  synth's ``{chip}_global``), in the same sub-folder, is in that real's group (the longest
  such real name wins), so a real clip and the fakes made from it never straddle a split;
  any other fake is its own group. If the folder holds a ``manifest.csv`` (as ``dfscan
  synth`` writes), that manifest is used instead.
* a CSV manifest with a header: ``path,label`` and optional ``group``,
  ``subset`` and ``landmarks`` columns. ``label`` is ``real``/``fake`` or
  ``0``/``1`` (1 = fake); ``group`` keeps related rows (frames of one video, a
  real face and its self-blended fake, one identity) on the same side of a
  train/held-out split; ``subset`` (e.g. manipulation method or source dataset)
  splits the evaluation report; ``landmarks`` holds 10 numbers
  ``x0 y0 ... x4 y4`` (5-point face landmarks in image pixels) for images whose
  face needs no detection. Relative paths are relative to the CSV's folder.
"""
from __future__ import annotations

import csv
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from engines.errors import DfscanError

from ..folder_walk import Skipped, skipped_line, walk_videos
from ..terminal import terminal_safe

IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .png .bmp .webp".split())
LABELS = {"real": 0, "0": 0, "fake": 1, "1": 1}


class DatasetError(DfscanError):
    """A labelled set could not be read (message names the file/row)."""


@dataclass
class Item:
    """One labelled input file.

    Attributes:
        path: video or image file.
        label: 0 = real, 1 = fake.
        group: split group (rows sharing it never straddle train/held-out).
        subset: report subset name ('' when none).
        landmarks: ``float32 (5, 2)`` (x, y) image pixels, or None (detect faces).
    """

    path: Path
    label: int
    group: str
    subset: str = ""
    landmarks: np.ndarray | None = None

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() in IMAGE_EXTENSIONS


def read_labelled(source: str | Path) -> list[Item]:
    """Items of a ``real/`` + ``fake/`` folder or of a CSV manifest (see module doc)."""
    source = Path(source)
    if source.is_dir():
        manifest = source / "manifest.csv"
        items = read_manifest(manifest) if manifest.is_file() else _read_folder(source)
    elif source.is_file():
        items = read_manifest(source)
    else:
        raise DatasetError(f"labelled set not found: {source}")
    if not items:
        raise DatasetError(f"{source}: no labelled videos or images found")
    refuse_duplicates(items, source)
    return items


def refuse_duplicates(items: list[Item], source: Path) -> None:
    """One file listed twice would be counted twice in every metric (or, with two labels,
    be both real and fake); one image with two landmark sets is two faces, and allowed."""
    labels: dict[object, Item] = {}
    samples: set[tuple] = set()
    for it in items:
        key = _file_key(it.path)
        first = labels.setdefault(key, it)
        if first.label != it.label:
            raise DatasetError(f"{source}: {it.path} is labelled both real and fake (also listed as {first.path})")
        sample = (key, None if it.landmarks is None else it.landmarks.tobytes())
        if sample in samples:
            raise DatasetError(f"{source}: {it.path} is listed twice (as {first.path} too): "
                               "it would be counted twice")
        samples.add(sample)


def _file_key(path: Path) -> object:
    """What makes two names one file: its device and inode. A resolved path missed a hard
    link (``cp -al`` sets, deduplicated stores), and so one video could be both real and fake,
    as it missed two spellings one case- or normalisation-insensitive file system folds."""
    try:
        st = path.stat()
    except OSError:  # gone since it was listed: its name is all there is
        return path.resolve()
    # inode 0: a file system without inode numbers (some FUSE/SMB mounts), where it names nothing
    return (st.st_dev, st.st_ino) if st.st_ino else path.resolve()


def _read_folder(root: Path) -> list[Item]:
    items: list[Item] = []
    skipped = Skipped()
    for name, label in (("real", 0), ("fake", 1)):
        sub = root / name
        if not sub.is_dir():
            raise DatasetError(f"{root}: expected sub-folders real/ and fake/ (or a CSV manifest)")
        for p in sorted(walk_videos(sub, skipped, also=IMAGE_EXTENSIONS)):  # sorted: as rglob was
            if p.is_file():
                items.append(Item(p, label, group=str(p.relative_to(root).with_suffix(""))))
    _group_by_name(items, root)
    line = skipped_line(skipped, "to use one anyway, list it in a CSV manifest (path,label)", terminal_safe)
    if line:  # a set missing files it seems to hold would be measured without a word
        logging.getLogger(__name__).warning("%s", line)
    return items


# dfscan synth's chip names: {source stem}_f{frame:05d}_{pair:05d}
SYNTH_CHIP = re.compile(r"^(?P<source>.+)_f\d{5,}_\d{5,}$")


def _group_by_name(items: list[Item], root: Path) -> None:
    """Regroup a ``real/`` + ``fake/`` folder's items by name (rule: module doc). Merging groups
    only ever costs split granularity; one person on both sides flatters held-out numbers."""
    def name(it: Item) -> tuple[Path, str]:  # (sub-folder, name) under real/ or fake/
        rel = it.path.relative_to(root / ("fake" if it.label else "real")).with_suffix("")
        return rel.parent, rel.name

    reals: dict[tuple[Path, str], str] = {}
    for it in items:
        if not it.label:
            folder, stem = name(it)
            m = SYNTH_CHIP.match(stem)
            it.group = f"real/{(folder / (m.group('source') if m else stem)).as_posix()}"
            reals[(folder, stem)] = it.group
    for it in items:
        if it.label:
            folder, stem = name(it)
            while (folder, stem) not in reals and "_" in stem:  # longest real name first
                stem = stem.rsplit("_", 1)[0]
            it.group = reals.get((folder, stem), it.group)


def parse_label(value: str | None, where: str) -> int:
    if value is None:  # csv.DictReader fills a short row's missing fields with None
        raise DatasetError(f"{where}: no label (the row has fewer fields than the header)")
    try:
        return LABELS[value.strip().lower()]
    except KeyError:
        raise DatasetError(f"{where}: label {value!r} is not real/fake/0/1") from None


def parse_landmarks(value: str, where: str) -> np.ndarray | None:
    if not value or not value.strip():
        return None
    try:
        pts = np.array([float(v) for v in value.replace(",", " ").split()], np.float32)
    except ValueError:
        raise DatasetError(f"{where}: landmarks {value!r} are not numbers") from None
    if pts.size != 10:
        raise DatasetError(f"{where}: landmarks need 10 numbers (5 x,y points), got {pts.size}")
    return pts.reshape(5, 2)


def _missing(p: Path) -> str:
    """``p`` quoted (a trailing space is invisible otherwise), and the file the name most
    likely meant when one exists: the name without surrounding spaces, or the same name in
    the other Unicode normal form (macOS writes decomposed, most editors composed)."""
    text = repr(str(p))
    stripped = p.with_name(p.name.strip())
    if stripped != p and stripped.is_file():
        return f"{text} (the name has spaces around it; {stripped.name!r} exists)"
    for form in ("NFC", "NFD"):
        other = Path(unicodedata.normalize(form, str(p)))
        if other != p and other.is_file():
            return f"{text} (a file of the same name in Unicode {form} form exists: the label's spelling differs)"
    return text


def read_manifest(path: Path) -> list[Item]:
    """Items of a CSV manifest (header ``path,label[,group][,subset][,landmarks]``)."""
    return [item for item, _ in manifest_rows(path)]


def manifest_rows(path: Path) -> Iterator[tuple[Item, dict]]:
    """Each row of a CSV manifest as its :class:`Item` and the row's own fields, for a caller
    that reads a column of its own too (bench/validation.py: the shipped set's ``generator``)."""
    # utf-8-sig: a spreadsheet's byte-order mark would otherwise hide the 'path' header;
    # surrogateescape: bytes that are not UTF-8 (a Latin-1 file name) were a UnicodeDecodeError
    # traceback, and now name the file as the file system spells it, as Python's own paths do.
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: CSV needs a header with at least 'path' and 'label'")
        for n, row in enumerate(reader, start=2):
            where = f"{path}:{n}"
            p = Path(row["path"])
            p = p if p.is_absolute() else path.parent / p
            if not p.is_file():
                raise DatasetError(f"{where}: file not found: {_missing(p)}")
            yield (Item(p, parse_label(row["label"], where), row.get("group") or str(p),
                        row.get("subset") or "", parse_landmarks(row.get("landmarks") or "", where)), row)


def format_landmarks(lm: np.ndarray) -> str:
    return " ".join(f"{v:.2f}" for v in np.asarray(lm, np.float32).reshape(-1))
