"""Batch-scan drill: unusual but real inputs that gave a wrong answer, lost a row or used
unbounded resources without an error."""
from __future__ import annotations

import numpy as np

from scanner.video_index import VideoIndex, choose_targets


def _index(pts: list[int], time_base: float) -> VideoIndex:
    p = np.asarray(pts, np.int64)
    return VideoIndex(pts=p, keyframe=np.ones(len(p), bool), truncated=False, time_base=time_base,
                      start=int(p[0]), width=64, height=64, codec="mpeg4", presentation=p)


def test_fps_sampling_of_a_video_whose_last_pts_is_absurd_stays_bounded():
    # Three packets, the last stamped 10^12 s on (a crafted or broken MKV: 10^15 at 1/1000):
    # --fps made np.arange of 10^12 times before the 10,000-frame cap was checked, an
    # "internal: MemoryError (7.28 TiB)" row; 10^9 s allocated gigabytes (an OOM kill).
    ix = _index([0, 1, 10**15], 1e-3)
    targets = choose_targets(ix, None, 1.0)
    assert targets == [0, 1, 10**15]
    # Below the cap the times are those of before (one every 1/fps s).
    short = _index(list(range(0, 10_001, 40)), 1e-3)  # 10 s at 25 fps
    assert len(choose_targets(short, None, 2.0)) == 21
