"""MesoNet (Afchar et al., WIFS 2018): Meso4 and MesoInception4 in PyTorch, with the paper's Keras weights.

The networks follow DariusAf/MesoNet ``classifiers.py`` layer for layer. Keras' conventions that matter:

- every convolution is 'same' padded and applies its ReLU *before* the BatchNormalization that follows it
  (so BN cannot be folded into the convolution), BN's epsilon is Keras' default 1e-3;
- the inception branches are concatenated in the order 1x1, 3x3, 3x3 dilated 2, 3x3 dilated 3;
- Flatten is channels-last: the 8x8x16 map is flattened as (h, w, c), not PyTorch's (c, h, w);
- the sigmoid output is P(real) (the training generator labelled ``df``=0, ``real``=1), so P(fake) = 1 - it.

One known gap between the published code and the Meso4 files: their ``layer_names`` list no LeakyReLU layer
between the two Dense layers (the MesoInception files do list one), so the graph that saved them differed
from ``classifiers.py``. We follow ``classifiers.py`` (LeakyReLU 0.1 in both), which is what loading these
files with the authors' code computes; a weights-only file cannot say whether that Dense had an activation.

The weights are Keras 2.1.5 weights-only HDF5 files. :func:`convert_keras_h5` maps them onto the PyTorch
modules once; the result is cached as a ``.pt`` file keyed by the HDF5 file's sha256.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from serve.detectors.base import Detector, DetectorError, WeightFile, check_batch, verified_weight

UPSTREAM = "https://raw.githubusercontent.com/DariusAf/MesoNet/2144d56a30e48cdcac1976ff13a1c5cdc86376c6/weights/"
SOURCE_URL = "https://github.com/DariusAf/MesoNet"
INPUT_SIZE = 256
BN_EPS = 1e-3
LEAKY_SLOPE = 0.1
# Crops per forward pass on the CPU. The first maps are full-size (256x256, up to 11 channels, a few MB a
# crop): for a few crops they stay in the caches between layers, for many they do not. What "a few" is
# depends on the caches. Through Serve (four replicas on two cores, bench serve), detector-crops/s:
# - 2026-12-07, AMD EPYC with 2 MB L2 a core and 32 MB L3: passes of 2: 385, of 4: 388 and 388, of 8: 264;
# - 2026-12-05, a machine with 16 MB L3: passes of 4: 215-218, of 8: 230-244.
# Passes of 4 lose little where 8 win and win much where 8 lose; ``serve_cpu_pass_crops`` sets another size
# (``Detector.cpu_pass_crops``). A GPU wants big batches: it gets the whole batch in one pass.
CPU_CHUNK = 4


def max_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """Keras' MaxPooling2D of ``size`` (a power of two; 'valid': a ragged edge is dropped), as maxima of
    views of the 2x2 windows: the same values as ``max_pool2d``, which on the CPU also finds every
    maximum's index and took twice as long (a quarter of Meso4's time)."""
    while size > 1:
        n, c, h, w = x.shape
        h, w = h // 2, w // 2
        if x.is_contiguous(memory_format=torch.channels_last):
            # Two maxima of halves that are whole runs of memory: rows 2i and 2i+1, then in each row the
            # channels of pixels 2j and 2j+1 (side by side in NHWC); ~35 % faster than the strided three.
            rows = x.permute(0, 2, 3, 1)[:, : 2 * h, : 2 * w].reshape(n, h, 2, w, 2 * c)
            pairs = torch.maximum(rows[:, :, 0], rows[:, :, 1])
            x = torch.maximum(pairs[..., :c], pairs[..., c:]).permute(0, 3, 1, 2)
        else:
            even, odd = slice(0, 2 * h, 2), slice(1, 2 * h, 2)
            left, right = slice(0, 2 * w, 2), slice(1, 2 * w, 2)
            top = torch.maximum(x[..., even, left], x[..., even, right])
            x = torch.maximum(top, torch.maximum(x[..., odd, left], x[..., odd, right]))
        size //= 2
    return x


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution; on the CPU, of a channels-last map, through oneDNN.

    PyTorch's own choice for a 1x1 convolution on one thread and under 16 images is its reference GEMM
    path, which on a channels-last map first copies the bias over the whole output: on the 256x256 input of
    MesoInception it took 4x as long as oneDNN (a Serve replica runs one thread; MesoInception ~90 -> ~120
    crops/s). On more threads PyTorch picks oneDNN itself."""
    mkldnn = torch.backends.mkldnn
    if (x.device.type == "cpu" and x.dtype == torch.float32 and mkldnn.is_available() and mkldnn.enabled
            and x.is_contiguous(memory_format=torch.channels_last)):
        return torch.mkldnn_convolution(x, weight, bias, (0, 0), (1, 1), (1, 1), 1)
    return nn.functional.conv2d(x, weight, bias)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def _planar_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` on an NCHW copy of ``x``. For the 2-channel 3x3 convolution dilated 3, oneDNN's channels-last
    kernel took twice as long as its NCHW one on the CPU (the 4-channel ones are faster channels-last)."""
    return nn.functional.conv2d(x.contiguous(), conv.weight.contiguous(), conv.bias, padding=conv.padding,
                                dilation=conv.dilation)


class _ConvRelu(nn.Module):
    """One inception convolution (ReLU follows it; ``_Inception.forward`` applies it). A module of its own so
    that the state dict keeps the names the converter and its cache use (``b1.conv.weight``, ...)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        # 'same' for odd kernels at stride 1: Keras pads dilation*(k-1)/2 on each side
        self.conv = nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)


class _Inception(nn.Module):
    def __init__(self, cin: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.b1 = _ConvRelu(cin, a, 1)
        self.b2_1, self.b2_2 = _ConvRelu(cin, b, 1), _ConvRelu(b, b, 3)
        self.b3_1, self.b3_2 = _ConvRelu(cin, c, 1), _ConvRelu(c, c, 3, dilation=2)
        self.b4_1, self.b4_2 = _ConvRelu(cin, d, 1), _ConvRelu(d, d, 3, dilation=3)
        self.out_channels = a + b + c + d

    def forward(self, x: torch.Tensor, pool: int = 1) -> torch.Tensor:
        """The four branches, concatenated; with ``pool``, each max-pooled first (the same values as pooling
        the concatenation, which then copies a quarter of them)."""
        # Each branch's 1x1 convolution on its own, into a map of its own. Stacked into one convolution and
        # split, the 3x3 convolutions got channel slices of one map, which they copied whole first: on the
        # full-size map those copies cost more than reading the 3-channel input four times (~+25 % crops/s).
        layout = _memory_format(x)

        def entry(conv: nn.Conv2d) -> torch.Tensor:
            return torch.relu_(conv1x1(x, conv.weight, conv.bias))  # type: ignore[arg-type]

        branches = [
            max_pool(entry(self.b1.conv), pool),
            max_pool(self.b2_2.conv(entry(self.b2_1.conv)), pool),
            max_pool(self.b3_2.conv(entry(self.b3_1.conv)), pool),
            max_pool(_planar_conv(self.b4_2.conv, entry(self.b4_1.conv)), pool).contiguous(memory_format=layout),
        ]
        # torch.cat takes its layout from the first branch, whose single channel reads as NCHW: written into
        # a map of the input's layout instead, the layers after it stay channels-last (they ran NCHW, slower)
        n, _, h, w = branches[0].shape
        out = torch.empty(n, self.out_channels, h, w, dtype=x.dtype, device=x.device, memory_format=layout)
        # ReLU commutes with max pooling, so the 3x3 branches take theirs after it (the 1x1 one has its own)
        return torch.relu_(torch.cat(branches, dim=1, out=out))

    def convs(self) -> list[nn.Conv2d]:
        """In the order Keras created them (the order the weight file numbers them)."""
        return [m.conv for m in (self.b1, self.b2_1, self.b2_2, self.b3_1, self.b3_2, self.b4_1, self.b4_2)]


class _Head(nn.Module):
    """Flatten (channels-last) -> Dropout -> Dense(16) -> LeakyReLU(0.1) -> Dropout -> Dense(1) -> sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8 * 8 * 16, 16)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1).flatten(1)  # Keras flattened (h, w, c)
        x = nn.functional.leaky_relu(self.fc1(x), LEAKY_SLOPE)  # dropout is inactive at inference
        return torch.sigmoid(self.fc2(x)).squeeze(1)


def _order_free(bn: nn.BatchNorm2d) -> bool:
    """Every scale of ``bn`` is >= 0: it keeps the order of a channel's values, so max pooling commutes with it."""
    return bool((bn.weight >= 0).all())


class MesoNetBase(nn.Module):
    """The shared tail: two 5x5 conv blocks (pool 2, then 4) and the head; subclasses make the first two."""

    def __init__(self, front: list[nn.Module], front_channels: list[int]) -> None:
        super().__init__()
        self.front = nn.ModuleList(front)
        self.conv3 = nn.Conv2d(front_channels[-1], 16, 5, padding=2)
        self.conv4 = nn.Conv2d(16, 16, 5, padding=2)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c, eps=BN_EPS) for c in [*front_channels, 16, 16])
        self.head = _Head()
        self.pool_early: tuple[bool, ...] | None = None  # see fix_pool_order

    def fix_pool_order(self) -> None:
        """Decide once, from the weights now loaded, which blocks may pool before their ReLU and BatchNorm
        (see forward). Deciding in every forward reads each BatchNorm's weights back from the device: on a
        GPU a wait for the queue per block. Call again after changing the weights (None: every forward)."""
        self.pool_early = tuple(_order_free(bn) for bn in self.bns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float (N, 3, 256, 256) in [0, 1]; returns (N,) P(real), the network's own output."""
        blocks: list[nn.Module] = [*self.front, self.conv3, self.conv4]
        early = self.pool_early if self.pool_early is not None else [_order_free(bn) for bn in self.bns]
        for i, (block, bn) in enumerate(zip(blocks, self.bns, strict=True)):
            pool = 4 if i == 3 else 2
            if early[i]:
                # ReLU, and a BatchNorm whose scales are all >= 0, never reorder two values of a channel, so
                # both commute with max pooling (exactly: rounding keeps the order too) and run on the
                # pooled map, a quarter or a sixteenth of the values. The paper's weights all qualify.
                x = block(x, pool) if isinstance(block, _Inception) else torch.relu_(max_pool(block(x), pool))
                x = bn(x)
            else:  # Keras' order: conv, ReLU, BatchNorm, pool
                x = max_pool(bn(torch.relu(block(x)) if isinstance(block, nn.Conv2d) else block(x)), pool)
        return self.head(x)

    def convs(self) -> list[nn.Conv2d]:
        """Every convolution in Keras' creation order."""
        convs: list[nn.Conv2d] = []
        for block in self.front:
            convs += block.convs() if isinstance(block, _Inception) else [block]
        return [*convs, self.conv3, self.conv4]


class Meso4Net(MesoNetBase):
    def __init__(self) -> None:
        super().__init__([nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2)], [8, 8])


class MesoInception4Net(MesoNetBase):
    def __init__(self) -> None:
        first = _Inception(3, 1, 4, 4, 2)
        second = _Inception(first.out_channels, 2, 4, 4, 2)
        super().__init__([first, second], [first.out_channels, second.out_channels])


# --- converting the Keras weights --------------------------------------------------------------------------

_NUMBERED = re.compile(r"^(?P<kind>[a-z_0-9]+?)(?:_(?P<n>\d+))?$")


def _keras_layers(path: Path) -> dict[str, list[tuple[str, list[np.ndarray]]]]:
    """Layers with weights, by Keras class ("conv2d", "batch_normalization", "dense"), each list in creation
    order (the numeric suffix Keras gave the name: sorting names as text puts conv2d_10 before conv2d_2)."""
    import h5py

    found: dict[str, list[tuple[int, str, list[np.ndarray]]]] = {}
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)  # a full model file nests the weights
        for raw in root.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[name]
            names = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs["weight_names"]]
            if not names:
                continue
            match = _NUMBERED.match(name)
            if match is None:
                raise DetectorError(f"{path.name}: unexpected layer name {name!r}")
            kind, n = match["kind"], int(match["n"] or 0)
            found.setdefault(kind, []).append((n, name, [np.asarray(group[w]) for w in names]))
    return {kind: [(name, arrays) for _, name, arrays in sorted(items)] for kind, items in found.items()}


def convert_keras_h5(path: Path, net: MesoNetBase) -> dict[str, torch.Tensor]:
    """A state dict for ``net`` from a Keras weights-only HDF5 file; every shape is checked."""
    layers = _keras_layers(path)
    convs, bns, denses = layers.get("conv2d", []), layers.get("batch_normalization", []), layers.get("dense", [])
    targets_conv, targets_bn = net.convs(), list(net.bns)
    targets_dense = [net.head.fc1, net.head.fc2]
    if (len(convs), len(bns), len(denses)) != (len(targets_conv), len(targets_bn), len(targets_dense)):
        raise DetectorError(
            f"{path.name} has {len(convs)} conv, {len(bns)} batch-norm and {len(denses)} dense layers; "
            f"{type(net).__name__} needs {len(targets_conv)}, {len(targets_bn)} and {len(targets_dense)}"
        )
    new: dict[int, torch.Tensor] = {}  # id(parameter or buffer) -> value

    def put(target: torch.Tensor, value: np.ndarray, where: str) -> None:
        if tuple(target.shape) != value.shape:
            needs = tuple(target.shape)
            raise DetectorError(f"{path.name}: {where} has shape {value.shape}, the network needs {needs}")
        new[id(target)] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    for (name, (kernel, bias)), conv in zip(convs, targets_conv, strict=True):
        put(conv.weight, kernel.transpose(3, 2, 0, 1), name)  # (kh, kw, in, out) -> (out, in, kh, kw)
        put(conv.bias, bias, name)
    for (name, (gamma, beta, mean, var)), bn in zip(bns, targets_bn, strict=True):
        for target, value in ((bn.weight, gamma), (bn.bias, beta), (bn.running_mean, mean), (bn.running_var, var)):
            put(target, value, name)
    for (name, (kernel, bias)), dense in zip(denses, targets_dense, strict=True):
        put(dense.weight, kernel.T, name)  # (in, out) -> (out, in)
        put(dense.bias, bias, name)
    state = {}
    for key, tensor in net.state_dict(keep_vars=True).items():
        if key.endswith("num_batches_tracked"):
            state[key] = tensor.detach().clone()
        elif id(tensor) not in new:
            raise DetectorError(f"{path.name} gave no value for {key}")
        else:
            state[key] = new[id(tensor)]
    return state


def load_state(h5: Path, sha256: str, net: MesoNetBase, cache_dir: Path | None) -> dict[str, torch.Tensor]:
    """The converted state dict, from the cache when an earlier load left one for this exact file."""
    cached = None if cache_dir is None else cache_dir / "mesonet" / f"{type(net).__name__}-{sha256}.pt"
    if cached is not None and cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign cache file: convert again and overwrite it
            pass
    state = convert_keras_h5(h5, net)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # written whole, then renamed: two replicas loading at once never read half a file
        fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(state, tmp)
            os.replace(tmp, cached)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return state


# --- the four detectors ------------------------------------------------------------------------------------


def to_tensor(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC RGB -> float NCHW in [0, 1] on ``device``, the scaling the networks were trained with
    (rescale 1/255). The bytes travel as uint8 and become floats there: a quarter of the copy to a GPU, and
    the conversion runs on the device instead of the host's CPU."""
    if not batch.flags.writeable:  # Pillow's arrays are read-only, and torch warns about sharing those
        batch = batch.copy()
    return torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class MesoNetDetector(Detector):
    version: ClassVar[str] = "2018.1"
    license: ClassVar[str] = "Apache-2.0"
    source_url: ClassVar[str] = SOURCE_URL
    modality = "image"
    input_size: ClassVar[int] = INPUT_SIZE
    network: ClassVar[type[MesoNetBase]]
    # Measured on CPU (2 cores, batches of 64): MesoInception runs ~1.15x faster channels-last, Meso4 a few %.
    channels_last: ClassVar[bool] = True
    cpu_pass_crops = CPU_CHUNK

    def __init__(self) -> None:
        self.net: MesoNetBase | None = None
        self.device = torch.device("cpu")

    def to_device(self, device: str) -> None:
        """Run on ``device`` (e.g. "cuda" in a Serve replica given a GPU)."""
        self.device = torch.device(device)
        if self.device.type == "cuda":
            # PyTorch lets cuDNN convolve in TF32 by default; on an H200 that moved P(fake) by up to 1.5e-3
            # from the CPU's (bench/results/serve-gpu-*.json), past the port's 1e-4 promise, for no steady
            # gain (MesoInception ran no faster). The replica's process is the detector's own.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if self.net is not None:
            self.net.to(self.device)

    def load(self, models_dir: Path, cache_dir: Path | None = None) -> None:
        (weight,) = self.weights
        h5 = verified_weight(models_dir, weight)
        net = self.network()
        net.load_state_dict(load_state(h5, weight.sha256, net, cache_dir))
        net.fix_pool_order()
        self.net = net.eval().to(self.device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def p_real(self, batch: np.ndarray) -> np.ndarray:
        """The network's own output (P(real)), as the Keras model gives it."""
        if self.net is None:
            raise DetectorError(f"{self.name}: load() was not called")
        check_batch(batch, self.input_size)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        step = (self.cpu_pass_crops or len(batch)) if self.device.type == "cpu" else len(batch)
        with torch.inference_mode():
            out = []
            for start in range(0, len(batch), step):
                x = to_tensor(batch[start : start + step], self.device)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out.append(self.net(x).cpu().numpy())
            return np.concatenate(out)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return 1.0 - self.p_real(batch)


def _weight(file: str, sha256: str) -> tuple[WeightFile, ...]:
    return (WeightFile(f"mesonet/weights/{file}", sha256, UPSTREAM + file),)


class Meso4DF(MesoNetDetector):
    name = "meso4_df"
    network = Meso4Net
    weights = _weight("Meso4_DF.h5", "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5")


class Meso4F2F(MesoNetDetector):
    name = "meso4_f2f"
    network = Meso4Net
    weights = _weight("Meso4_F2F.h5", "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7")


class MesoInception4DF(MesoNetDetector):
    name = "mesoinception4_df"
    network = MesoInception4Net
    weights = _weight("MesoInception_DF.h5", "234586d40058e76ef8b6f27ca4b63c06e31c2a5a69c0d8ba6f30b1468ab7bafa")


class MesoInception4F2F(MesoNetDetector):
    name = "mesoinception4_f2f"
    network = MesoInception4Net
    weights = _weight("MesoInception_F2F.h5", "d4533ac8a3197dc35c47405d23d99e888c1d0135e267e03540c7451feaccff3f")


DETECTORS: tuple[type[MesoNetDetector], ...] = (Meso4DF, Meso4F2F, MesoInception4DF, MesoInception4F2F)

