"""TensorRT engine through torch-tensorrt's dynamo (``torch.export``) path.

Built once with one optimisation profile whose min/opt/max batch come from
``cfg.batch_sizes``, serialised with ``torch_tensorrt.save`` as an
ExportedProgram (``.ep``) into the engine cache, and loaded back with
``torch_tensorrt.load`` / ``torch.export.load`` on later runs, so TensorRT does
not rebuild. fp16 converts the module and its input to half precision
(TensorRT's strongly typed mode follows the graph's dtypes).

TensorRT's runtime libraries are not on PyPI; without them this module raises
:class:`EngineUnavailable` with the install hint. Not exercised on the
development machine (no GPU): written from torch-tensorrt's documented API.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from ..detector import Detector, Output
from ..errors import EngineError, EngineUnavailable
from .base import ArtifactEngine, EngineConfig
from .eager import prepare_input, prepared_module

INSTALL_HINT = ("TensorRT engine unavailable: pip install torch-tensorrt tensorrt "
                "(needs the NVIDIA TensorRT libraries and a CUDA GPU)")


def import_torch_tensorrt():
    """``torch_tensorrt`` or :class:`EngineUnavailable` (it raises plain Exception without its libs)."""
    try:
        import torch_tensorrt
    except Exception as e:
        raise EngineUnavailable(f"{INSTALL_HINT}; import failed: {type(e).__name__}: {e}".split("\n")[0]) from e
    return torch_tensorrt


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason) — for test skips and ``dfscan engines list``."""
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA GPU; none is available"
    try:
        import_torch_tensorrt()
    except EngineUnavailable as e:
        return False, str(e)
    return True, ""


class TensorRTEngine(ArtifactEngine):
    kind = "tensorrt"
    artifact_name = "model.ep"

    def __init__(self, detector: Detector, cfg: EngineConfig):
        super().__init__(detector, cfg)
        if not cfg.is_cuda:
            raise EngineUnavailable("TensorRT engine needs a CUDA device (--device cuda)")
        self.trt = import_torch_tensorrt()
        self.model = None

    def versions(self) -> dict[str, str]:
        v = {"torch": torch.__version__, "torch_tensorrt": getattr(self.trt, "__version__", "?")}
        try:
            import tensorrt

            v["tensorrt"] = tensorrt.__version__
        except Exception:  # the version is informative only
            pass
        return v

    def _trt_input(self):
        S, bs = self.spec.size, self.cfg.batch_sizes
        shape = lambda b: (b, 3, S, S)  # noqa: E731
        return self.trt.Input(min_shape=shape(bs[0]), opt_shape=shape(bs[len(bs) // 2]),
                              max_shape=shape(bs[-1]), dtype=self.cfg.dtype)

    def _compile_kwargs(self) -> dict:
        params = inspect.signature(self.trt.dynamo.compile).parameters
        kw = {"min_block_size": 1}
        if "use_explicit_typing" in params:
            kw["use_explicit_typing"] = True  # precision follows the (half) module
        else:
            kw["enabled_precisions"] = {self.cfg.dtype}
        if "cache_built_engines" in params:
            kw["cache_built_engines"] = False  # our cache holds the artifact
        return kw

    def _export(self, path: Path) -> None:
        model = prepared_module(self.detector, self.cfg.with_(channels_last=False))
        bs = self.cfg.batch_sizes
        example = self.spec.example_input(bs[len(bs) // 2], device=self.device, dtype=self.cfg.dtype)
        spec = self._trt_input()
        try:
            batch = torch.export.Dim("batch", min=bs[0], max=max(bs[-1], bs[0] + 1))
            ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
            gm = self.trt.dynamo.compile(ep, arg_inputs=[spec], **self._compile_kwargs())
            self._save(gm, path, spec, example)
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"TensorRT build of {self.detector.name} failed: {type(e).__name__}: {e}") from e

    def _save(self, gm, path: Path, spec, example: torch.Tensor) -> None:
        if "dynamic_shapes" in inspect.signature(self.trt.save).parameters:
            # Recent torch-tensorrt infers the dynamic batch dim from the Input's min/max.
            self.trt.save(gm, str(path), output_format="exported_program", arg_inputs=[spec])
        else:
            # Older releases: keep the graph's symbolic batch without re-tracing.
            self.trt.save(gm, str(path), output_format="exported_program", inputs=[example], retrace=False)

    def _load(self, path: Path, data: bytes) -> None:
        import io

        try:
            # From the checked bytes (see ArtifactEngine._load): a TensorRT program is loaded as
            # code, and opening it by name again would run a file swapped in after the check.
            # torch.export.load itself: _save always writes an ExportedProgram, and some
            # torch_tensorrt.load releases try torch.jit.load first, which drains a buffer
            # (importing torch_tensorrt, done by self.trt, registers the TensorRT ops).
            prog = torch.export.load(io.BytesIO(data))
            self.model = prog.module() if hasattr(prog, "module") else prog
        except Exception as e:
            raise EngineError(f"could not load TensorRT program {path}: {e}") from e

    def _run(self, x: torch.Tensor) -> Output:
        return self.model(prepare_input(x, self.cfg))
