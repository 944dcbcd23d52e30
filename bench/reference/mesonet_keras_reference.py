"""Produce tests/data/mesonet_keras_reference.json with the authors' Keras MesoNet.

Reproducibility tool, NOT imported by dfscan or its tests. Run it in a scratch
virtual environment outside the repository (TensorFlow is not a dfscan
dependency)::

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu pillow h5py
    /tmp/tfvenv/bin/python bench/reference/mesonet_keras_reference.py \\
        --weights ../shared/weights/mesonet --images tests/data/mesonet \\
        --out tests/data/mesonet_keras_reference.json

The Keras models are rebuilt here from the paper (Afchar et al., WIFS 2018,
Fig. 2 and 4) and the layer hyper-parameters of the authors' ``classifiers.py``
(written independently, not copied). Each ``.h5`` file is loaded twice:

* ``positional``: Keras' own ``model.load_weights`` (legacy HDF5 loader, matches
  layers in topological order, exactly how the authors' code loads them);
* ``by_counter``: each Keras layer type sorted by its auto-name counter
  (``conv2d_7`` ...), i.e. creation order, assigned to our layers in creation
  order (the rule the dfscan converter uses).

Both must agree, which checks the converter's mapping of the Inception branches
(several share shapes) against Keras' own loader.

Inputs: the four test crops read exactly like the authors' evaluation
(``ImageDataGenerator(rescale=1/255).flow_from_directory(target_size=(256, 256))``,
which resizes with PIL nearest-neighbour), plus three uint8 noise images from
``numpy.random.default_rng(2018)``. The JSON records each input's SHA-256 (of the
``uint8 (256, 256, 3)`` array) so the PyTorch test can prove it feeds the same
pixels, the class indices Keras assigns to the folders, and per model the
sigmoid output and the pre-sigmoid value (computed from the Keras model's
penultimate activations and last dense layer in float64). It also stores Keras
``MaxPooling2D(padding='same')`` outputs on odd sizes (not reached at 256 px)
to pin down the padding rule.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers as L  # noqa: E402
from PIL import Image  # noqa: E402

SIZE = 256
FILES = {  # dfscan name -> (authors' file, architecture)
    "meso4_df": ("Meso4_DF.h5", "meso4"),
    "meso4_f2f": ("Meso4_F2F.h5", "meso4"),
    "mesoinception4_df": ("MesoInception_DF.h5", "mesoinception4"),
    "mesoinception4_f2f": ("MesoInception_F2F.h5", "mesoinception4"),
}
NOISE_SEED, NOISE_COUNT = 2018, 3


class Builder:
    """Creates Keras layers and remembers, per type, the order they were made."""

    def __init__(self):
        self.made: dict[str, list] = {"conv2d": [], "batch_normalization": [], "dense": []}

    def conv(self, x, filters, k, dilation=1, relu=True):
        layer = L.Conv2D(filters, (k, k), padding="same", dilation_rate=dilation,
                         activation="relu" if relu else None)
        self.made["conv2d"].append(layer)
        return layer(x)

    def bn(self, x):
        layer = L.BatchNormalization()  # Keras default epsilon 1e-3
        self.made["batch_normalization"].append(layer)
        return layer(x)

    def dense(self, x, units, activation=None):
        layer = L.Dense(units, activation=activation)
        self.made["dense"].append(layer)
        return layer(x)

    def inception(self, x, a, b, c, d):
        y1 = self.conv(x, a, 1)
        y2 = self.conv(self.conv(x, b, 1), b, 3)
        y3 = self.conv(self.conv(x, c, 1), c, 3, dilation=2)
        y4 = self.conv(self.conv(x, d, 1), d, 3, dilation=3)
        return L.Concatenate(axis=-1)([y1, y2, y3, y4])


def build(arch: str):
    """Return (model, penultimate-output model, Builder) for ``meso4``/``mesoinception4``."""
    bd = Builder()
    inp = keras.Input(shape=(SIZE, SIZE, 3))
    if arch == "meso4":
        x = L.MaxPooling2D((2, 2), padding="same")(bd.bn(bd.conv(inp, 8, 3)))
        x = L.MaxPooling2D((2, 2), padding="same")(bd.bn(bd.conv(x, 8, 5)))
    else:
        x = L.MaxPooling2D((2, 2), padding="same")(bd.bn(bd.inception(inp, 1, 4, 4, 2)))
        x = L.MaxPooling2D((2, 2), padding="same")(bd.bn(bd.inception(x, 2, 4, 4, 2)))
    x = L.MaxPooling2D((2, 2), padding="same")(bd.bn(bd.conv(x, 16, 5)))
    x = L.MaxPooling2D((4, 4), padding="same")(bd.bn(bd.conv(x, 16, 5)))
    y = L.Dropout(0.5)(L.Flatten()(x))
    h = L.LeakyReLU(negative_slope=0.1)(bd.dense(y, 16))
    out = bd.dense(L.Dropout(0.5)(h), 1, activation="sigmoid")
    return keras.Model(inp, out), keras.Model(inp, h), bd


def load_by_counter(bd: Builder, path: Path) -> None:
    """Assign each h5 layer group to our layer of the same type and creation rank."""
    groups: dict[str, list] = {}
    with h5py.File(path, "r") as f:
        for raw in f.attrs["layer_names"]:
            name = raw.decode()
            wn = [w.decode() for w in f[name].attrs["weight_names"]]
            if wn:
                kind, n = re.fullmatch(r"(.+)_(\d+)", name).groups()
                groups.setdefault(kind, []).append((int(n), [np.asarray(f[name][w]) for w in wn]))
    for kind, made in bd.made.items():
        ranked = sorted(groups[kind], key=lambda p: p[0])
        assert len(ranked) == len(made), (kind, len(ranked), len(made))
        for layer, (_, arrays) in zip(made, ranked):
            layer.set_weights(arrays)  # h5 order: kernel, bias / gamma, beta, mean, var


def read_inputs(images: Path) -> tuple[list[str], np.ndarray, dict]:
    """Test crops as the authors' loader yields them, then the noise images; uint8 NHWC."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    gen = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        str(images), target_size=(SIZE, SIZE), batch_size=64, class_mode="binary", shuffle=False)
    x01, labels = next(gen)
    names = [p.replace(os.sep, "/") for p in gen.filenames]
    # Same pixels straight from PIL (what the PyTorch test does): must match the generator.
    pil = np.stack([np.asarray(Image.open(images / n).convert("RGB").resize((SIZE, SIZE), Image.NEAREST))
                    for n in names])
    assert np.array_equal(np.round(x01 * 255).astype(np.uint8), pil), "PIL decode != Keras generator"
    noise = np.random.default_rng(NOISE_SEED).integers(0, 256, (NOISE_COUNT, SIZE, SIZE, 3), dtype=np.uint8)
    names += [f"noise:{NOISE_SEED}:{i}" for i in range(NOISE_COUNT)]
    info = {"class_indices": gen.class_indices, "labels": {n: float(v) for n, v in zip(names, labels)}}
    return names, np.concatenate([pil, noise]), info


