"""MTCNN's three networks on the detectors' engines (``face_engine`` in the scan config).

facenet-pytorch's P-Net, R-Net and O-Net are exported once to ONNX (TorchScript
exporter, dynamic batch; P-Net also dynamic height and width, for the image
pyramid) and cached in the engine cache (:class:`engines.cache.EngineCache`,
keyed by the nets' weights and the torch/onnx versions, checksummed on every
load). :class:`OrtNet` then stands in for each net inside the cascade of
:mod:`scanner.mtcnn`, so the cascade code is the same whatever runs the nets.

Engines:

- ``eager``: facenet-pytorch's nets in PyTorch, channels_last (the default on
  CPU: measured as fast as or faster than ONNX Runtime here, see the README).
- ``onnxruntime``: ONNX Runtime's CPU provider (inputs/outputs go through host
  memory, so it is CPU-only).

:func:`net_parity` compares each engine net with facenet-pytorch's on the same
inputs (``tests/test_mtcnn_engine.py``).
"""
from __future__ import annotations

import hashlib
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from engines.errors import EngineError, EngineUnavailable

log = logging.getLogger(__name__)
FACE_ENGINES = ("auto", "eager", "onnxruntime")
# Largest |difference| allowed between an ONNX net's outputs and the torch net's (measured
# < 1e-5 here; probabilities and box offsets are O(1), so 1e-3 never moves a face).
PARITY_MAX_ABS = 1e-3
# name -> (example input shape, output names, dynamic axes of the input).
_NETS = {
    "pnet": ((1, 3, 60, 80), ("reg", "prob"), {0: "batch", 2: "height", 3: "width"}),
    "rnet": ((2, 3, 24, 24), ("reg", "prob"), {0: "batch"}),
    "onet": ((2, 3, 48, 48), ("reg", "points", "prob"), {0: "batch"}),
}


def resolve_face_engine(name: str, device: str = "cpu") -> str:
    """``auto`` -> ``eager`` (fastest measured on CPU; on CUDA the nets stay in torch)."""
    if name not in FACE_ENGINES:
        raise EngineError(f"unknown face engine {name!r}; choose from {', '.join(FACE_ENGINES)}")
    if name == "onnxruntime" and torch.device(device).type != "cpu":
        raise EngineUnavailable("face_engine onnxruntime runs on CPU only; use eager on CUDA")
    return "eager" if name == "auto" else name


def _ort():
    try:
        import onnxruntime as ort
    except Exception as e:  # ImportError, or a broken native library
        raise EngineUnavailable("onnxruntime is not installed: pip install onnxruntime") from e
    return ort


def _export(net: torch.nn.Module, name: str, path: Path) -> None:
    shape, outs, axes = _NETS[name]
    out_axes = {o: ({0: "batch", 2: "height", 3: "width"} if name == "pnet" else {0: "batch"}) for o in outs}
    net = net.to(memory_format=torch.contiguous_format).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(net, (torch.rand(shape),), str(path), dynamo=False, input_names=["x"],
                          output_names=list(outs), dynamic_axes={"x": axes, **out_axes}, opset_version=17)


def _code_hash(net: torch.nn.Module) -> str:
    """Hash of this file and of the file defining ``net``'s class (``scanner/mtcnn_nets.py``):
    the graph is traced from that class's ``forward``, so a fix there (e.g. ``_flat``'s
    order) must not keep serving an ONNX file exported from the older code."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(Path(sys.modules[type(net).__module__].__file__).read_bytes())
    return h.hexdigest()[:16]


def exported_net(net: torch.nn.Module, name: str, cache_dir: str | Path | None = None,
                 spare: Path | None = None):
    """:func:`exported_model`'s path only (tests and tools that look at the file)."""
    return exported_model(net, name, cache_dir, spare).path


