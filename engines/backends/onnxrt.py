"""ONNX Runtime engine.

The detector (normalisation included) is exported once with
``torch.onnx.export`` using the TorchScript-based exporter (``dynamo=False``,
needs no ``onnxscript``) with a dynamic batch axis, falling back to the
``torch.export`` based exporter when that fails and ``onnxscript`` is
installed. One session serves every allowed batch size.

CPU: ``CPUExecutionProvider`` with as many intra-op threads as torch uses.
CUDA (needs ``onnxruntime-gpu``): CUDA provider (optionally the TensorRT
provider first, ``cfg.ort_tensorrt``), inputs and outputs bound in place to
torch CUDA tensors (IO binding) on torch's current stream, so nothing is copied
through the host. fp16 exports a half-precision graph (CUDA only).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from ..detector import Detector, Output
from ..errors import EngineError, EngineUnavailable
from .base import ArtifactEngine, EngineConfig, output_layout
from .eager import prepared_module

INPUT = "crops"


def _ort():
    try:
        import onnxruntime as ort
    except Exception as e:  # ImportError, or a broken native library
        raise EngineUnavailable("onnxruntime is not installed: pip install onnxruntime "
                                "(or onnxruntime-gpu for CUDA)") from e
    return ort


class OnnxRuntimeEngine(ArtifactEngine):
    kind = "onnxruntime"
    artifact_name = "model.onnx"

    def __init__(self, detector: Detector, cfg: EngineConfig):
        super().__init__(detector, cfg)
        self.ort = _ort()
        if cfg.precision == "bf16":
            raise EngineUnavailable("onnxruntime engine: bf16 is not supported; use fp32 or fp16")
        if cfg.precision == "fp16" and not cfg.is_cuda:
            raise EngineUnavailable("onnxruntime engine: fp16 needs a CUDA device (CPU provider runs fp32)")
        if cfg.ort_tensorrt and not cfg.is_cuda:
            # As --engine tensorrt does: plain CPU ORT would run under the ort-trt name.
            raise EngineUnavailable("ort-trt (ONNX Runtime's TensorRT provider) needs a CUDA device (--device cuda)")
        if cfg.is_cuda:
            self._check_providers()  # here, before an export that could not be used
        self.single, self.shapes = output_layout(detector)
        self.out_names = [f"out{i}" for i in range(len(self.shapes))]
        self.session = None
        self.exporter = None

    def versions(self) -> dict[str, str]:
        from ..cache import package_version

        return {"torch": torch.__version__, "onnx": package_version("onnx"), "onnxruntime": self.ort.__version__}

    # -- export -------------------------------------------------------------
    def _export_inputs(self) -> tuple:
        """What both exporters take: (the module as exported, an example input, tensor names)."""
        model = prepared_module(self.detector, self.cfg.with_(channels_last=False))
        x = self.spec.example_input(max(2, self.cfg.batch_sizes[0]), device=self.device, dtype=self.cfg.dtype)
        return model, x, dict(input_names=[INPUT], output_names=self.out_names)

    def _export_legacy(self, f) -> None:
        """TorchScript-based export into ``f``: a path, or a binary buffer."""
        model, x, names = self._export_inputs()
        axes = {n: {0: "batch"} for n in [INPUT, *self.out_names]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(model, (x,), f, dynamo=False, dynamic_axes=axes,
                              opset_version=17, do_constant_folding=True, **names)
        self.exporter = "torchscript"

    def _build_uncached(self) -> None:
        """Exported in memory: a cache that cannot take the entry (read-only, full disk) often
        shares its file system with the temporary folder the base class exports into (a
        read-only root file system), and building without the cache then failed as well."""
        buf = io.BytesIO()
        try:
            self._export_legacy(buf)
        except Exception:  # noqa: BLE001 - the dynamo exporter writes a file: the base class's way
            return super()._build_uncached()
        self._load(Path("<in memory>"), buf.getvalue())

    def _export(self, path: Path) -> None:
        try:
            self._export_legacy(str(path))
            return
        except OSError as e:  # full disk, read-only cache: no other exporter would help
            raise EngineError(f"could not write the ONNX file {path}: {e}") from e
        except Exception as legacy_error:
            err = legacy_error
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise EngineError(f"ONNX export of {self.detector.name} failed (legacy exporter): {err}; "
                              "the dynamo exporter needs `pip install onnxscript`") from err
        model, x, names = self._export_inputs()
        try:
            batch = torch.export.Dim("batch", min=1, max=max(self.cfg.batch_sizes))
            torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},), **names)
            self.exporter = "dynamo"
        except Exception as e:
            raise EngineError(f"ONNX export of {self.detector.name} failed with both exporters: {e}") from e

    # -- session ------------------------------------------------------------
    def _check_providers(self) -> None:
        avail = self.ort.get_available_providers()
        if "CUDAExecutionProvider" not in avail:
            raise EngineUnavailable("onnxruntime on CUDA needs onnxruntime-gpu: pip uninstall onnxruntime && "
                                    "pip install onnxruntime-gpu")
        if self.cfg.ort_tensorrt and "TensorrtExecutionProvider" not in avail:
            raise EngineUnavailable("onnxruntime TensorRT provider not available (needs onnxruntime-gpu built "
                                    "with TensorRT and the NVIDIA TensorRT libraries)")

    def _key_fields(self) -> dict:
        fields = super()._key_fields()
        if self.cfg.ort_tensorrt:
            # Same ONNX file, other runtime: the stored parity of a CUDA-provider session was
            # reused for the TensorRT provider (other kernels, fp16 in TensorRT), never checked.
            fields["ort_tensorrt"] = True
        return fields

    def _providers(self, data: bytes = b"") -> list:
        if not self.cfg.is_cuda:
            return ["CPUExecutionProvider"]
        idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
        stream = str(torch.cuda.current_stream(self.device).cuda_stream)
        cuda = ("CUDAExecutionProvider", {"device_id": idx, "user_compute_stream": stream})
        if not self.cfg.ort_tensorrt:
            return [cuda, "CPUExecutionProvider"]
        return [("TensorrtExecutionProvider", self._trt_options(idx, stream, data)), cuda, "CPUExecutionProvider"]

    def _trt_options(self, idx: int, stream: str, data: bytes) -> dict:
        """TensorRT provider options for the ONNX model ``data`` (its bytes)."""
        import hashlib

        S, bs = self.spec.size, self.cfg.batch_sizes
        shape = lambda b: f"{INPUT}:{b}x3x{S}x{S}"  # noqa: E731
        from ..cache import TRT_DIR, EngineCache

        # ORT names its engine files by a hash of the graph's tensor NAMES (and versions), not
        # of the weights: meso4_df and meso4_f2f (or any --weights of one architecture) shared
        # one file, and a detector ran the TensorRT engine built with another one's weights.
        # One folder per ONNX file (weights and precision are in its bytes) keeps them apart.
        tag = hashlib.sha256(data).hexdigest()[:16]
        trt_dir = EngineCache(self.cfg.cache_dir).root / TRT_DIR / tag  # ORT manages its files
        trt_dir.mkdir(parents=True, exist_ok=True)
        return {
            "device_id": idx, "user_compute_stream": stream,
            "trt_fp16_enable": self.cfg.precision == "fp16",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_dir),
            "trt_profile_min_shapes": shape(bs[0]), "trt_profile_max_shapes": shape(bs[-1]),
            "trt_profile_opt_shapes": shape(bs[len(bs) // 2]),
        }

    def _load(self, path: Path, data: bytes) -> None:
        ort = self.ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Same thread budget as torch, so engines are compared (and share cores) fairly.
        so.intra_op_num_threads = torch.get_num_threads()
        so.log_severity_level = 3
        # The CPU memory arena stays on: it keeps the peak of the largest batch (+700 MB
        # RSS for MesoNet at batch 32, measured) but halves latency (106 vs 216 ms).
        try:  # from the very bytes whose checksum was checked (see ArtifactEngine._load)
            self.session = ort.InferenceSession(data, sess_options=so, providers=self._providers(data))
        except EngineUnavailable:
            raise
        except Exception as e:
            raise EngineError(f"onnxruntime could not load {path}: {e}") from e
        if self.cfg.is_cuda and "CUDAExecutionProvider" not in self.session.get_providers():
            # ORT falls back to the CPU when the CUDA libraries do not load; the CUDA IO
            # binding would then fail with a raw error, or the numbers would be the CPU's.
            raise EngineUnavailable("onnxruntime could not start its CUDA provider (CUDA/cuDNN libraries "
                                    f"missing?); providers: {self.session.get_providers()}")
        self.info.notes.append(f"providers {self.session.get_providers()}; exporter {self.exporter or 'cached'}")

    # -- run ----------------------------------------------------------------
    def _run(self, x: torch.Tensor) -> Output:
        x = x.to(self.cfg.dtype).contiguous()
        if self.cfg.is_cuda:
            outs = self._run_bound(x)
        else:
            outs = [torch.from_numpy(o) for o in self.session.run(self.out_names, {INPUT: x.numpy()})]
        return outs[0] if self.single else tuple(outs)

    def _run_bound(self, x: torch.Tensor) -> list[torch.Tensor]:
        """IO binding: ORT reads ``x`` and writes into torch-allocated outputs in place."""
        np_dtype = np.float16 if x.dtype == torch.float16 else np.float32
        idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
        b = self.session.io_binding()
        b.bind_input(INPUT, "cuda", idx, np_dtype, tuple(x.shape), x.data_ptr())
        outs = [torch.empty((x.shape[0], *s), dtype=x.dtype, device=self.device) for s in self.shapes]
        for name, o in zip(self.out_names, outs):
            b.bind_output(name, "cuda", idx, np_dtype, tuple(o.shape), o.data_ptr())
        self.session.run_with_iobinding(b)
        return outs