def run_model(name: str, weights: Path, x_u8: np.ndarray) -> dict:
    fname, arch = FILES[name]
    model, penult, bd = build(arch)
    model.load_weights(str(weights / fname))
    x = x_u8.astype(np.float32) / np.float32(255.0)
    positional = model.predict(x, batch_size=len(x), verbose=0)[:, 0]
    load_by_counter(bd, weights / fname)
    sigmoid = model.predict(x, batch_size=len(x), verbose=0)[:, 0]
    w, b = bd.made["dense"][-1].get_weights()
    logit = penult.predict(x, batch_size=len(x), verbose=0).astype(np.float64) @ w.astype(np.float64) + b
    return {
        "file": fname, "arch": arch,
        "file_sha256": hashlib.sha256((weights / fname).read_bytes()).hexdigest(),
        "params": int(model.count_params()),
        "sigmoid": [float(v) for v in sigmoid],
        "pre_sigmoid": [float(v) for v in logit[:, 0]],
        "positional_vs_by_counter_max_abs_diff": float(np.max(np.abs(positional - sigmoid))),
    }


def pool_inputs(h: int, w: int, c: int = 2) -> np.ndarray:
    """Deterministic signed ``float32 (1, h, w, c)`` map (negative maxima expose zero padding)."""
    return np.sin(np.arange(h * w * c, dtype=np.float64) * 0.37).astype(np.float32).reshape(1, h, w, c)


def pool_reference() -> list[dict]:
    """Keras ``MaxPooling2D(padding='same')`` on odd/uneven sizes, where it differs from floor pooling."""
    cases = []
    for k, h, w in [(2, 15, 17), (4, 29, 30), (4, 31, 33)]:
        y = L.MaxPooling2D((k, k), padding="same")(pool_inputs(h, w))
        cases.append({"k": k, "h": h, "w": w, "input": f"sin(0.37 * arange({h}*{w}*2)) as (1, {h}, {w}, 2) NHWC",
                      "output_nhwc": np.asarray(y)[0].tolist()})
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True, help="folder with the authors' .h5 files")
    ap.add_argument("--images", type=Path, required=True, help="folder with df/ and real/ crops")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    names, x_u8, info = read_inputs(args.images)
    result = {
        "produced_by": "bench/reference/mesonet_keras_reference.py (see its docstring)",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "machine": platform.machine()},
        "input": {"size": SIZE, "scale": "uint8 / 255 (float32)", "layout": "NHWC RGB",
                  "test_images_resize": "PIL nearest (Keras load_img default)",
                  "noise": f"numpy.random.default_rng({NOISE_SEED}).integers(0, 256, "
                           f"({NOISE_COUNT}, {SIZE}, {SIZE}, 3), dtype=uint8)"},
        "inputs": names,
        "input_sha256": [hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in x_u8],
        **info,
        "models": {name: run_model(name, args.weights, x_u8) for name in FILES},
        "maxpool_same": pool_reference(),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, r in result["models"].items():
        print(name, r["params"], [round(v, 4) for v in r["sigmoid"]], "pos/ctr diff",
              r["positional_vs_by_counter_max_abs_diff"])
    print("class_indices", info["class_indices"])


if __name__ == "__main__":
    main()
