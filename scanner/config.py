"""Scan configuration: one validated model shared by YAML files and CLI flags.

Precedence: built-in defaults < ``--config FILE.yaml`` < flags given on the
command line. Unknown keys and bad values are errors that name the key.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.errors import DfscanError

DEFAULT_DETECTOR = "meso4_df"


class ConfigError(DfscanError):
    """Invalid configuration (message names the offending key)."""


class NoBoolNumbers(BaseModel):
    """Base of every config model (scan and serve): ``true``/``false`` only for booleans."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_number(cls, v, info):
        # pydantic's lax mode reads `frames: true` as 1 and `threshold: false` as 0, and
        # `sample_fps: yes` as 1: a slip in the YAML would silently become a setting.
        if isinstance(v, bool) and "bool" not in str(cls.model_fields[info.field_name].annotation):
            raise ValueError("must not be true/false")
        return v


class ScanConfig(NoBoolNumbers):
    """Every knob of ``dfscan scan`` (YAML keys use these names)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # sampling
    frames: int = Field(32, ge=1, le=10_000, description="evenly spaced frames per video")
    fps: float | None = Field(None, gt=0, le=240, description="sample at this rate instead of --frames")
    seek: bool = Field(True, description="jump over GOPs without sampled frames")
    # faces
    det_max_side: int = Field(960, ge=64, le=8192, description="longest side MTCNN sees")
    # le: no face is larger than an 8K frame; min_face: 100000 made every video no_face, exit 0
    min_face: int = Field(64, ge=12, le=8192, description="smallest face side kept, full-resolution px")
    face_prob: float = Field(0.9, ge=0.0, le=1.0, description="minimum MTCNN face probability")
    max_faces: int = Field(4, ge=1, le=64, description="faces kept per frame, largest first")
    antialias: bool = True
    region_search: bool = Field(True, description="search a sample only around the previous sample's faces")
    full_search_every: int = Field(8, ge=1, le=10_000, description="whole-frame face search after every N region-only samples")
    face_engine: Literal["auto", "eager", "onnxruntime"] = Field(
        "auto", description="runs MTCNN's nets: auto (eager) | eager | onnxruntime (CPU)")
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
    # frames: frame scores -> video_agg; tracks: faces grouped into tracks, video = max track (scanner.tracks)
    aggregate: Literal["frames", "tracks"] = "frames"
    topk: int = Field(5, ge=1)
    min_face_frames: int = Field(3, ge=1, description="fewer frames with a face -> no_face")
    # output
    out: str | list[str] | None = Field(
        None, description="output file(s): .jsonl, .csv, .html; with several, the first .jsonl/.csv "
        "is the primary output (a failure there stops the scan)")
    resume: bool = False
    retry_errors: bool = Field(False, description="with resume: scan inputs whose row is an error again")
    details: bool = Field(True, description="per-frame details in JSONL rows")
    hash: bool = Field(True, description="SHA-256 of each input file in its row")
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_push: str | None = Field(None, description="Prometheus Pushgateway URL: push metrics "
                                     "periodically and at the end (job dfscan_scan, instance = host name)")
    metrics_push_interval_s: float = Field(15.0, ge=0, le=3600, description="0: push only at the end")
    # A job whose host name changes every run (a Kubernetes pod, docker run --rm) left a group
    # per run in the gateway, each with its alerts, that no later scan replaced or cleared.
    metrics_push_instance: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$", description="the pushed group's "
        "instance label (null: the host name); a stable name lets each run replace the last")
    fail_on_fake: bool = False
    progress: bool = True
    workers: int | None = Field(
        None, ge=1, le=64, description="videos scanned in parallel (null: one per usable core on CPU "
        "with eager/onnxruntime engines, else 1); each then uses cores/workers threads")
    queue_frames: int = Field(8, ge=1, le=1024, description="decoded frames buffered per video")
    video_timeout_s: float | None = Field(
        3600.0, gt=0, le=7 * 86400, description="a video still unfinished this many seconds after its "
        "scan began becomes an error row (kind timeout) and the scan goes on; null: no limit")
    decode_thread: bool | None = Field(
        True, description="decode each video in its own thread, overlapping detection (null: "
        "the same); false decodes in the worker (fewer threads)")
    # distributed scans (scanner.distributed): workers must see the inputs at the same paths
    ray: str | None = Field(None, description="Ray cluster: 'auto' (RAY_ADDRESS), 'local' "
                            "(start one in-process) or host:port / ray://host:port; null: scan locally")
    ray_cpus_per_actor: float = Field(1.0, gt=0, le=256, description="CPUs reserved per Ray scan actor")
    ray_gpus_per_actor: float = Field(0.0, ge=0, le=16, description="GPUs per Ray scan actor (0.5 shares one)")
    ray_actors: int | None = Field(None, ge=1, le=10_000, description="scan actors (null: cluster CPUs / "
                                   "ray_cpus_per_actor)")
    ray_max_attempts: int = Field(3, ge=1, le=100, description="scans of a video whose worker died "
                                  "before it becomes an error row (worker_lost)")

    @field_validator("metrics_push")
    @classmethod
    def _push_url(cls, v: str | None) -> str | None:
        if v is not None:
            from .metrics_push import split_url

            split_url(v)  # ValueError names the problem
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "cpu" and v != "cuda" and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError("must be cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _check(self):
        for out in self.outputs:
            if Path(out).suffix.lower() not in (".jsonl", ".csv", ".html"):
                raise ValueError(f"out {out!r} must end in .jsonl, .csv or .html")
        return self

    def unused(self) -> list[str]:
        """Settings given that this scan does not apply, each said in a warning (a config file
        shared by local and Ray runs holds both kinds, so they are not errors)."""
        out = []
        if self.ray and self.workers is not None and self.workers > 1:
            out.append(f"workers {self.workers} is not used with ray: each actor scans one video at a "
                       "time (more actors: ray_actors)")
        ray_set = self.ray_actors is not None or self.ray_cpus_per_actor != 1.0 or self.ray_gpus_per_actor
        if not self.ray and ray_set:
            out.append("ray_actors / ray_cpus_per_actor / ray_gpus_per_actor are not used without ray")
        return out

    @property
    def outputs(self) -> list[str]:
        """``out`` as a list (empty when unset)."""
        return [] if not self.out else [self.out] if isinstance(self.out, str) else list(self.out)


def check_device(device: str) -> None:
    """:class:`ConfigError` unless ``device`` exists here (imports torch: call when scanning)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"device {device}: no CUDA GPU is available here (torch {torch.__version__}, "
                          f"CUDA build {torch.version.cuda or 'none'}); use --device cpu")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here")


