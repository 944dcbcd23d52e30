"""Response models of the live HTTP API: the OpenAPI schema that schemathesis checks."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    error: str
    details: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: Literal["ok", "unhealthy"]


class Ready(BaseModel):
    ready: bool
    streams: int


class TrackInfo(BaseModel):
    verdict: str
    score: float | None  # None: no finite score in the track's window


class StreamInfo(BaseModel):
    """One stream as :meth:`LiveService.describe` reports it (``url`` credentials masked)."""

    model_config = ConfigDict(extra="allow")  # sources may report more fields
    name: str
    url: str
    state: str
    state_for_s: float
    connects: int
    reconnects: int
    errors: int
    frames_decoded: int
    frames_sampled: int
    frames_corrupt: int = 0  # decoded frames flagged corrupt (concealed), never sampled
    frames_dropped: int
    fps: float
    last_error: str
    sample_fps: float
    tls_verify: bool | None = None  # rtsps/rtmps/https: whether certificates are checked; None: no TLS
    device: str
    verdict: str
    score: float | None
    samples: int
    faces: int
    nonfinite_scores: int = 0  # face scores in the window the detector gave as NaN/inf (left out)
    tracks: dict[str, TrackInfo]


class StreamList(BaseModel):
    streams: list[StreamInfo]


class Removed(BaseModel):
    removed: str
