"""Pictures the decoder could only conceal are not sampled (scanner.decode ``_intact``).

An MPEG-TS recording cut exactly between two 188-byte packets (a capture stopped,
a download cut on a packet boundary) ends inside its last picture's data with no sign
of it in the container: the demuxer hands on the short packet, FFmpeg conceals the
missing part of the picture (smeared blocks) and flags the frame corrupt. The scan
sampled that picture - ``--frames`` always samples the last one - and scored it.
"""
from __future__ import annotations

import json

import av
import numpy as np

from conftest import DATA, make_video, wait_for
from scanner.cli import EXIT_OK, main
from scanner.decode import FrameSampler

TS_PACKET = 188


def _ts_copy(src, dst, frames: int = 16):
    """``src``'s first ``frames`` pictures as H.264 (no B-frames: the last packet is the last
    picture shown) in MPEG-TS."""
    with av.open(str(src)) as c:
        imgs = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), c.decode(video=0))]
    h, w = imgs[0].shape[:2]
    make_video(dst, len(imgs), (w, h), pattern=imgs.__getitem__, fmt="mpegts", options={"bf": "0", "g": "50"})


def _packet_sizes(path) -> list[int]:
    with av.open(str(path)) as c:
        return [p.size for p in c.demux(video=0) if p.size]


def _cut_inside_last_picture(src, dst) -> int:
    """``src`` cut at the last TS packet boundary that falls inside its last picture's data."""
    full = _packet_sizes(src)
    data = src.read_bytes()
    for cut in range(len(data) - TS_PACKET, 0, -TS_PACKET):
        dst.write_bytes(data[:cut])
        got = _packet_sizes(dst)
        if len(got) == len(full) and got[-1] < full[-1]:
            return cut
    raise AssertionError("no packet boundary inside the last picture")


def test_picture_cut_short_by_a_packet_boundary_is_not_sampled(tmp_path):
    full, cut = tmp_path / "full.ts", tmp_path / "cut.ts"
    _ts_copy(DATA / "d1.mp4", full)
    assert _cut_inside_last_picture(full, cut) % TS_PACKET == 0
    # What the decoder gives, set up as the scan sets it (thread_type AUTO; without it this
    # FFmpeg conceals the picture without flagging it): the last picture flagged corrupt.
    with av.open(str(cut)) as c:
        c.streams.video[0].thread_type = "AUTO"
        flags = [f.is_corrupt for f in c.decode(video=0)]
    assert flags[-1] and not any(flags[:-1])
    whole = {fr.index: fr.image for fr in FrameSampler(full, frames=16)}
    s = FrameSampler(cut, frames=16)
    got = {fr.index: fr.image for fr in s}
    last = max(whole)
    assert len(whole) == s.requested == 16 and last not in got and len(got) == 15
    assert s.missed == 1 and s.corrupt == 1 and s.refetched == 0
    # every picture kept is the intact one
    assert all(np.array_equal(img, whole[i]) for i, img in got.items())


def test_scan_row_counts_the_damaged_picture_as_missed(tmp_path):
    full, cut = tmp_path / "full.ts", tmp_path / "cut.ts"
    _ts_copy(DATA / "d1.mp4", full)
    _cut_inside_last_picture(full, cut)
    out = tmp_path / "rows.jsonl"
    assert main(["scan", str(cut), str(full), "--out", str(out), "--frames", "8", "--no-progress",
                 "--workers", "1"]) == EXIT_OK
    rows = {r["path"].rsplit("/", 1)[1]: r for r in map(json.loads, out.read_text().splitlines())}
    damaged, intact = rows["cut.ts"], rows["full.ts"]
    assert damaged["verdict"] == intact["verdict"] == "real"
    assert (damaged["frames_requested"], damaged["frames_missed"], damaged["frames"]) == (8, 1, 7)
    assert damaged["video"]["frames_corrupt"] == 1
    assert (intact["frames_missed"], intact["video"]["frames_corrupt"]) == (0, 0)


def test_live_source_skips_the_damaged_picture_and_counts_it(tmp_path):
    from scanner.live.source import LiveSource, SourceSettings

    full, cut = tmp_path / "full.ts", tmp_path / "cut.ts"
    _ts_copy(DATA / "d1.mp4", full)
    _cut_inside_last_picture(full, cut)
    src = LiveSource("cut", str(cut), SourceSettings(allow_files=True, max_retries=0, sample_fps=0,
                                                     buffer_frames=64)).start()
    wait_for(lambda: src.state == "stopped", 20, what="the file to end")
    times = []
    while (item := src.buffer.get()) is not None:
        times.append(item.time_s)
    assert src.stats.decoded == 16 and src.stats.corrupt == 1
    assert src.describe()["frames_corrupt"] == 1 and len(times) == src.stats.sampled == 15
    assert max(times) < 15 / 25  # the last picture (t = 0.6 s) was never sampled


def _damage_packets(src, dst, every: int = 3, count: int = 4) -> list[int]:
    """``src`` with 16 bytes flipped in the middle of ``count`` inter-coded packets (a damaged
    archive: the container is intact, slice data is not); returns their pts."""
    with av.open(str(src)) as c:
        packets = [(p.pts, p.pos, p.size) for p in c.demux(video=0) if p.size and not p.is_keyframe]
    data = bytearray(src.read_bytes())
    hit = [p for p in packets if p[2] > 1000][2::every][:count]
    for _, pos, size in hit:
        for i in range(pos + size // 2, pos + size // 2 + 16):
            data[i] ^= 0xA5
    dst.write_bytes(bytes(data))
    return [p[0] for p in hit]


def test_damaged_slices_are_left_out_the_same_way_on_every_run(tmp_path):
    # Under frame threads FFmpeg flagged a damaged picture in one decode pass and not always
    # in the next; retrying flagged pictures sequentially made a clip's row differ run to run.
    bad = tmp_path / "damaged.mp4"
    hit = _damage_packets(DATA / "d18.mp4", bad)
    with av.open(str(bad)) as c:
        total = sum(1 for p in c.demux(video=0) if p.size)
    runs = []
    for _ in range(3):
        s = FrameSampler(bad, frames=total)
        kept = [fr.index for fr in s]
        runs.append((kept, s.missed, s.corrupt, s.refetched))
    assert all(r == runs[0] for r in runs)
    kept, missed, corrupt, refetched = runs[0]
    assert len(hit) == 4 and corrupt == missed == 4 and refetched == 0 and len(kept) == total - 4
