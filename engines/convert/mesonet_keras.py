"""Convert the MesoNet authors' Keras ``.h5`` weights to a PyTorch safetensors file.

Usage::

    python -m engines.convert.mesonet_keras SRC.h5 OUT.safetensors --arch meso4|mesoinception4

The released files (Keras 2.1.5, ``save_weights``) hold one HDF5 group per layer,
named with Keras' per-type counter (``conv2d_7``, ``batch_normalization_3``,
``dense_4``), which numbers layers in the order the authors' code *created*
them. We therefore sort each type by that counter (numerically) and map it onto
our modules declared in the same creation order; the HDF5 ``layer_names``
order is topological and interleaves Inception branches, so it is not used.
Every tensor's shape is checked against the PyTorch model before saving.

Layout changes: conv kernels ``(kh, kw, in, out)`` -> ``(out, in, kh, kw)``;
dense kernels ``(in, out)`` -> ``(out, in)``, and the first dense layer's inputs
are reordered from Keras' ``(H, W, C)`` flatten order to PyTorch's ``(C, H, W)``.
Needs ``h5py`` (conversion only; scanning reads the safetensors file).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

from ..detectors.mesonet import ARCHS
from ..errors import WeightsError

_INCEPTION = ["b1", "b2a", "b2b", "b3a", "b3b", "b4a", "b4b"]
# Our module names per Keras layer type, in the authors' creation order.
LAYOUT: dict[str, dict[str, list[str]]] = {
    "meso4": {
        "conv2d": ["conv1", "conv2", "conv3", "conv4"],
        "batch_normalization": ["bn1", "bn2", "bn3", "bn4"],
        "dense": ["fc1", "fc2"],
    },
    "mesoinception4": {
        "conv2d": [f"inc1.{b}" for b in _INCEPTION] + [f"inc2.{b}" for b in _INCEPTION] + ["conv3", "conv4"],
        "batch_normalization": ["bn1", "bn2", "bn3", "bn4"],
        "dense": ["fc1", "fc2"],
    },
}
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def read_keras_layers(src: str | Path) -> dict[str, dict[str, list[tuple[int, dict[str, np.ndarray]]]]]:
    """``{type: [(counter, {weight: array}), ...]}`` sorted by counter, from a Keras h5 file."""
    try:
        import h5py
    except ImportError as e:
        raise WeightsError("converting Keras weights needs h5py: pip install h5py") from e
    out: dict[str, list] = {}
    try:
        with h5py.File(src, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f  # full-model saves nest weights
            for raw in root.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                g = root[name]
                wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in g.attrs.get("weight_names", [])]
                if not wnames:
                    continue  # input, pooling, dropout, flatten, concatenate, activation
                m = re.fullmatch(r"(.+)_(\d+)", name)
                if m is None:
                    raise WeightsError(f"{src}: unexpected layer name {name!r}")
                arrays = {w.rsplit("/", 1)[-1].split(":")[0]: np.asarray(g[w]) for w in wnames}
                out.setdefault(m.group(1), []).append((int(m.group(2)), arrays))
    except (OSError, KeyError) as e:
        raise WeightsError(f"{src}: not a readable Keras weights file: {e}") from e
    return {t: sorted(v, key=lambda p: p[0]) for t, v in out.items()}


def _dense_hwc_to_chw(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Keras ``(H*W*C, out)`` dense kernel -> PyTorch ``(out, C*H*W)``."""
    n_in, n_out = kernel.shape
    side = int(round((n_in / channels) ** 0.5))
    if side * side * channels != n_in:
        raise WeightsError(f"dense input size {n_in} is not a square map of {channels} channels")
    return kernel.reshape(side, side, channels, n_out).transpose(3, 2, 0, 1).reshape(n_out, n_in)


def _layer_tensors(kind: str, module: str, arrays: dict[str, np.ndarray], channels: int) -> dict[str, np.ndarray]:
    """One Keras layer's arrays -> ``{state_dict_key: array}`` in PyTorch layout."""
    if kind == "conv2d":
        return {f"{module}.weight": arrays["kernel"].transpose(3, 2, 0, 1), f"{module}.bias": arrays["bias"]}
    if kind == "dense":
        k = arrays["kernel"]
        w = _dense_hwc_to_chw(k, channels) if module == "fc1" else k.T
        return {f"{module}.weight": w, f"{module}.bias": arrays["bias"]}
    t = {f"{module}.{_BN[k]}": v for k, v in arrays.items()}
    t[f"{module}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return t


def convert(src: str | Path, arch: str) -> dict[str, torch.Tensor]:
    """Read a Keras MesoNet ``.h5`` and return a validated PyTorch state dict."""
    if arch not in LAYOUT:
        raise WeightsError(f"unknown arch {arch!r}; choose from {sorted(LAYOUT)}")
    layers = read_keras_layers(src)
    if set(layers) != set(LAYOUT[arch]):
        raise WeightsError(f"{src}: layer types {sorted(layers)} do not match {arch} ({sorted(LAYOUT[arch])})")
    model = ARCHS[arch]()
    expected = model.state_dict()
    channels = model.conv4.out_channels
    state: dict[str, torch.Tensor] = {}
    for kind, modules in LAYOUT[arch].items():
        if len(layers[kind]) != len(modules):
            raise WeightsError(f"{src}: {len(layers[kind])} {kind} layers, {arch} has {len(modules)}")
        for module, (_, arrays) in zip(modules, layers[kind]):
            for key, arr in _layer_tensors(kind, module, arrays, channels).items():
                if key not in expected or tuple(arr.shape) != tuple(expected[key].shape):
                    shape = tuple(expected[key].shape) if key in expected else "no such key"
                    raise WeightsError(f"{src}: {key} has shape {arr.shape}, {arch} expects {shape}")
                state[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(expected[key].dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise WeightsError(f"{src}: no weights for {missing}")
    model.load_state_dict(state)  # strict: proves the dict is complete and consistent
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.convert.mesonet_keras", description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="authors' Keras weights (.h5)")
    ap.add_argument("out", type=Path, help="output .safetensors")
    ap.add_argument("--arch", required=True, choices=sorted(LAYOUT))
    args = ap.parse_args(argv)
    from engines.files import write_safetensors

    try:
        state = convert(args.src, args.arch)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = {
        "arch": args.arch,
        "source": args.src.name,
        "converted_by": "dfscan engines.convert.mesonet_keras",
        "license": "Apache-2.0 (MesoNet authors); see NOTICE",
        "keras_output": "sigmoid = P(real); dfscan negates the logit to report P(fake)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(state, args.out, metadata=meta)
    print(f"wrote {args.out} ({len(state)} tensors, {sum(t.numel() for t in state.values())} values)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
