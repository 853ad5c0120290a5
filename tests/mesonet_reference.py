"""An independent reference for the MesoNet port: the original Keras models' math, in NumPy (float64).

Nothing here is shared with serve/detectors/mesonet.py. The graph is written down as Keras builds it in
DariusAf/MesoNet classifiers.py (layer by layer, channels-last), the weights are matched to layers the way
Keras 2.1.5's ``load_weights`` matches them (file order against the model's layer order, which Keras sorts
by depth from the output and then by the order a depth-first walk from the output meets them), and each
layer is evaluated with TensorFlow's definitions ('same' padding, BatchNormalization with epsilon 1e-3,
LeakyReLU, max pooling, a channels-last Flatten; Dropout is the identity at inference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BN_EPSILON = 1e-3


@dataclass
class Layer:
    name: str
    kind: str  # conv2d, batch_normalization, max_pooling2d, concatenate, flatten, dropout, dense, leaky_re_lu, input
    inputs: list[str]
    config: dict[str, Any] = field(default_factory=dict)


class Graph:
    """Layers named the way Keras names them: per-kind counters in creation order."""

    def __init__(self) -> None:
        self.layers: dict[str, Layer] = {}
        self.counts: dict[str, int] = {}

    def add(self, kind: str, inputs: list[str], **config: Any) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        name = f"{kind}_{self.counts[kind]}"
        self.layers[name] = Layer(name, kind, inputs, config)
        return name


def _conv(g: Graph, x: str, filters: int, k: int, dilation: int = 1, relu: bool = True) -> str:
    return g.add("conv2d", [x], filters=filters, k=k, dilation=dilation, relu=relu)


def _block_tail(g: Graph, x: str) -> str:
    x = g.add("flatten", [x])
    x = g.add("dropout", [x])
    x = g.add("dense", [x], sigmoid=False)
    x = g.add("leaky_re_lu", [x], alpha=0.1)
    x = g.add("dropout", [x])
    return g.add("dense", [x], sigmoid=True)


def meso4() -> tuple[Graph, str]:
    g = Graph()
    x = g.add("input", [])
    for filters, k, pool in ((8, 3, 2), (8, 5, 2), (16, 5, 2), (16, 5, 4)):
        x = _conv(g, x, filters, k)
        x = g.add("batch_normalization", [x])
        x = g.add("max_pooling2d", [x], pool=pool)
    return g, _block_tail(g, x)


def mesoinception4() -> tuple[Graph, str]:
    g = Graph()

    def inception(x: str, a: int, b: int, c: int, d: int) -> str:
        x1 = _conv(g, x, a, 1)
        x2 = _conv(g, _conv(g, x, b, 1), b, 3)
        x3 = _conv(g, _conv(g, x, c, 1), c, 3, dilation=2)
        x4 = _conv(g, _conv(g, x, d, 1), d, 3, dilation=3)
        return g.add("concatenate", [x1, x2, x3, x4])

    x = g.add("input", [])
    for a, b, c, d in ((1, 4, 4, 2), (2, 4, 4, 2)):
        x = inception(x, a, b, c, d)
        x = g.add("batch_normalization", [x])
        x = g.add("max_pooling2d", [x], pool=2)
    for pool in (2, 4):
        x = _conv(g, x, 16, 5)
        x = g.add("batch_normalization", [x])
        x = g.add("max_pooling2d", [x], pool=pool)
    return g, _block_tail(g, x)


def keras_layer_order(g: Graph, output: str) -> list[str]:
    """The order of ``model.layers`` in Keras 2.x's functional Container (each layer used once here)."""
    indices: dict[str, int] = {}
    post_order: list[str] = []
    finished: set[str] = set()

    def walk(name: str) -> None:
        if name in finished:
            return
        indices.setdefault(name, len(indices))
        for inbound in g.layers[name].inputs:
            walk(inbound)
        finished.add(name)
        post_order.append(name)

    walk(output)
    depth: dict[str, int] = {}
    for name in reversed(post_order):
        d = depth.setdefault(name, 0)
        for inbound in g.layers[name].inputs:
            depth[inbound] = max(d + 1, depth.get(inbound, 0))
    return sorted(depth, key=lambda n: (-depth[n], indices[n]))


