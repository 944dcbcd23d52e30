"""``dfscan serve`` configuration (YAML, validated with pydantic, unknown keys refused).

See ``configs/serve.yaml`` for a commented example. Security rules enforced here:
the API binds to loopback unless told otherwise, and binding anywhere else
requires a bearer token (from an environment variable or a file, never inline).
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

import logging

from ..config import DEFAULT_DETECTOR, ConfigError, NoBoolNumbers, format_errors, load_yaml

from .tls import check_ca_file, check_trust
from .urls import NAME_RE, SourceError, parse_source


MAX_BUFFER_FRAMES = 64
MAX_STREAM_KEYS = 32  # keys a stream's object may hold before its unknown ones are not listed one by one
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


__all__ = ["ConfigError", "ServeConfig", "load_config", "parse_config"]  # ConfigError: the batch one
log = logging.getLogger("dfscan.live")


class _Renamed:
    """Accept a knob's old live-only name (same meaning as the batch name), with a warning."""

    RENAMED: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict):
            for old, new in cls.RENAMED.items():
                if old in data:
                    if new in data:
                        raise ValueError(f"{old} is the old name of {new}: give only {new}")
                    log.warning("config key %s is deprecated: it is now %s (as in dfscan scan)", old, new)
                    data = {**data, new: data[old]}
                    del data[old]
        return data


class _Model(NoBoolNumbers):  # as dfscan scan's: `sample_fps: yes` was read as 1
    # inf/nan are no setting: an infinite verdict window or track age keeps every sample and
    # every face track of a stream forever (memory and per-frame matching grow without end).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Trust:
    """``tls_verify``/``ca_file`` checks shared by the defaults and each stream."""

    @field_validator("ca_file", check_fields=False)
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        return None if v is None else check_ca_file(v)

    @model_validator(mode="after")
    def _trust(self):
        if self.ca_file and self.tls_verify is None:
            self.tls_verify = True  # a stream's own ca_file verifies it, whatever the defaults say
        check_trust(self.tls_verify, self.ca_file)
        return self


class StreamDefaults(_Trust, _Model):
    sample_fps: float = Field(2.0, ge=0, le=60)
    # Sampled RGB frames held per stream (~6 MB each at 1080p): capped so one stream cannot take the RAM.
    buffer_frames: int = Field(4, ge=1, le=MAX_BUFFER_FRAMES)
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    stall_s: float = Field(5.0, gt=0, le=300)
    backoff_initial_s: float = Field(0.5, gt=0, le=300)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    backoff_jitter: float = Field(0.25, ge=0, le=1)
    max_retries: int | None = Field(None, ge=0)
    # auto: TCP first, UDP when the server refuses TCP (461) or nothing arrives; the winner is remembered
    rtsp_transport: Literal["auto", "tcp", "udp", "udp_multicast", "http", "https"] = "auto"
    decode_threads: int = Field(1, ge=0, le=16)
    # Certificates of rtsps/rtmps/https(HLS) streams are checked against certifi's CAs (or ca_file);
    # false takes any certificate (a camera's self-signed one), credentials then go unverified too.
    tls_verify: bool = True
    ca_file: str | None = Field(None, max_length=4096, description="PEM CA bundle or the camera's certificate")


class StreamConfig(_Trust, _Model):
    name: str = Field(json_schema_extra={"pattern": NAME_RE.pattern},
                      description="stream name: also its metric label and URL path segment")
    url: str = Field(max_length=4096, description="rtsp(s), rtmp(s), http(s)/HLS, udp, rtp, srt URL or "
                     "/dev/videoN; user:password@ is accepted and never shown")
    sample_fps: float | None = Field(None, ge=0, le=60)
    buffer_frames: int | None = Field(None, ge=1, le=MAX_BUFFER_FRAMES)
    stall_s: float | None = Field(None, gt=0, le=300)
    max_retries: int | None = Field(None, ge=0)
    rtsp_transport: Literal["auto", "tcp", "udp", "udp_multicast", "http", "https"] | None = None
    tls_verify: bool | None = Field(None, description="check the server's TLS certificate (default true)")
    ca_file: str | None = Field(None, max_length=4096, description="PEM CA bundle or the camera's certificate "
                                "to trust instead of the public CAs (implies tls_verify true)")

    @model_validator(mode="before")
    @classmethod
    def _few_keys(cls, data):
        # Each unknown key is an error of its own: a POST /streams body of 16 MiB of keys made
        # 1.2 million, 33 s on the API's event loop (the probes waited) and a 111 MB answer.
        if isinstance(data, dict) and len(data) > MAX_STREAM_KEYS:
            raise ValueError(f"a stream takes at most {len(cls.model_fields)} keys "
                             f"({', '.join(cls.model_fields)}), not {len(data)}")
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # Names become Prometheus label values, URL path segments and log text. fullmatch: the
        # pattern's '$' also matches before a final newline ("cam\n" was a second, look-alike stream).
        if not NAME_RE.fullmatch(v):
            raise ValueError("name must be 1-64 chars of letters, digits, '_', '.', '-' (starting alphanumeric)")
        return v


class ModelConfig(_Renamed, _Model):
    RENAMED: ClassVar[dict[str, str]] = {"max_crops": "batch_size"}

    detector: str = DEFAULT_DETECTOR
    weights: str | None = None
    engine: str = Field("auto", description="auto | eager | compile | onnxruntime | tensorrt")
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    devices: list[str] = Field(default_factory=lambda: ["cpu"], min_length=1)
    batch_frames: int = Field(8, ge=1, le=256)
    max_wait_ms: float = Field(50.0, ge=0, le=5000)
    batch_size: int = Field(64, ge=1, le=4096, description="face crops per detector call (as dfscan scan)")
    # One batch running longer than this fails /healthz: a hung GPU or detector scores nothing.
    batch_timeout_s: float = Field(120.0, gt=0, le=3600)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if not (d in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", d))]
        if bad:
            raise ValueError(f"devices must be cpu, cuda or cuda:N, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError("devices must not repeat (one inference worker per device)")
        return v


class FaceConfig(_Renamed, _Model):
    """Face detection knobs, named as in :class:`scanner.config.ScanConfig`."""

    RENAMED: ClassVar[dict[str, str]] = {"max_side": "det_max_side", "min_prob": "face_prob"}
    det_max_side: int = Field(960, ge=64, le=8192)  # the ranges of dfscan scan's keys
    min_face: int = Field(64, ge=12, le=8192)
    face_prob: float = Field(0.9, ge=0, le=1)
    max_faces: int = Field(4, ge=1, le=64)

    def detector_kwargs(self) -> dict:
        """Keyword arguments of :class:`scanner.faces.FaceDetector`."""
        return {"max_side": self.det_max_side, "min_face": self.min_face, "min_prob": self.face_prob,
                "max_faces": self.max_faces}


def _decimal_sum(a: float, b: float) -> float:
    """``a + b`` as the numbers read: in binary 0.2 + 0.1 is 0.30000000000000004, so a score of
    0.3 (scores are compared at 6 decimals) stayed ``uncertain`` below a ``fake_above`` of
    "0.3", and 0.35 - 0.1 made 0.25 miss ``real_below``. With ``band`` 0, ``a`` comes back
    unchanged (as the batch scan's threshold)."""
    return float(Decimal(repr(a)) + Decimal(repr(b)))


class VerdictConfig(_Model):
    window_s: float = Field(10.0, gt=0, le=3600)  # samples held: sample_fps * window_s per stream/track
    # None: the detector's threshold +/- band (the dead band is the hysteresis)
    fake_above: float | None = Field(None, ge=0, le=1)
    real_below: float | None = Field(None, ge=0, le=1)
    band: float = Field(0.1, ge=0, le=0.5)
    min_samples: int = Field(3, ge=1)
    emit_interval_s: float = Field(30.0, gt=0)
    track_iou: float = Field(0.3, gt=0, le=1)
    track_max_age_s: float = Field(3.0, gt=0, le=3600)

    def resolved(self, threshold: float) -> dict:
        """Settings with unset bounds placed ``band`` around the detector's ``threshold``."""
        d = self.model_dump()
        d.pop("band")
        if d["fake_above"] is None:
            d["fake_above"] = min(1.0, _decimal_sum(threshold, self.band))
        if d["real_below"] is None:
            d["real_below"] = max(0.0, _decimal_sum(threshold, -self.band))
        if d["real_below"] > d["fake_above"]:
            raise ConfigError("verdict.real_below must be <= verdict.fake_above")
        return d

    def check_rate(self, sample_fps: float, where: str) -> None:
        """ValueError when a window can never hold ``min_samples`` frames at ``sample_fps``:
        every verdict of such a stream stays ``unknown`` for good, without a word."""
        most = math.floor(sample_fps * self.window_s) + 1  # samples at both ends of the window
        if sample_fps > 0 and most < self.min_samples:
            raise ValueError(f"{where}: at sample_fps {sample_fps:g} a verdict.window_s of {self.window_s:g} s "
                             f"holds at most {most} sampled frame(s), fewer than verdict.min_samples "
                             f"{self.min_samples}: no verdict could ever be reached (widen the window)")

    @model_validator(mode="after")
    def _band(self):
        if self.real_below is not None and self.fake_above is not None and self.real_below > self.fake_above:
            raise ValueError("real_below must be <= fake_above (the gap is the hysteresis band)")
        return self


class SinkConfig(_Model):
    type: Literal["jsonl", "stdout", "webhook"]
    name: str | None = None
    path: str | None = None  # jsonl
    url: str | None = None  # webhook
    only_alerts: bool | None = None  # default: webhook True, others False
    timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(3, ge=0, le=20)
    backoff_s: float = Field(0.5, ge=0, le=60)
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    headers_env: dict[str, str] = Field(default_factory=dict)  # header -> env var holding its value

    @model_validator(mode="after")
    def _fields(self):
        if self.type == "jsonl" and not self.path:
            raise ValueError("jsonl sink needs 'path'")
        if self.type == "webhook":
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("webhook sink needs an http(s) 'url'")
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


MIN_TOKEN_CHARS = 16


def checked_token(token: str | None, where: str = "") -> str | None:
    """``token`` (None stays None); :class:`ConfigError` when shorter than ``MIN_TOKEN_CHARS``.

    The message says where the token came from (``where``), never the token itself."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{where}API token must be at least {MIN_TOKEN_CHARS} characters")
    return token


def read_token_file(path: str, empty_ok: bool = True) -> str | None:
    """The token in ``api.token_file`` ``path`` (surrounding whitespace stripped).

    One reader for the start (:meth:`ApiConfig.token`) and every reload
    (:class:`scanner.live.auth.TokenFile`), so both refuse the same files with the same
    words: :class:`ConfigError` naming the file (never its content) when it cannot be read
    or holds a token shorter than ``MIN_TOKEN_CHARS``. An empty file is no token (None) when
    ``empty_ok``; else it is refused as too short (the start and every reload).
    """
    where = f"api.token_file {path}: "
    try:
        tok = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:  # a traceback (not UTF-8), or an errno line
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
        raise ConfigError(f"{where}cannot read the token: {why}") from None
    if not tok and empty_ok:
        return None
    return checked_token(tok, where)


class ApiConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    token_env: str | None = "DFSCAN_API_TOKEN"
    token_file: str | None = None
    max_body_bytes: int = Field(65536, ge=1024, le=1 << 24)
    # Host header allowlist (DNS-rebinding guard); loopback names are always allowed; an Origin
    # must name one of them. Default off loopback: any Host (the bearer token guards that bind),
    # and an Origin must then name the request's own Host (same-origin), so no other site's page gets in.
    allowed_hosts: list[str] | None = None
    limit_concurrency: int = Field(64, ge=4, le=10_000)  # requests in progress (probes exempt); beyond: 503
    request_timeout_s: float = Field(10.0, gt=0, le=300)  # a request must arrive within this
    keep_alive_s: float = Field(5.0, gt=0, le=300)  # idle keep-alive connections closed after this
    max_header_bytes: int = Field(16384, ge=1024, le=1 << 20)

    def hosts(self) -> list[str]:
        """Host header values the API accepts (``*``: any)."""
        if self.allowed_hosts is not None:
            return sorted(set(LOOPBACK_HOSTS) | set(self.allowed_hosts))
        if is_loopback(self.host):
            return list(LOOPBACK_HOSTS)
        if self.host in ("0.0.0.0", "::"):
            return ["*"]
        return sorted(set(LOOPBACK_HOSTS) | {self.host if ":" not in self.host else f"[{self.host}]"})

    def token(self) -> str | None:
        """The bearer token from ``token_file`` or ``$token_env``; None when unset or empty.

        :class:`ConfigError` when the file cannot be read or the token is too short."""
        if self.token_file:
            # An empty file is refused as too short, as on every reload: read as "no token", a
            # loopback API started with auth off for good, and a token written later was ignored.
            return read_token_file(self.token_file, empty_ok=False)
        if self.token_env:
            # Stripped as the file's is: a Kubernetes Secret made --from-file ends in a newline,
            # which no header can carry, and every request was then refused.
            return checked_token(os.environ.get(self.token_env, "").strip() or None)
        return None

    def check_auth(self) -> str | None:
        """Token to enforce; raise :class:`ConfigError` if binding off-loopback without one."""
        tok = self.token()
        where = f"set ${self.token_env or 'DFSCAN_API_TOKEN'} or api.token_file"
        if self.enabled and not is_loopback(self.host) and tok is None:
            raise ConfigError(f"API binds to {self.host}, not loopback: a bearer token is required ({where})")
        # '*' turns the Host check off, and with it the DNS-rebinding guard of a loopback API: any
        # web page whose name re-resolves to 127.0.0.1 is then same-origin and could add streams.
        if self.enabled and tok is None and "*" in (self.allowed_hosts or ()):
            raise ConfigError(f"api.allowed_hosts '*' takes any Host header: a bearer token is required "
                              f"(a web page could drive the API through DNS rebinding; {where}), "
                              "or list the host names")
        return tok


class ServeConfig(_Model):
    api: ApiConfig = Field(default_factory=ApiConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    faces: FaceConfig = Field(default_factory=FaceConfig)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    defaults: StreamDefaults = Field(default_factory=StreamDefaults)
    sinks: list[SinkConfig] = Field(default_factory=list)
    streams: list[StreamConfig] = Field(default_factory=list)
    allow_files: bool = False  # local files as sources (demos); never for untrusted configs
    max_streams: int = Field(64, ge=1, le=10_000)  # also bounds streams added through the API

    @model_validator(mode="after")
    def _streams(self):
        if len(self.streams) > self.max_streams:
            raise ValueError(f"{len(self.streams)} streams configured, max_streams is {self.max_streams}")
        names = [s.name for s in self.streams]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate stream names: {dup}")
        for s in self.streams:
            try:
                parse_source(s.url, allow_files=self.allow_files)
            except SourceError as e:
                raise ValueError(f"stream {s.name!r}: {e}") from e
        self._check_sinks()
        self.verdict.check_rate(self.defaults.sample_fps, "defaults")
        for s in self.streams:
            if s.sample_fps is not None:
                self.verdict.check_rate(s.sample_fps, f"stream {s.name!r}")
        return self

    def _check_sinks(self) -> None:
        """Refuse two sinks of one name or two JSONL sinks of one file.

        The name is each sink's metric label and log name (``type`` when unset): two webhooks
        added their counts into one ``dfscan_sink_failures_total{sink="webhook"}``, which could
        not say which receiver was down. One file written by two sinks got every event twice."""
        names = [s.name or s.type for s in self.sinks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"several sinks are named {dup} (a sink's name, its type when unset, is "
                             "its metric label and log name): give each a distinct 'name'")
        files = [os.path.realpath(s.path) for s in self.sinks if s.type == "jsonl" and s.path]
        dup = sorted({f for f in files if files.count(f) > 1})
        if dup:
            raise ValueError(f"several jsonl sinks write {dup}: each event would be written there more than once")


def load_config(path: str | Path) -> ServeConfig:
    """Read and validate a YAML config; raise :class:`ConfigError` with all problems."""
    # The batch reader: a key given twice is an error (safe_load kept the last one), a file
    # not UTF-8 is one line (it was a traceback), and so is a YAML error (it was five).
    return parse_config(load_yaml(path))


def parse_config(data: dict) -> ServeConfig:
    try:
        cfg = ServeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from e
    cfg.api.check_auth()
    return cfg