def format_errors(e: ValidationError) -> str:
    """One part per problem, naming the key (``streams.0.url: ...``); scan and serve configs."""
    lines = []
    for err in e.errors(include_url=False):
        key = ".".join(str(x) for x in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "value_error":  # our own message: pydantic prefixes "Value error, "
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{key}: {msg}" if key else msg)  # a whole-config check names its key itself
    return "; ".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML keeps the last one silently) and a
    key that is not a name (``yes:``, ``1:``, ``~:``: a scan config passed them to pydantic
    as keywords, a ``TypeError`` traceback; a list as key was one in every config)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` (the parent's super() merges it): keys after it override it
            scalar = isinstance(key_node, yaml.ScalarNode)
            key = self.construct_object(key_node, deep=deep) if scalar else None
            if not isinstance(key, str):
                what = (f"{key_node.value!r} reads as {json.dumps(key, default=str)} (quote it)" if scalar
                        else f"not a {key_node.id}")
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a name: {what}", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (which one is meant?)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping (empty file -> {}; a key given twice, or one that is no name, is an error)."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:  # a ValueError: it escaped as a traceback
        raise ConfigError(f"cannot read config {path}: not UTF-8 text (byte {e.start})") from e
    except yaml.YAMLError as e:  # one line: PyYAML's own message draws the line with a caret
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"cannot read config {path}: {getattr(e, 'problem', None) or e}{where}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of key: value")
    return data


def build_config(yaml_path: str | Path | None = None, overrides: dict | None = None) -> ScanConfig:
    """Defaults < YAML file < ``overrides`` (flags actually given)."""
    data = load_yaml(yaml_path) if yaml_path else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    # fps wins over frames wherever both are set, so `--frames 16` lost to a file's `fps: 2`
    # (and to `--fps` given with it) without a word: a --frames flag clears the file's fps.
    if "frames" in given and "fps" in given:
        raise ConfigError("--frames and --fps both given: give one (--fps samples instead of --frames)")
    if "frames" in given:
        data["fps"] = None
    data.update(given)
    try:
        return ScanConfig(**data)
    except ValidationError as e:
        raise ConfigError(f"invalid configuration in {yaml_path or 'command line'}: {format_errors(e)}") from e
