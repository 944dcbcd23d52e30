"""Face-crop cache for ``dfscan train``: real faces detected and aligned by the scan's own code.

Every source (video or still) goes through :class:`scanner.faces.FaceDetector`
and :func:`scanner.align.align_faces` with the detector's template (scan-time
geometry), at the cache size (224 px, the largest training input; smaller
inputs are resized from it). Stills are tightly cropped faces, so they are
padded (edge-replicated) to 1.8x before detection.

On disk (``<cache>/``): ``crops.npy`` ``uint8 (N, S, S, 3)`` RGB, ``landmarks.npy``
``float32 (N, 5, 2)`` (the detected points mapped into the crop) and
``index.csv`` (``source,group,frame``). ``group`` is the identity: splits are
made by group so no person is in both training and validation.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engines.errors import DfscanError
from engines.files import replacing, write_json
from engines.registry import file_hash
from engines.spec import InputSpec

log = logging.getLogger("dfscan")
VIDEO_GLOBS = ("*.mp4", "*.mpg", "*.mov", "*.avi", "*.mkv", "*.webm")
STILL_GLOBS = ("*.jpg", "*.jpeg", "*.png")
# GRID clips are named by sentence; LipNet's two samples of one man share a speaker.
SAME_PERSON = {"id2_vcd_swwp2s": "pwij3p"}
INDEX_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
FACE_ARRAYS = ("crops.npy", "landmarks.npy")  # what a train recipe's crops_sha256 covers


def identity(path: Path, mode: str = "name") -> str:
    """Identity group of a training file. ``name``: MEAD actor, GRID speaker (from their file
    names), else one per still or clip, so several files of one person would land on both
    sides of the split; ``folder``: the folder holding the file is one person
    (``data/alice/*.mp4``), for footage laid out that way."""
    if mode == "folder":
        return f"folder:{os.path.realpath(path.parent)}"
    stem, folder = path.stem, path.parent.name
    m = re.match(r"([MW]\d{3})_", stem)
    if m:  # MEAD: M030_front_angry_level3_001
        return f"mead:{m.group(1)}"
    if folder.startswith("grid"):
        return f"grid:{SAME_PERSON.get(stem, stem)}"
    return f"{folder}:{stem}"


def sources(roots: list[str | Path]) -> list[Path]:
    """The files of ``roots`` (files, or folders searched recursively) with a video or still
    extension, in any case: globbed as written, ``IMG_0001.JPG`` or ``CLIP.MP4`` (as cameras
    name them) were silently left out of the cache, as :mod:`.synth` and ``scan`` take them."""
    exts = {g[1:] for g in VIDEO_GLOBS + STILL_GLOBS}
    out = []
    for r in map(Path, roots):
        if r.is_file():
            out.append(r)
            continue
        out += [f for f in r.rglob("*") if f.suffix.lower() in exts and f.is_file()]
    return sorted(set(out))


def _frames(path: Path, frames: int, det_max_side: int, pad: float):
    from ..decode import Frame, FrameSampler
    from .features import _downscale, read_rgb

    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        img = read_rgb(path)
        h, w = img.shape[:2]
        py, px = int(h * (pad - 1) / 2), int(w * (pad - 1) / 2)
        img = np.ascontiguousarray(np.pad(img, ((py, py), (px, px), (0, 0)), mode="edge"))
        small, scale = _downscale(img, det_max_side)
        return [Frame(0, 0.0, img, small, scale)]
    return list(FrameSampler(path, frames, None, det_max_side, True))


@dataclass
class CacheConfig:
    frames: int = 16  # frames per clip
    size: int = 224
    min_face: int = 40
    pad: float = 1.8
    det_max_side: int = 480  # the training clips have large faces; 4x cheaper MTCNN than 960
    device: str = "cpu"
    identity: str = "name"  # how files map to people (see identity())


def _batches(files: list[Path], cfg: CacheConfig, skipped: list):
    """Frame batches: one video's sampled frames, or up to 16 stills of one size (one MTCNN call)."""
    from ..pipeline import DETECT_BATCH

    stills: dict[tuple, list] = {}
    for path in files:
        try:
            frames = _frames(path, cfg.frames, cfg.det_max_side, cfg.pad)
        except Exception as e:  # an unreadable file contributes nothing; say so
            skipped.append((str(path), f"{type(e).__name__}: {e}"))
            continue
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            group = stills.setdefault(frames[0].image.shape, [])
            group.append((path, frames[0]))
            if len(group) == 16:
                yield group
                stills.pop(frames[0].image.shape)
            continue
        for i in range(0, len(frames), DETECT_BATCH):
            yield [(path, f) for f in frames[i:i + DETECT_BATCH]]
    yield from stills.values()


def build_cache(roots: list[str | Path], out: str | Path, spec: InputSpec, cfg: CacheConfig = CacheConfig(),
                progress=lambda x: x) -> dict:
    """Detect, align and store the largest face of every sampled frame / still of ``roots``."""
    from ..faces import FaceDetector
    from ..pipeline import detect_and_align

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out}: the face cache folder is a file")
    files = sources(roots)
    if not files:
        raise CacheError(f"no videos or images ({', '.join(VIDEO_GLOBS + STILL_GLOBS)}) in "
                         f"{', '.join(map(str, roots)) or 'the --data list'}")
    out.mkdir(parents=True, exist_ok=True)
    contents = _contents(files)  # before the reads: a file changed meanwhile is then refused later
    faces = FaceDetector(device=cfg.device, max_side=cfg.det_max_side, min_face=cfg.min_face, max_faces=1)
    crops, lms, rows, skipped = [], [], [], []
    for batch in _batches(list(progress(files)), cfg, skipped):
        paths = [p for p, _ in batch]
        found = detect_and_align([f for _, f in batch], faces, spec, cfg.device)
        for path, (fr, fc, c, mats) in zip(paths, found):
            if len(fc) == 0:
                continue
            crops.append(c[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
            m = mats[0].numpy().astype(np.float64)
            lms.append((fc.landmarks[0] @ m[:, :2].T + m[:, 2]).astype(np.float32))
            rows.append({"source": str(path), "group": identity(path, cfg.identity), "frame": fr.index})
    if not rows:
        why = f" ({len(skipped)} unreadable, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise CacheError(f"no faces found in the {len(files)} files{why}; the cache needs real faces")
    _store(out, np.stack(crops), np.stack(lms), rows,
           {"files": _resolved(files), "frames": cfg.frames, "identity": cfg.identity, "contents": contents})
    return {"faces": len(rows), "files": len(files), "groups": len({r["group"] for r in rows}),
            "skipped": skipped}


def _store(out: Path, crops: np.ndarray, lms: np.ndarray, rows: list[dict], built: dict | None = None) -> None:
    """Write a cache so that a kill at any point never pairs one build's rows with another's
    crops: ``index.csv`` (what :meth:`FaceCache.load` starts from) goes first and comes back
    last; each file is replaced whole. ``built`` (input files and contents, frames per clip) goes to
    ``build.json``, so a later ``--data`` naming other inputs is not served this cache, with
    the faces' hash (see :func:`_hash_record`), written after the arrays it covers."""
    (out / "index.csv").unlink(missing_ok=True)
    (out / "build.json").unlink(missing_ok=True)
    for name, arr in (("crops.npy", crops), ("landmarks.npy", lms)):
        with replacing(out / name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    if built is not None:
        write_json({**built, **_hash_record(out, crops, lms)}, out / "build.json")
    # surrogateescape: a non-UTF-8 file name is stored as its own bytes and read back alike
    with replacing(out / "index.csv") as tmp, open(tmp, "w", newline="", **INDEX_ENCODING) as f:
        w = csv.DictWriter(f, fieldnames=["source", "group", "frame"])
        w.writeheader()
        w.writerows(rows)


def hash_faces(crops: np.ndarray, landmarks: np.ndarray) -> str:
    """SHA-256 of the crops' bytes, then the landmarks': a train recipe's ``crops_sha256``
    (run folders and cards record it, so it must never change for the same arrays)."""
    h = hashlib.sha256()
    for a in (crops, landmarks):
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


def _stamps(cache: Path) -> dict | None:
    """Inode, size, modification and change times (ns) of the arrays the faces' hash covers;
    None when one is missing. An edit or a rebuild changes them, so a hash recorded with them
    still holds: the change time too, as a tool that puts the modification time back
    (``touch -d``, ``cp -p``, ``rsync -t``) cannot set it (any metadata change, e.g. chmod or a
    hard link, only costs a rehash)."""
    stamps = {}
    for name in FACE_ARRAYS:
        try:
            st = os.stat(cache / name)
        except OSError:
            return None
        stamps[name] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]  # a list, as JSON gives back
    return stamps


def _hash_record(cache: Path, crops: np.ndarray, lms: np.ndarray) -> dict:
    """``crops_sha256`` of the arrays just saved (hashed from memory: ``np.save`` writes their
    bytes as they are, and a train start's :func:`hash_faces` of the loaded arrays gives the
    same value; reading 300 MB back only to hash it doubled the work) with the files' stamps."""
    stamps = _stamps(cache)
    return {"crops_sha256": hash_faces(crops, lms), "arrays": stamps} if stamps else {}


def _recorded_hash(cache: Path, stamps: dict | None) -> str | None:
    """The ``crops_sha256`` in ``build.json`` when recorded with ``stamps`` (the arrays' now);
    None for a cache from before the record, or whose arrays changed since (hash them again)."""
    try:
        built = json.loads((cache / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(built, dict) or not stamps or built.get("arrays") != stamps:
        return None
    digest = built.get("crops_sha256")
    return digest if isinstance(digest, str) else None


class CacheError(DfscanError):
    """A face cache folder is missing, incomplete or inconsistent."""


def _resolved(files) -> list[str]:
    return [os.path.realpath(f) for f in files]


def _file_stamp(path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _contents(files) -> list[list | None]:
    """``[size, mtime_ns, ctime_ns, SHA-256]`` of each file: ``build.json``'s record of what the
    footage held, so an edited or replaced file under the same name is not served the old faces
    (None for a file that cannot be read: the build skips it and says so)."""
    out = []
    for f in files:
        try:
            out.append([*_file_stamp(f), file_hash(f, None)])
        except OSError:
            out.append(None)
    return out


def _changed(files: list[Path], recorded) -> str | None:
    """The first of ``files`` whose contents differ from ``recorded`` (:func:`_contents`, same
    order), or None. Hashed again only when its stamps moved (a copy or ``touch`` that kept the
    bytes passes); the change time too, as a tool that puts the modification time back cannot set it."""
    for f, rec in zip(files, recorded):
        if not (isinstance(rec, list) and len(rec) == 4):  # unreadable at the build: nothing to compare
            continue
        try:
            stamp = _file_stamp(f)
            if stamp != rec[:3] and (stamp[0] != rec[0] or file_hash(f, None) != rec[3]):
                return str(f)
        except OSError:  # gone or unreadable since
            return str(f)
    return None


def check_built_from(cache: Path, files: list[Path], frames: int, ident: str = "name") -> None:
    """Refuse a complete cache built from other inputs than ``files`` (or other frames per
    clip, or identities): reused silently, it would train on data the command does not name.
    Caches from before ``build.json`` are checked by their sources only (each must be among
    ``files``), those from before ``identity`` was recorded as ``name``, those from before
    ``contents`` by the files' names only: else a file edited or replaced since the build is
    refused too (its old faces would be trained on as the new footage)."""
    want = _resolved(files)  # the same files named relative or absolute are the same inputs
    if (cache / "build.json").is_file():
        built = json.loads((cache / "build.json").read_text(encoding="utf-8"))
        same = (built.get("files") == want and built.get("frames") == frames
                and built.get("identity", "name") == ident)
        had = (f"{len(built.get('files', []))} files, {built.get('frames')} frames per clip, "
               f"identities by {built.get('identity', 'name')}")
    else:
        with open(cache / "index.csv", newline="", **INDEX_ENCODING) as f:
            stray = set(_resolved(r["source"] for r in csv.DictReader(f))) - set(want)
        same, had, built = not stray, f"other files, e.g. {min(stray, default='')}", {}
    if not same:
        raise CacheError(f"{cache}: this face cache was built from {had}, not the {len(want)} files "
                         f"({frames} frames per clip, identities by {ident}) asked for: give another --cache "
                         "folder, or delete it to rebuild")
    recorded = built.get("contents") if isinstance(built, dict) else None
    changed = _changed(want, recorded) if isinstance(recorded, list) and len(recorded) == len(want) else None
    if changed:
        raise CacheError(f"{cache}: {changed} changed since this face cache was built from it: delete the "
                         "cache to rebuild it, or give another --cache folder")


def _load_one(path: Path) -> tuple[list[dict], np.ndarray, np.ndarray, str | None]:
    """Rows, crops, landmarks and their ``crops_sha256`` when ``build.json`` holds a valid one."""
    if not (path / "index.csv").is_file():
        raise CacheError(f"{path}: not a complete face cache (no index.csv: its build was interrupted "
                         "or never ran); build it with `dfscan train --cache-only --cache DIR --data ...`")
    with open(path / "index.csv", newline="", **INDEX_ENCODING) as f:
        rows = list(csv.DictReader(f))
    before = _stamps(path)
    try:
        crops = np.load(path / "crops.npy", mmap_mode="r")
        lms = np.load(path / "landmarks.npy")
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable face cache ({type(e).__name__}: {e}); rebuild it") from e
    if not len(rows) == len(crops) == len(lms):
        # Rows matched to the wrong crops would mix identities across the split silently.
        raise CacheError(f"{path}: face cache files disagree ({len(rows)} rows, {len(crops)} crops, "
                         f"{len(lms)} landmark sets); rebuild it")
    # The recorded hash is of the arrays read only if their files did not change meanwhile.
    digest = _recorded_hash(path, before) if before == _stamps(path) else None
    return rows, crops, lms, digest


@dataclass
class FaceCache:
    crops: np.ndarray  # uint8 (N, S, S, 3), memory-mapped
    landmarks: np.ndarray  # float32 (N, 5, 2)
    groups: np.ndarray  # str (N,)
    sources: np.ndarray  # str (N,)
    recorded_sha256: str | None = None  # crops_sha256 from build.json, valid for these arrays

    @classmethod
    def load(cls, paths) -> "FaceCache":
        """One cache folder, or several (concatenated in memory)."""
        paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        rows, crops, lms, digests = [], [], [], []
        for path in paths:
            r, c, lm, digest = _load_one(path)
            if crops and c.shape[1:] != crops[0].shape[1:]:  # was a numpy ValueError traceback
                raise CacheError(f"{path}: its crops are {c.shape[1]} px, those of {paths[0]} {crops[0].shape[1]} px: "
                                 "train on caches built alike, or rebuild one")
            rows += r
            crops.append(c)
            lms.append(lm)
            digests.append(digest)
        # One cache's recorded hash is the hash of its arrays; that of several caches together
        # (all crops, then all landmarks) cannot be made from theirs: hashed at train start.
        return cls(crops[0] if len(crops) == 1 else np.concatenate(crops), np.concatenate(lms),
                   np.array([r["group"] for r in rows]), np.array([r["source"] for r in rows]),
                   digests[0] if len(digests) == 1 else None)

    def __len__(self) -> int:
        return len(self.groups)

    def crops_sha256(self) -> str:
        """:func:`hash_faces` of the crops and landmarks: recorded at the cache's build when it
        still holds, else computed (several caches, an older cache, arrays changed since)."""
        return self.recorded_sha256 or hash_faces(self.crops, self.landmarks)


def person_groups(cache: FaceCache) -> np.ndarray:
    """``cache.groups`` with groups that hold the same footage merged into one (named by the
    first in sorted order): one file under two group names (caches built with other
    ``--identity`` modes, or spelled ``a/x.mp4`` and ``./a/x.mp4``) or byte-identical crops
    (a copy under another name). Split apart, one person's faces were in training and in
    validation. Groups sharing nothing keep their names, so their split is unchanged."""
    parent: dict[str, str] = {g: g for g in set(cache.groups.tolist())}

    def root(g: str) -> str:
        while parent[g] != g:
            parent[g] = g = parent[parent[g]]
        return g

    first: dict[object, str] = {}
    for i, (g, src) in enumerate(zip(cache.groups.tolist(), cache.sources.tolist())):
        crop = np.ascontiguousarray(cache.crops[i])
        keys = [("source", os.path.realpath(src))]
        if crop.min() != crop.max():  # a uniform crop (a blank frame) shows no one
            keys.append(("crop", hashlib.blake2b(crop.tobytes(), digest_size=16).digest()))
        for key in keys:
            a, b = root(first.setdefault(key, g)), root(g)
            if a != b:  # the smaller name leads, whatever order the rows come in
                parent[max(a, b)] = min(a, b)
    return np.array([root(g) for g in cache.groups.tolist()])


def identities_sha256(groups: np.ndarray) -> str:
    """SHA-256 of the identities a split is made over (sorted, each once): with the same seed and
    share, :func:`split_groups` holds out the same people exactly when these are equal."""
    names = "\n".join(sorted(set(groups.tolist())))
    return hashlib.sha256(names.encode(errors="surrogateescape")).hexdigest()


def split_groups(groups: np.ndarray, val_share: float = 0.15, seed: int = 0) -> np.ndarray:
    """Boolean ``(N,)`` mask of validation rows: whole identities, ~``val_share`` of them per
    source family (so each family, e.g. MEAD or GRID, has held-out people when it has >= 2)."""
    uniq = sorted(set(groups.tolist()))
    val = set()
    fams: dict[str, list[str]] = {}
    for g in uniq:
        fams.setdefault(g.split(":")[0], []).append(g)
    for fam, gs in sorted(fams.items()):
        if len(gs) < 2:
            continue
        # Stable per-identity hash: the split does not depend on which files are present.
        # (surrogateescape: a non-UTF-8 name hashes as its bytes; UTF-8 names as before)
        ranked = sorted(gs, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode(errors="surrogateescape")).hexdigest())
        val.update(ranked[:max(1, round(len(gs) * val_share))])
    return np.array([g in val for g in groups.tolist()])