def _kind_of(file_layer: str) -> str:
    head, _, tail = file_layer.rpartition("_")
    return head if tail.isdigit() else file_layer


def read_weights(h5_path: Path, g: Graph, output: str) -> dict[str, list[np.ndarray]]:
    """Weights per graph layer, matched as Keras does: the file's layers with weights, in file order, against
    the model's layers with weights, in :func:`keras_layer_order`. The kinds must agree at every position."""
    import h5py

    with h5py.File(h5_path, "r") as f:
        file_layers = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        stored = []
        for name in file_layers:
            weight_names = [w.decode() if isinstance(w, bytes) else w for w in f[name].attrs["weight_names"]]
            if weight_names:
                stored.append((name, [np.asarray(f[name][w], dtype=np.float64) for w in weight_names]))
    ours = [n for n in keras_layer_order(g, output) if g.layers[n].kind in ("conv2d", "batch_normalization", "dense")]
    file_kinds = [_kind_of(n) for n, _ in stored]
    our_kinds = [g.layers[n].kind for n in ours]
    if file_kinds != our_kinds:
        raise AssertionError(f"layer kinds differ from the file's order:\n file {file_kinds}\n ours {our_kinds}")
    return {name: arrays for name, (_, arrays) in zip(ours, stored, strict=True)}


# --- TensorFlow's layer math, channels-last, one image (H, W, C) at a time -------------------------------


def conv2d_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dilation: int) -> np.ndarray:
    kh, kw, _, cout = kernel.shape
    h, w, _ = x.shape
    pad_h, pad_w = dilation * (kh - 1), dilation * (kw - 1)
    padded = np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((h, w, cout))
    for i in range(kh):
        for j in range(kw):
            patch = padded[i * dilation : i * dilation + h, j * dilation : j * dilation + w, :]
            out += patch @ kernel[i, j]
    return out + bias


def max_pool_same(x: np.ndarray, pool: int) -> np.ndarray:
    h, w, c = x.shape
    out_h, out_w = -(-h // pool), -(-w // pool)
    pad_h, pad_w = max(0, (out_h - 1) * pool + pool - h), max(0, (out_w - 1) * pool + pool - w)
    padded = np.pad(
        x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)), constant_values=-np.inf
    )
    return padded.reshape(out_h, pool, out_w, pool, c).max(axis=(1, 3))


def batch_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return gamma * (x - mean) / np.sqrt(var + BN_EPSILON) + beta


def forward(g: Graph, output: str, weights: dict[str, list[np.ndarray]], image: np.ndarray) -> float:
    """The Keras model's output (the sigmoid unit: P(real)) for one uint8 RGB image, scaled by 1/255."""
    values: dict[str, np.ndarray] = {}
    for name in keras_layer_order(g, output):  # deepest first: inputs before the layers that use them
        layer = g.layers[name]
        args = [values[i] for i in layer.inputs]
        c = layer.config
        if layer.kind == "input":
            y = image.astype(np.float64) / 255.0
        elif layer.kind == "conv2d":
            y = conv2d_same(args[0], *weights[name], c["dilation"])
            y = np.maximum(y, 0.0) if c["relu"] else y
        elif layer.kind == "batch_normalization":
            y = batch_norm(args[0], *weights[name])
        elif layer.kind == "max_pooling2d":
            y = max_pool_same(args[0], c["pool"])
        elif layer.kind == "concatenate":
            y = np.concatenate(args, axis=-1)
        elif layer.kind == "flatten":
            y = args[0].reshape(-1)  # (h, w, c) in C order: Keras' channels-last Flatten
        elif layer.kind == "dropout":
            y = args[0]
        elif layer.kind == "dense":
            kernel, bias = weights[name]
            y = args[0] @ kernel + bias
            y = 1.0 / (1.0 + np.exp(-y)) if c["sigmoid"] else y
        elif layer.kind == "leaky_re_lu":
            y = np.where(args[0] > 0, args[0], c["alpha"] * args[0])
        else:
            raise AssertionError(layer.kind)
        values[name] = y
    return float(values[output][0])


ARCHITECTURES = {"Meso4": meso4, "MesoInception4": mesoinception4}
