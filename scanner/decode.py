"""Frame sampling from video files with PyAV.

Two passes over the container:

1. **Index** (demux only, no decoding): every video packet's pts and keyframe flag.
   This gives the exact frame count and presentation times even when the header
   lies or has no duration, and works for variable frame rate.
2. **Decode only what is needed**: targets are chosen by presentation index;
   groups of pictures (GOPs) holding no target are never decoded (a seek jumps
   over them), decoding stops after the last target, and inside a GOP frames that
   are neither targets nor references are skipped by the decoder
   (``skip_frame=NONREF``), which halves H.264 decode work with B-frames.

The index and the decode plan live in :mod:`scanner.video_index`.

Frames come out as :class:`Frame` with an RGB ``uint8 (H, W, 3)`` image, upright
(display-matrix rotation applied), plus an optional downscaled copy made by
swscale for the face detector. HDR is tone-mapped and an untagged HD matrix read as
BT.709 (:mod:`scanner.colour`).
"""
from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import av

from engines.errors import DfscanError

from .edit_list import unsupported_edits
from .picture import Frame, picture_sar, to_frame  # noqa: F401 (Frame re-exported)
from .video_index import MAX_SAMPLED_FRAMES, Run, VideoIndex, build_index, choose_targets, gop_plan  # noqa: F401 (re-exported)

# Every folder walk's list (scan, labelled sets; scanner.folder_walk). Each extension's
# container is one FFmpeg may read here (FILE_OPEN_OPTIONS): .qt .f4v .3g2 are MP4/MOV;
# .vob .mod (JVC/Panasonic camcorders) MPEG-PS; .tod MPEG-TS; .divx .xvid AVI; .ogm Ogg;
# .h264/.264/.hevc/.h265/.265 raw streams (DVR/CCTV exports); .m2v raw MPEG-2 video.
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .qt .f4v .3gp .3g2 .mkv .webm .avi .divx .xvid .mpg .mpeg .vob .mod .m2v "
    ".ts .mts .m2ts .tod .flv .wmv .asf .ogv .ogm .mxf .dv .y4m .ivf .mjpeg .h264 .264 .hevc "
    ".h265 .265".split()
)
# Local files may only be read through the file protocol and by ordinary container
# demuxers: a playlist (HLS, concat) disguised as .mp4 must not reach the network
# or other local files. mpegvideo (raw MPEG-1/2 video, .m2v) reads its one file only.
FILE_OPEN_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,asf,mpeg,ogg,"
    "h264,hevc,mjpeg,rawvideo,ivf,mxf,m4v,dv,yuv4mpegpipe,mpegvideo",
}


