"""Videos stored sideways or upside down without rotation metadata.

A phone clip re-encoded by a tool that drops the display matrix keeps its pixels
turned by 90, 180 or 270 degrees. MTCNN is not rotation invariant: on such frames
it still finds some faces (with lower probability and wrong landmarks), the crops
come out badly aligned, and the detector scores them as fake - a wrong answer
without any error. The scan therefore checks the orientation once per video:

- a sampled frame on which MTCNN finds a face with probability >= ``settled``
  (0.9999) settles it as stored at no extra cost (the usual case);
- otherwise that frame is also searched turned by 90, 180 and 270 degrees (for faces
  down to half the largest one found as stored: P-Net's costly fine levels skipped), and
  votes for the turn with the most probable face if that face is confident and far
  more probable than the best face as stored; two votes adopt a turn for the video;
- a video whose first ``max_probes`` frames with a face at some turn bring no two
  votes takes the turn whose faces' log-odds, summed over those frames, beat the
  stored frames' by ``MARGIN``, else is taken as stored; frames with no face at any
  turn (a black intro, the camera pointing elsewhere) say nothing about the turn and
  do not count, up to ``max_empty`` of them: a video without faces then costs 8 x 3
  extra detections (56 instead of 41 on 32 samples), and an intro of up to a quarter
  of 32 samples is passed over.

The turn applied is reported in the row (``orientation_deg``, counter-clockwise)
so reports can draw boxes on the same pixels.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .decode import Frame

if TYPE_CHECKING:  # reports turn frames without loading the face detector (torch)
    from .faces import FaceDetector, Faces

# MTCNN scores upright faces 0.93-1.0 and can score the same face upside down at 0.996
# (validation/fake/musev/musev_sun.mp4: 0.983 upright, 0.996 turned; a sideways d1: 0.967
# as stored, 0.9998 turned). A turn needs a CONFIDENT face whose odds beat the stored
# frame's best by ODDS_RATIO, on two frames.
CONFIDENT = 0.995
ODDS_RATIO = 20.0
# Why SETTLED is not CONFIDENT: turned copies of real clips score their face up to 0.9995
# as stored (tests/data/d2.mp4 upside down: 0.996, settled "upright" and scanned fake 0.58
# instead of real 0.08); 37 of 282 turned copies of the 94 shared face clips stayed
# turned. With SETTLED and the log-odds decision after max_probes (MARGIN nats, about 5x
# the odds per frame over 3 frames): 1 of 282 stays turned, none of the 94 upright clips
# turns, and an upright clip costs 0.6 probes (3 detections each) on average (12 samples
# per clip of portrait/, validation/ and 20 train_real/ clips; per-turn MTCNN
# probabilities, the rules replayed on them). bench/orientation_replay.py replays them on all
# 115 clips (344 of 345 turned copies set upright) and on 200 held-out pseudo-clips of face
# photos (600 of 600; no upright copy turned anywhere).
SETTLED = 0.9999
MARGIN = 5.0
# The probes search faces down to PROBE_RATIO x the stored frame's largest face only: the
# face turned upright is the same face, about as large (P-Net's fine pyramid levels, the
# costly ones, are skipped; a frame without a face as stored is searched whole).
PROBE_RATIO = 0.5


def rotate_frame(fr: Frame, k: int) -> Frame:
    """``fr`` turned ``k`` quarter turns counter-clockwise (image and detection copy)."""
    if k % 4 == 0:
        return fr
    small = None if fr.small is None else np.ascontiguousarray(np.rot90(fr.small, k))
    return replace(fr, image=np.ascontiguousarray(np.rot90(fr.image, k)), small=small)


def _best(faces: Faces) -> float:
    return float(np.max(faces.probs)) if len(faces) else 0.0


def _odds(p: float) -> float:
    return p / max(1.0 - p, 1e-6)


def _log_odds(p: float) -> float:
    # No face at a turn counts as p = 1e-6 (clipped both ways: a sure face is not infinite).
    return float(np.log(_odds(min(max(p, 1e-6), 1.0 - 1e-6))))


class Orientation:
    """Per-video orientation state; ``k`` is None until settled, then quarter turns (CCW)."""

    def __init__(self, faces: FaceDetector, confident: float = CONFIDENT, max_probes: int = 3,
                 max_empty: int = 8, settled: float = SETTLED, coarse_probes: bool = True):
        self.faces, self.confident, self.max_probes, self.max_empty = faces, confident, max_probes, max_empty
        self.settled, self.coarse_probes = settled, coarse_probes
        self.k: int | None = None
        self.probes = 0
        self.empty = 0  # probed frames without a face at any turn
        self.votes = [0, 0, 0, 0]
        self.log_odds = np.zeros(4)  # per turn, summed over the probed frames

    @property
    def degrees(self) -> int:
        return 90 * (self.k or 0)

    def settle(self, frames: Sequence[Frame], found: Sequence[Faces]) -> bool:
        """Look at a batch detected as stored; True when it settled on a turn just now
        (the batch must then be detected again, turned)."""
        if self.k is not None:
            return False
        for fr, fc in zip(frames, found):
            if self.k is not None:
                break
            stored = _best(fc)
            # the usual case: no extra search (compared as float32, MTCNN's probabilities)
            if stored >= np.float32(self.settled):
                self.k = 0
                break
            turned = [rotate_frame(fr, k) for k in (1, 2, 3)]
            probs = [stored, *map(_best, self.faces.detect(turned, first_level=self.probe_level(fr, fc)))]
            if max(probs) == 0.0:  # no face at any turn: no evidence either way
                self.empty += 1
                self.k = 0 if self.empty >= self.max_empty else None
                continue
            self.probes += 1
            self.log_odds += [_log_odds(p) for p in probs]
            k = int(np.argmax(probs))
            if probs[k] >= self.confident and _odds(probs[k]) >= ODDS_RATIO * _odds(stored):
                self.votes[k] += 1
            if self.votes[k] >= 2:
                self.k = k
            elif self.probes >= self.max_probes:
                self.k = self._by_log_odds()
        return bool(self.k)

    def probe_level(self, fr: Frame, found: Faces) -> int:
        """First P-Net pyramid level of the probes of ``fr`` (0: the whole pyramid)."""
        if not self.coarse_probes or not len(found):
            return 0
        from .mtcnn import first_level  # not at import: reports use this module without torch

        side = float(found.sides().max()) * fr.scale
        return first_level(PROBE_RATIO * side, self.faces.minsize(fr.scale))

    def _by_log_odds(self) -> int:
        k = int(np.argmax(self.log_odds))
        return k if self.log_odds[k] - self.log_odds[0] >= MARGIN else 0

    def apply(self, frames: list[Frame]) -> list[Frame]:
        return frames if not self.k else [rotate_frame(fr, self.k) for fr in frames]