def exported_model(net: torch.nn.Module, name: str, cache_dir: str | Path | None = None,
                   spare: Path | None = None):
    """ONNX model of facenet's ``name`` net (``pnet``/``rnet``/``onet``) as an
    :class:`engines.cache.Artifact` (its file and the bytes read and hashed once), from the
    cache; exported into the folder ``spare`` when the cache cannot take it (read-only, full)."""
    import copy

    from engines.cache import (Artifact, CacheUnwritable, EngineCache, cache_key, dfscan_version,
                               package_version, state_dict_hash)

    # The dfscan version and this file's hash, as the detector engines' key has: a changed
    # export (axes, opset, a fix) must not keep serving the file an older version wrote.
    code = _code_hash(net)
    fields = {"kind": "mtcnn-onnx", "net": name, "weights": state_dict_hash(net),
              "versions": {"torch": torch.__version__, "onnx": package_version("onnx")}, "opset": 17,
              "dfscan": dfscan_version(), "code": code}
    cache = EngineCache(cache_dir)
    key = cache_key(fields)
    art, _ = cache.lookup(key, fields)
    if art is None:
        # Export a copy: the live net keeps its channels_last layout.
        try:
            art = cache.store(key, fields, f"{name}.onnx", lambda p: _export(copy.deepcopy(net), name, p))
        except CacheUnwritable as e:  # a cache only spares the next start an export
            if spare is None:
                raise
            log.warning("%s; MTCNN's %s is exported without it", e, name)
            path = spare / f"{name}.onnx"
            _export(copy.deepcopy(net), name, path)
            art = Artifact(path, path.read_bytes(), {})
    return art


class OrtNet(torch.nn.Module):
    """One MTCNN net on an ONNX Runtime CPU session, called like the torch net.

    Input ``float32 (N, 3, H, W)`` normalised as facenet does ((x - 127.5) / 128),
    any memory layout; outputs are the torch net's tuple, ``float32`` CPU tensors.
    """

    def __init__(self, model, threads: int | None = None):
        """``model``: an :class:`engines.cache.Artifact` (its checked bytes are what runs:
        a cached file swapped after its check is never read) or a path to an ONNX file."""
        super().__init__()
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.enable_mem_pattern = False  # batch (and P-Net's size) change on every call
        so.log_severity_level = 3
        path, data = (model, None) if isinstance(model, (str, Path)) else (model.path, model.data)
        try:  # from bytes read once: what use_face_engine's parity check then runs
            data = Path(path).read_bytes() if data is None else data
            self.session = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise EngineError(f"onnxruntime could not load {path}: {e}") from e
        self.outputs = [o.name for o in self.session.get_outputs()]
        # The cascade asks the nets for their device through parameters().
        self.device_anchor = torch.nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.detach().to(torch.float32).contiguous()
        if x.shape[0] == 0:
            raise EngineError("empty batch")  # the cascade never calls with none
        outs = self.session.run(self.outputs, {"x": x.numpy()})
        return tuple(torch.from_numpy(o) for o in outs)


def use_face_engine(mtcnn, engine: str, device: str = "cpu", cache_dir: str | Path | None = None) -> str:
    """Swap ``mtcnn``'s nets for ``engine``'s (in place); returns the engine used."""
    engine = resolve_face_engine(engine, device)
    if engine == "onnxruntime":
        with tempfile.TemporaryDirectory(prefix="dfscan-mtcnn-") as spare:  # sessions hold their graph
            nets = {name: OrtNet(exported_model(getattr(mtcnn, name), name, cache_dir, Path(spare)))
                    for name in _NETS}
        _check_parity(mtcnn, nets)
        for name, net in nets.items():
            setattr(mtcnn, name, net)
    return engine


def _check_parity(mtcnn, nets: dict) -> None:
    """Refuse ONNX nets whose outputs differ from facenet's torch nets (as every detector
    engine is checked): a cached file edited, or replaced, would otherwise find other faces."""
    from types import SimpleNamespace

    diffs = net_parity(mtcnn, SimpleNamespace(**nets))
    bad = {k: v for k, v in diffs.items() if not v <= PARITY_MAX_ABS}  # NaN fails too
    if bad:
        raise EngineError("face_engine onnxruntime: MTCNN's ONNX nets differ from facenet's torch nets "
                          f"(max |difference| {', '.join(f'{k} {v:.3g}' for k, v in bad.items())}; "
                          f"allowed {PARITY_MAX_ABS}); clear the engine cache (dfscan engines clear --all)")


@torch.inference_mode()
def net_parity(reference, candidate, seed: int = 0) -> dict[str, float]:
    """Max |difference| of every output of each net on the same random inputs (P-Net at
    two odd sizes, R/O-Net at batch 1 and 7)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"pnet": [(1, 3, 37, 53), (3, 3, 120, 97)], "rnet": [(1, 3, 24, 24), (7, 3, 24, 24)],
              "onet": [(1, 3, 48, 48), (7, 3, 48, 48)]}
    out = {}
    for name, sizes in shapes.items():
        worst = 0.0
        for s in sizes:
            x = torch.rand(s, generator=g) * 2 - 1
            a, b = getattr(reference, name)(x), getattr(candidate, name)(x)
            worst = max(worst, *(float((p - q).abs().max()) for p, q in zip(a, b)))
        out[name] = worst
    return out