class VideoError(DfscanError):
    """A video could not be read. ``kind`` is a short machine-readable reason."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def classify_os_error(path: Path, e: OSError) -> VideoError:
    """``not_found`` / ``permission`` / ``internal`` error of a failed file access."""
    if isinstance(e, FileNotFoundError) or e.errno in (errno.ENOENT, errno.ENOTDIR):
        return VideoError("not_found", f"file not found: {path}")
    if e.errno == errno.ELOOP:  # a symlink cycle leads to no file at all
        return VideoError("not_found", f"file not found (symbolic link loop): {path}")
    if e.errno == errno.ENAMETOOLONG:  # was internal, the long path quoted twice
        return VideoError("not_found", f"file not found (name longer than this system allows): {path}")
    if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM):
        return VideoError("permission", f"permission denied: {path}")
    if isinstance(e, IsADirectoryError):
        return VideoError("not_video", f"a directory, not a video file: {path}")
    return VideoError("internal", f"cannot read {path}: {type(e).__name__}: {e}")


def _classify_open_error(path: Path, e: Exception) -> VideoError:
    if isinstance(e, FileNotFoundError) or getattr(e, "errno", None) == errno.ENOENT:
        return VideoError("not_found", f"file not found: {path}")
    if isinstance(e, PermissionError) or getattr(e, "errno", None) == errno.EACCES:
        return VideoError("permission", f"permission denied: {path}")
    if isinstance(e, av.error.FFmpegError) and _looks_like_mp4(path):
        return VideoError("truncated", "MP4/MOV file without a usable index (moov): truncated "
                          f"or still being written ({e})")
    if isinstance(e, av.error.FFmpegError) and _avi_cut(path):
        return VideoError("truncated", f"AVI file cut inside its header (shorter than its RIFF size: {e})")
    image = _image_kind(path)
    if image:  # FFmpeg would say only "Invalid argument" (image demuxers are not allowed)
        return VideoError("not_video", f"an image file ({image}), not a video: dfscan scans video files")
    detail = getattr(e, "strerror", None) or str(e)
    return VideoError("not_video", "not a video file FFmpeg may read (unrecognised or disallowed "
                      f"container format: {detail})")


_IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"),
                (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _image_kind(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _IMAGE_MAGIC if head.startswith(magic)), None)


def _looks_like_mp4(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] in (b"ftyp", b"mdat", b"moov", b"wide", b"free")


def _avi_cut(path: Path) -> bool:
    """An AVI shorter than its first RIFF chunk says: one cut in its header (a download
    that stopped early) is unreadable, but it is a truncated video, not 'not a video'."""
    try:
        with open(path, "rb") as f:
            head, size = f.read(12), os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"AVI " and int.from_bytes(head[4:8], "little") + 8 > size


def check_regular_file(path: Path) -> None:
    """:class:`VideoError` unless ``path`` is a readable, non-empty regular file.

    Why: opening a FIFO blocks until a writer appears (hashing or decoding it would
    hang the scan forever) and a device (``/dev/zero``) never ends; ``stat`` does
    neither, so those are refused before anything opens them.
    """
    try:
        st = path.stat()
        if not os.access(path, os.R_OK):
            raise PermissionError(errno.EACCES, "permission denied", str(path))
    except OSError as e:
        raise classify_os_error(path, e) from e
    if stat.S_ISDIR(st.st_mode):
        raise VideoError("not_video", f"a directory, not a video file: {path}")
    if not stat.S_ISREG(st.st_mode):
        kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "device"
        raise VideoError("not_video", f"not a regular file (a {kind}): {path}")
    if st.st_size == 0:
        raise VideoError("empty_file", "file is empty (0 bytes)")


def open_file(path: str | Path) -> av.container.InputContainer:
    """Open a local video file with the restricted protocol/format whitelist."""
    path = Path(path)
    check_regular_file(path)
    try:
        return av.open(str(path), options=dict(FILE_OPEN_OPTIONS))
    except Exception as e:  # av.error.* — all FFmpeg failures
        raise _classify_open_error(path, e) from e


def pick_video_stream(container) -> av.video.stream.VideoStream | None:
    """The video stream FFmpeg itself would play (``av_find_best_stream``: default
    disposition, more than one frame, bitrate), so a cover picture or a one-frame stream
    listed first is not what gets judged; None when there is no decodable video. Never cover
    art: FFmpeg picks it when it is the only "video" (a song's album cover), judged as a video."""
    streams = [s for s in container.streams.video if s.codec_context is not None and not _is_cover(s)]
    if not streams:
        return None
    best = container.streams.best("video")
    return next((s for s in streams if best is not None and s.index == best.index), streams[0])


def _is_cover(stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def count_video_streams(container) -> int:
    """Video streams of ``container``, cover art / attached pictures not counted: only the
    one :func:`pick_video_stream` chooses is judged, the row says how many others exist."""
    return sum(1 for s in container.streams.video if not _is_cover(s))


def _video_stream(container) -> av.video.stream.VideoStream:
    stream = pick_video_stream(container)
    if stream is None:
        kinds = sorted({"cover art" if _is_cover(s) else s.type for s in container.streams}) or ["none"]
        raise VideoError("no_video_stream", f"no video stream (streams: {', '.join(kinds)})")
    return stream


def _has_exact_seek(container) -> bool:
    """Containers with a sample index (MP4/MOV, Matroska) seek exactly to keyframes;
    others (MPEG-TS, raw streams) seek by byte estimates, so they are read in order."""
    name = container.format.name
    return any(k in name for k in ("mp4", "mov", "matroska", "webm"))


class FrameSampler:
    """Sample frames of one video file (see module docstring).

    Args:
        path: local video file.
        frames: number of evenly spaced frames (ignored when ``fps`` or ``indices`` is set).
        fps: sample one frame every ``1/fps`` seconds instead.
        det_max_side: also produce a downscaled copy with this longest side.
        seek: allow jumping over GOPs without targets (False = decode sequentially).
        threads: decoder threads (0: FFmpeg's default).
        indices: sample exactly these presentation indices instead.

    After iterating, ``requested`` is the number of frames chosen and ``missed``
    the number that no decoder pass produced; ``refetched`` counts targets the
    seeking pass lost and a sequential pass recovered.
    """

    def __init__(self, path, frames: int | None = 32, fps: float | None = None,
                 det_max_side: int | None = None, seek: bool = True, threads: int = 0,
                 indices: Sequence[int] | None = None):
        self.path = Path(path)
        self.threads = threads  # decoder threads, 0 = FFmpeg's choice (one per core + 1)
        self.frames, self.fps, self.det_max_side, self.seek = frames, fps, det_max_side, seek
        self.indices = indices
        self.max_frames = MAX_SAMPLED_FRAMES
        self.index: VideoIndex | None = None
        self.decode_errors = 0
        self._damaged: set[int] = set()  # targets decoded flagged corrupt (no longer pending)
        self.seeks = 0
        self.requested = 0  # sampled frames chosen (after the index pass)
        self.missed = 0  # targets that never came out of the decoder
        self.refetched = 0
        self.deinterlaced = 0  # sampled frames flagged interlaced, made progressive
        self.tone_mapped = 0  # sampled HDR frames mapped to SDR (scanner.colour)
        self.hdr: str | None = None  # their transfer: "pq" / "hlg"
        self.stream_index: int | None = None  # container index of the video stream judged
        self.video_streams = 0  # video streams in the file (count_video_streams)
        self._sar = None

    def __iter__(self) -> Iterator[Frame]:
        index, targets = self._plan()
        pending = set(targets)
        yielded = 0
        # A fresh container for decoding: the index pass left the demuxer at the end,
        # and the first needed GOP then needs no seek at all.
        with _opened(self.path) as (container, stream):
            seekable = self.seek and _has_exact_seek(container) and not index.ordinal
            for fr in self._decode(container, stream, index, targets, seekable, pending):
                yielded += 1
                self._count(fr)
                yield fr
        if pending and seekable:
            # Whatever seeking lost (a decoder that drops pictures after a seek, a
            # keyframe flag that is not a clean entry point) is read in order instead.
            lost = len(pending)
            with _opened(self.path) as (container, stream):
                for fr in self._decode(container, stream, index, sorted(pending), False, pending):
                    yielded += 1
                    self._count(fr)
                    yield fr
            self.refetched = lost - len(pending)
        self.missed = len(pending) + self.corrupt
        if yielded == 0:
            raise VideoError("no_frames", f"no frame could be decoded "
                             f"({self.decode_errors} corrupt packets)")

    @property
    def corrupt(self) -> int:
        """Sampled frames only decoded damaged: left out, and counted in ``missed``."""
        return len(self._damaged)

    def _count(self, fr: Frame) -> None:
        self.deinterlaced += fr.deinterlaced
        if fr.hdr:
            self.tone_mapped += 1
            self.hdr = fr.hdr

    def _plan(self) -> tuple[VideoIndex, list[int]]:
        with _opened(self.path) as (container, stream):
            self.index = index = build_index(container, stream)
            self.stream_index, self.video_streams = stream.index, count_video_streams(container)
            _check_edit_list(self.path, container, stream)
        if index.truncated:
            # A verdict on part of a video could mislead; report it instead.
            raise VideoError("truncated", f"file ends after {len(index.pts)} video packets "
                             "of a longer stream (truncated)")
        if not len(index.pts):
            raise VideoError("no_frames", "video stream holds no packets")
        if not index.frames:  # nothing to sample: by-order decoding failed on max([]) (internal)
            raise VideoError("no_frames", f"none of the video stream's {len(index.pts)} packets is a frame "
                             "shown (an MP4/MOV edit list showing none of them, as FFmpeg plays it)")
        targets = choose_targets(index, self.frames, self.fps, self.indices, self.max_frames)
        self.requested = len(targets)
        return index, targets

    def _decode(self, container, stream, index: VideoIndex, targets: list[int],
                seekable: bool, pending: set[int]) -> Iterator[Frame]:
        """Frames of ``targets``; each one output is removed from ``pending``."""
        self._sar = stream.sample_aspect_ratio  # container's (MP4 pasp, MKV display size) or codec's
        self._codec_sar = stream.codec_context.sample_aspect_ratio
        if index.ordinal:
            yield from self._decode_by_order(container, stream, index, set(targets), pending)
            return
        self._threads(stream)
        cc = stream.codec_context
        if seekable:
            runs = gop_plan(index, targets)
        else:
            runs = [Run(int(index.pts[0]), 0, len(index.pts), set(targets))]
        for run in runs:
            if run.first > 0:
                container.seek(run.key_pts, stream=stream, backward=True, any_frame=False)
                self.seeks += 1
            # Budget: the run's packets plus the decoder's reorder delay; a safety net
            # for containers whose seek lands late.
            budget = run.end - run.first + 32
            yield from self._decode_run(container.demux(stream), cc, run.wanted, budget, index, pending)
        cc.skip_frame = "DEFAULT"

    def _decode_run(self, packets, cc, wanted, budget, index, pending) -> Iterator[Frame]:
        # ``pending``: all targets not yet output (a decode call may return frames of
        # a later run too).
        for pkt in packets:
            budget -= 1
            # Why: frames that are neither sampled nor referenced need no decoding.
            cc.skip_frame = "DEFAULT" if pkt.pts in pending else "NONREF"
            for f in self._decode_packet(pkt):
                if f.pts in pending and self._intact(f, f.pts, pending):
                    yield to_frame(f, index.rank(f.pts), index.time_of(f.pts), self.det_max_side,
                                    self._frame_sar(cc))
            if not (wanted & pending) or budget <= 0:
                break

    def _decode_by_order(self, container, stream, index: VideoIndex, targets: set[int], pending: set[int]):
        """Fallback for broken timestamps: decode in order, count output frames.

        A decoder may still drop pictures mid-stream (at the splice of recordings joined
        with ``cat``, where the second starts on an open-GOP keyframe), which no index
        foresees: the stream then ends before the last targets. frames_total becomes the
        count output and the last frame shown stands in for the last target (``--frames``
        always samples it); any other target past the end is missed, and counted so.
        """
        self._threads(stream)
        final = max(targets)  # once: per packet it was packets x targets on a 10k-frame request
        n, last, claimed_last = 0, None, final == len(index.presentation) - 1
        for pkt in container.demux(stream):
            for f in self._decode_packet(pkt):
                last = f if n not in targets and not f.is_corrupt else None
                if n in pending and self._intact(f, n, pending):
                    yield self._ordinal_frame(f, n, index, stream)
                n += 1
            if n > final:
                return
        index.presentation = index.presentation[:n]
        if last is not None and claimed_last and pending:
            pending.discard(max(pending))
            yield self._ordinal_frame(last, n - 1, index, stream)

    def _ordinal_frame(self, f, n: int, index: VideoIndex, stream) -> Frame:
        return to_frame(f, n, n * index.time_base, self.det_max_side, self._frame_sar(stream.codec_context))

    def _frame_sar(self, cc):
        return picture_sar(self._sar, self._codec_sar, cc)

    def _threads(self, stream) -> None:
        stream.thread_type = "AUTO"  # frame + slice threads
        if self.threads:
            stream.codec_context.thread_count = self.threads

    def _intact(self, f, key: int, pending: set[int]) -> bool:
        """Take target ``key`` off ``pending``; False when the decoder flags its picture
        corrupt (concealed: a packet cut short by the end of the file, a damaged slice),
        which is then not sampled but counted (``corrupt``, in ``missed``). Why: concealment
        smears blocks across the face, and a detector scored that picture as the video's.
        Not retried by the sequential pass: under frame threads FFmpeg flags the same
        damaged packet in one decode and not always in the next, so a retry made rows
        differ from run to run (347 or 348 frames of a clip with 5 damaged packets)."""
        pending.discard(key)
        if f.is_corrupt:
            self._damaged.add(key)
            return False
        return True

    def _decode_packet(self, pkt):
        try:
            return pkt.decode()
        except av.error.FFmpegError:
            self.decode_errors += 1  # corrupt packet: skip it, keep going
            return []


def _check_edit_list(path: Path, container, stream) -> None:
    """Refuse an MP4/MOV edit list FFmpeg would present wrongly (:mod:`scanner.edit_list`):
    judged as FFmpeg reads it, frames no player shows would decide the verdict."""
    name = container.format.name
    why = ("mp4" in name or "mov" in name) and unsupported_edits(path, stream.id)
    if why:
        raise VideoError("unsupported_format", f"MP4/MOV edit list with {why}: FFmpeg would "
                         "show frames the edit list hides (its edit list support lacks this)")


@contextmanager
def _opened(path: Path):
    container = open_file(path)
    try:
        yield container, _video_stream(container)
    finally:
        container.close()


def sample_frames(path, frames: int | None = 32, fps: float | None = None,
                  det_max_side: int | None = None) -> Iterator[Frame]:
    """Iterate sampled frames of ``path`` (see :class:`FrameSampler`)."""
    return iter(FrameSampler(path, frames, fps, det_max_side))


def is_video_path(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS
