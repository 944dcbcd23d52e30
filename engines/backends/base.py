"""Engine interface shared by every inference backend.

An :class:`Engine` wraps one detector compiled (or not) for one device and
precision. It is called on aligned face crops exactly like the detector itself:
``float32 (N, 3, S, S)``, RGB, values in [0, 255] (see :mod:`engines.spec`),
and returns the detector's raw output structure (a tensor, or a tuple of
tensors, batch first), always as ``float32`` on the engine's device.

Compiled backends are only ever shown the batch sizes in
``EngineConfig.batch_sizes``: a batch is padded up to the next allowed size (and
a batch larger than the biggest size is split into chunks), and the padding
rows are sliced off before anything is returned.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import torch

from ..detector import Detector, Output
from ..errors import EngineError

log = logging.getLogger(__name__)

KINDS = ("eager", "compile", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# On CPU a bigger batch runs no faster per crop (MesoNet on ONNX Runtime, one thread:
# 3.3 ms/crop at 8 and at 32) but its activations take ~450 MB more and its first two
# calls cost 2.5x (fresh memory pages): CPU engines see at most this many crops a call.
CPU_MAX_BATCH = 8
# Largest allowed batch size, the cap `dfscan scan --batch-size` has (scanner/config.py):
# warm-up allocates an input of every allowed size, so --batch-sizes 100000 asked for
# 4.9 GB for a 64 px model and got the process OOM-killed instead of an error.
MAX_BATCH = 4096


def batch_sizes_for(max_batch: int, device: str) -> tuple[int, ...]:
    """Engine batch sizes for a caller that gathers up to ``max_batch`` crops at a time
    (bigger calls are split by :meth:`Engine.__call__`)."""
    top = max_batch if str(device).startswith("cuda") else min(max_batch, CPU_MAX_BATCH)
    return tuple(sorted({1, min(8, top), top}))


@dataclass(frozen=True)
class EngineConfig:
    """How to build an engine.

    Attributes:
        kind: backend, one of :data:`KINDS`.
        precision: compute precision, ``fp32`` / ``fp16`` / ``bf16``; inputs are
            always given (and outputs returned) as float32.
        batch_sizes: the only batch sizes the compiled graph ever sees; sorted
            and de-duplicated on construction.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        channels_last: run convolutions in NHWC memory layout (eager/compile).
        compile_mode: ``torch.compile`` mode; ``"reduce-overhead"`` uses CUDA graphs.
        cache_dir: engine cache root (``None``: the default, see :mod:`engines.cache`).
        use_cache: read/write serialised artifacts (ONNX files, TensorRT programs).
        check_parity: compare against eager fp32 on real face crops after building.
        allow_parity_failure: keep an engine that failed parity (numbers still recorded).
        ort_tensorrt: with onnxruntime on CUDA, put the TensorRT execution provider first.
    """

    kind: str = "eager"
    precision: str = "fp32"
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    device: str = "cpu"
    channels_last: bool = False
    compile_mode: str = "default"
    cache_dir: str | None = None
    use_cache: bool = True
    check_parity: bool = True
    allow_parity_failure: bool = False
    ort_tensorrt: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EngineError(f"unknown engine kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.precision not in PRECISIONS:
            raise EngineError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.compile_mode not in COMPILE_MODES:
            raise EngineError(f"unknown compile mode {self.compile_mode!r}; choose from {', '.join(COMPILE_MODES)}")
        try:
            sizes = tuple(sorted({int(b) for b in self.batch_sizes}))
        except (TypeError, ValueError) as e:
            raise EngineError(f"batch sizes must be integers, got {self.batch_sizes!r}") from e
        if not sizes or sizes[0] < 1 or sizes[-1] > MAX_BATCH:
            raise EngineError(f"batch sizes must be 1..{MAX_BATCH}, got {self.batch_sizes!r}")
        object.__setattr__(self, "batch_sizes", sizes)
        object.__setattr__(self, "device", str(torch.device(self.device)))

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @property
    def is_cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    def with_(self, **changes: Any) -> "EngineConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        return d


def padded_size(n: int, sizes: Sequence[int]) -> int:
    """Smallest allowed size >= ``n`` (``n`` must not exceed ``max(sizes)``)."""
    for s in sizes:
        if s >= n:
            return s
    raise EngineError(f"batch of {n} exceeds the largest allowed size {max(sizes)}")


def _slice(out: Output, n: int) -> Output:
    if isinstance(out, torch.Tensor):
        return out[:n]
    return tuple(o[:n] for o in out)


def _cat(parts: list[Output]) -> Output:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, 0) if len(parts) > 1 else parts[0]
    return tuple(torch.cat(list(p), 0) for p in zip(*parts))


def _to_float(out: Output) -> Output:
    if isinstance(out, torch.Tensor):
        return out.float()
    return tuple(o.float() for o in out)


@dataclass
class BuildInfo:
    """What happened while building: filled by the backend and the factory."""

    build_s: float = 0.0
    cache: str = "none"  # "none" | "hit" | "miss" | "rebuilt (<reason>)"
    cache_key: str | None = None
    artifact: str | None = None
    artifact_sha256: str | None = None  # of the artifact loaded: the one a stored parity must name
    stored_parity: dict | None = None  # from the cache entry's metadata, as validated on load
    parity: dict | None = None
    notes: list[str] = field(default_factory=list)


class Engine:
    fixed_shapes = True  # pad every batch to an allowed size (False: run as given)
    """Callable inference engine for one detector (see module docstring).

    Subclasses implement :meth:`_build` (compile/export/load) and :meth:`_run`,
    which receives a batch whose size is exactly one of ``cfg.batch_sizes``.
    """

    kind: str = "?"

    def __init__(self, detector: Detector, cfg: EngineConfig):
        self.detector = detector
        self.cfg = cfg
        self.spec = detector.spec
        self.device = torch.device(cfg.device)
        self.info = BuildInfo()
        self._warm = False

    # -- to implement -------------------------------------------------------
    def _build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, x: torch.Tensor) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    # -- public -------------------------------------------------------------
    def build(self) -> "Engine":
        """Compile/export/load the engine; records the wall time in ``info.build_s``."""
        t0 = time.perf_counter()
        self._build()
        self.info.build_s = time.perf_counter() - t0
        return self

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor) -> Output:
        """Run on ``crops`` ``float32 (N, 3, S, S)`` RGB [0, 255]; any N >= 0.

        Returns the detector's raw output structure with exactly N rows, float32.
        """
        S = self.spec.size
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, S, S):
            raise EngineError(f"expected crops of shape (N, 3, {S}, {S}), got {tuple(crops.shape)}")
        crops = crops.to(self.device, torch.float32, non_blocking=True)
        n = crops.shape[0]
        top = self.cfg.batch_sizes[-1]
        parts = []
        for start in range(0, max(n, 1), top):
            chunk = crops[start : start + top]
            m = chunk.shape[0]
            # Compiled graphs only ever see allowed sizes; eager runs any size unpadded, but
            # not an empty batch, which some networks cannot reshape (ADM's reshape(0, -1)).
            size = padded_size(max(m, 1), self.cfg.batch_sizes) if self.fixed_shapes else max(m, 1)
            if size != m:
                # Zero rows: a valid (black) image, so no NaN/Inf can come from padding.
                pad = chunk.new_zeros((size - m, 3, S, S))
                chunk = torch.cat([chunk, pad], 0)
            parts.append(_slice(_to_float(self._run(chunk)), m))
        return _cat(parts)

    def p_fake(self, crops: torch.Tensor) -> torch.Tensor:
        """P(fake) per crop, ``float32 (N,)`` in [0, 1] (detector's own mapping)."""
        return self.detector.p_fake(self(crops))

    @torch.no_grad()
    def warmup(self, rounds: int = 2) -> None:
        """Run every allowed batch size ``rounds`` times (CUDA graphs record on the 2nd+)."""
        for b in self.cfg.batch_sizes:
            x = self.spec.example_input(b, device=self.device)
            for _ in range(rounds):
                self._run(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._warm = True

    def describe(self) -> dict:
        """Backend, versions, precision, shapes, build time, cache and parity numbers."""
        S = self.spec.size
        return {
            "backend": self.kind,
            "detector": self.detector.name,
            "weights_hash": self.detector.weights_hash,
            "versions": self.versions(),
            "config": self.cfg.to_dict(),
            "input_shapes": [[b, 3, S, S] for b in self.cfg.batch_sizes],
            "build_s": round(self.info.build_s, 4),
            "cache": self.info.cache,
            "cache_key": self.info.cache_key,
            "artifact": self.info.artifact,
            "parity": self.info.parity,
            "ready_s": getattr(self, "ready_s", None),
            "warm": self._warm,
            "notes": list(self.info.notes),
        }


def output_layout(detector: Detector) -> tuple[bool, list[tuple[int, ...]]]:
    """Probe the detector once: (returns a bare tensor?, per-crop shape of each output).

    Needed by backends whose runtime returns a flat list (ONNX Runtime) to
    rebuild the detector's structure and to pre-allocate bound outputs.
    """
    try:
        dev = next(detector.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    with torch.no_grad():
        out = detector(detector.spec.example_input(2, device=dev))
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    for o in outs:
        if o.ndim == 0 or o.shape[0] != 2:
            raise EngineError(f"{detector.name}: every output must be batch-first, got shape {tuple(o.shape)}")
    return isinstance(out, torch.Tensor), [tuple(o.shape[1:]) for o in outs]


class ArtifactEngine(Engine):
    """Engine built from one file artifact that is cached on disk.

    Subclasses set ``artifact_name`` and implement :meth:`_export` (write the
    artifact) and :meth:`_load` (make the engine runnable from it). The cache
    re-validates the entry on every build, so a corrupt file is rebuilt.
    """

    artifact_name = "engine.bin"

    def _export(self, path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, path, data: bytes) -> None:  # pragma: no cover - abstract
        """Make the engine runnable from ``data``, the artifact's bytes as checked (``path``:
        where they were read, for messages). Never from the file by name: one swapped after
        its check (an entry of a shared cache renamed away and replaced) would run under the
        stored parity of the checked file."""
        raise NotImplementedError

    def _key_fields(self) -> dict:
        from ..cache import code_hash, key_fields
        from .eager import EagerEngine  # prepared_module: the export code every backend uses

        cfg = {"precision": self.cfg.precision, "batch_sizes": list(self.cfg.batch_sizes)}
        return key_fields(self.detector, self.kind, cfg, self.versions(), self.device,
                          code=code_hash(type(self), EagerEngine))

    def _build_uncached(self) -> None:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="dfscan-engine-") as tmp:
            path = Path(tmp) / self.artifact_name
            self._export(path)
            self._load(path, path.read_bytes())

    def _build(self) -> None:
        from ..cache import CacheUnwritable, EngineCache, cache_key

        if not self.cfg.use_cache:
            return self._build_uncached()
        cache = EngineCache(self.cfg.cache_dir)
        fields = self._key_fields()
        key = cache_key(fields)
        art, status = cache.lookup(key, fields)
        if art is None:
            try:
                art = cache.store(key, fields, self.artifact_name, self._export)
            except CacheUnwritable as e:
                # The cache only saves the next start an export: a read-only or full one must
                # not stop a scan (auto is the cached ONNX engine on CPU), as it did.
                log.warning("%s; the %s engine is built without it", e, self.kind)
                self._build_uncached()
                self.info.cache = "none (cache not writable)"
                return
        # Lookup or store read the artifact once and hashed those bytes: they are what is
        # loaded, and their checksum is what a stored parity must name (no second hash).
        self.info.artifact_sha256 = art.sha256
        self.info.stored_parity = art.meta.get("parity") if status == "hit" else None
        self._load(art.path, art.data)
        self.info.cache, self.info.cache_key, self.info.artifact = status, key, str(art.path)
