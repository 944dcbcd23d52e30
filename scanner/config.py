"""Scan configuration: one validated model shared by YAML files and CLI flags.

Precedence: built-in defaults < ``--config FILE.yaml`` < flags given on the
command line. Unknown keys and bad values are errors that name the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.errors import DfscanError

DEFAULT_DETECTOR = "meso4_df"


class ConfigError(DfscanError):
    """Invalid configuration (message names the offending key)."""


class ScanConfig(BaseModel):
    """Every knob of ``dfscan scan`` (YAML keys use these names)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # sampling
    frames: int = Field(32, ge=1, le=10_000, description="evenly spaced frames per video")
    fps: float | None = Field(None, gt=0, le=240, description="sample at this rate instead of --frames")
    seek: bool = Field(True, description="jump over GOPs without sampled frames")
    # faces
    det_max_side: int = Field(960, ge=64, le=8192, description="longest side MTCNN sees")
    min_face: int = Field(64, ge=12, description="smallest face side kept, full-resolution px")
    face_prob: float = Field(0.9, ge=0.0, le=1.0, description="minimum MTCNN face probability")
    max_faces: int = Field(4, ge=1, le=64, description="faces kept per frame, largest first")
    antialias: bool = True
    # detector / engine
    detector: str = DEFAULT_DETECTOR
    weights: str | None = None
    device: str = "cpu"
    engine: str = Field("auto", description="auto | eager | eager-cl | compile | onnxruntime | tensorrt")
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    batch_size: int = Field(32, ge=1, le=4096)
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="default: the detector's")
    # aggregation
    frame_agg: Literal["max", "mean", "largest"] = "max"
    video_agg: Literal["mean", "median", "topk", "max"] = "mean"
    topk: int = Field(5, ge=1)
    min_face_frames: int = Field(3, ge=1, description="fewer frames with a face -> no_face")
    # output
    out: str | None = None
    resume: bool = False
    details: bool = Field(True, description="per-frame details in JSONL rows")
    hash: bool = Field(True, description="SHA-256 of each input file in its row")
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    fail_on_fake: bool = False
    progress: bool = True
    workers: int | None = Field(
        None, ge=1, le=64, description="videos scanned in parallel (null: one per core on CPU "
        "with eager/onnxruntime engines, else 1); each then uses cores/workers threads")
    queue_frames: int = Field(8, ge=1, le=1024, description="decoded frames buffered per video")
    decode_thread: bool | None = Field(
        None, description="decode in a thread overlapping detection (null: only with CUDA or "
        ">= 4 cores; on 2 cores both stages are CPU-bound and the thread measured slower)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "cpu" and v != "cuda" and not v.startswith("cuda:"):
            raise ValueError("must be cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.out and Path(self.out).suffix.lower() not in (".jsonl", ".csv", ".html"):
            raise ValueError("out must end in .jsonl, .csv or .html")
        return self


def _format_errors(e: ValidationError, source: str) -> str:
    parts = []
    for err in e.errors():
        key = ".".join(str(x) for x in err["loc"]) or "(root)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{key}: {msg}")
    return f"invalid configuration in {source}: " + "; ".join(parts)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping (empty file -> {})."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of key: value")
    return data


def build_config(yaml_path: str | Path | None = None, overrides: dict | None = None) -> ScanConfig:
    """Defaults < YAML file < ``overrides`` (flags actually given)."""
    data = load_yaml(yaml_path) if yaml_path else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ScanConfig(**data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, str(yaml_path or "command line"))) from e
