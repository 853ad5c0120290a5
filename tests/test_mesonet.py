"""The MesoNet port against an independent NumPy forward pass of the Keras models, on the real weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from serve.detectors.base import Detector, MissingWeights, WeightsMismatch
from serve.detectors.mesonet import (
    CPU_CHUNK,
    DETECTORS,
    Meso4DF,
    Meso4Net,
    MesoInception4Net,
    convert_keras_h5,
    max_pool,
)
from tests import mesonet_reference as ref
from tests.detector_support import face_batch, weights_or_skip

ARCH = {"meso4_df": "Meso4", "meso4_f2f": "Meso4", "mesoinception4_df": "MesoInception4", "mesoinception4_f2f": "MesoInception4"}


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda c: c.name)
def test_port_matches_the_numpy_keras_reference_within_1e4(cls: type[Detector], models_dir: Path, mesonet: dict[str, Detector]) -> None:
    weights_or_skip(models_dir, cls)
    names, batch = face_batch(models_dir)
    graph, output = ref.ARCHITECTURES[ARCH[cls.name]]()
    weights = ref.read_weights(models_dir / cls.weights[0].path, graph, output)
    expected_p_real = np.array([ref.forward(graph, output, weights, image) for image in batch])

    detector = mesonet[cls.name]
    assert detector.net.pool_early == (True,) * 4  # type: ignore[attr-defined]  # the reordered pass is what is checked
    p_real = detector.p_real(batch)  # type: ignore[attr-defined]
    np.testing.assert_allclose(p_real, expected_p_real, atol=1e-4, rtol=0, err_msg=str(names))
    # the detector reports the other class: the network's unit is P(real)
    np.testing.assert_allclose(detector.predict(batch), 1.0 - expected_p_real, atol=1e-4, rtol=0)
    # a face scored alone scores as in the batch (no batch statistics leak in: BN is in inference mode)
    np.testing.assert_allclose(detector.predict(batch[1:2]), detector.predict(batch)[1:2], atol=1e-6)


def _keras_order(net: Meso4Net | MesoInception4Net, x: torch.Tensor) -> torch.Tensor:
    """The forward pass in Keras' order, layer by layer (conv, ReLU, BatchNorm, pool; inception branches one
    by one), with none of the port's reorderings."""
    def inception(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        def branch(*convs: torch.nn.Module) -> torch.Tensor:
            y = x
            for c in convs:
                y = torch.relu(c.conv(y))
            return y
        return torch.cat([branch(block.b1), branch(block.b2_1, block.b2_2), branch(block.b3_1, block.b3_2),
                          branch(block.b4_1, block.b4_2)], dim=1)

    for i, (block, bn) in enumerate(zip([*net.front, net.conv3, net.conv4], net.bns, strict=True)):
        y = torch.relu(block(x)) if isinstance(block, torch.nn.Conv2d) else inception(block, x)
        x = torch.nn.functional.max_pool2d(bn(y), 4 if i == 3 else 2)
    return net.head(x)


@pytest.mark.parametrize("network", [Meso4Net, MesoInception4Net])
@pytest.mark.parametrize("signs", ["positive", "mixed"])
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_reordered_forward_equals_keras_order(network: type, signs: str, layout: str) -> None:
    """Random weights (so only agreement is asserted): the port pools before ReLU and BatchNorm where every
    BatchNorm scale is >= 0 (the paper's weights), pools each inception branch before concatenating, runs
    the 1x1 convolutions through oneDNN on a channels-last map (the detectors' layout) and the dilated-3 one
    NCHW; with a negative scale it keeps Keras' order. Either way the output is the layer-by-layer one."""
    torch.manual_seed(3)
    net = network().eval()
    for bn in net.bns:
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        if signs == "mixed":
            bn.weight.data[::2] *= -1
        bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.rand(3, 3, 256, 256)
    with torch.inference_mode():
        expected = _keras_order(net, x).numpy()
        if layout == "channels-last":
            net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        np.testing.assert_allclose(net(x).numpy(), expected, atol=1e-6, rtol=0)
        net.fix_pool_order()  # as a detector does once its weights are loaded
        assert net.pool_early == ((True,) * 4 if signs == "positive" else (False,) * 4)
        np.testing.assert_allclose(net(x).numpy(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size", [2, 4])
def test_max_pool_is_torch_max_pool_with_ragged_edges_dropped(layout: torch.memory_format, size: int) -> None:
    x = torch.randn(2, 5, 37, 42).contiguous(memory_format=layout)
    np.testing.assert_array_equal(max_pool(x, size).numpy(), torch.nn.functional.max_pool2d(x, size).numpy())


def test_reference_is_not_blind_to_a_wrong_layer_mapping(models_dir: Path) -> None:
    """Swapping the two same-shaped inception branches (plain and dilated 3x3) must change the outputs, so
    agreement above means the port matched the branches right, not that the mapping does not matter."""
    weights_or_skip(models_dir, DETECTORS[2])
    _, batch = face_batch(models_dir)
    graph, output = ref.mesoinception4()
    weights = ref.read_weights(models_dir / DETECTORS[2].weights[0].path, graph, output)
    swapped = dict(weights)
    swapped["conv2d_3"], swapped["conv2d_5"] = weights["conv2d_5"], weights["conv2d_3"]
    right = ref.forward(graph, output, weights, batch[0])
    wrong = ref.forward(graph, output, swapped, batch[0])
    assert abs(right - wrong) > 1e-3


def test_the_weight_files_list_layers_in_keras_order_not_creation_order(models_dir: Path) -> None:
    """The port maps layers by their creation number, the reference by Keras' load order; the two differ for
    MesoInception4 (Keras sorts layers by depth), which is what makes the reference an independent check."""
    import h5py

    weights_or_skip(models_dir, DETECTORS[2])
    with h5py.File(models_dir / DETECTORS[2].weights[0].path, "r") as f:
        convs = [n.decode() for n in f.attrs["layer_names"] if n.decode().startswith("conv2d_")]
    by_number = sorted(convs, key=lambda n: int(n.rsplit("_", 1)[1]))
    assert sorted(convs) == sorted(by_number) and convs != by_number


def test_converted_weights_are_cached_by_sha256_and_a_bad_cache_is_rebuilt(models_dir: Path, tmp_path: Path, mesonet: dict[str, Detector]) -> None:
    _, batch = face_batch(models_dir)
    first = Meso4DF()
    first.load(models_dir, tmp_path)
    cached = tmp_path / "mesonet" / f"Meso4Net-{Meso4DF.weights[0].sha256}.pt"
    assert cached.is_file()
    np.testing.assert_array_equal(first.predict(batch), mesonet["meso4_df"].predict(batch))
    cached.write_bytes(b"not a torch file")
    again = Meso4DF()
    again.load(models_dir, tmp_path)
    np.testing.assert_array_equal(again.predict(batch), first.predict(batch))
    assert cached.stat().st_size > 1000  # rewritten


def test_missing_weights_name_the_file_and_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as caught:
        Meso4DF().load(tmp_path)
    assert "mesonet/weights/Meso4_DF.h5" in str(caught.value) and "deepwatch models pull" in str(caught.value)


def test_weights_with_another_sha256_are_refused(models_dir: Path, tmp_path: Path) -> None:
    weights_or_skip(models_dir, Meso4DF)
    target = tmp_path / Meso4DF.weights[0].path
    target.parent.mkdir(parents=True)
    shutil.copyfile(models_dir / Meso4DF.weights[0].path, target)
    with target.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(WeightsMismatch, match="expected 036ed30d"):
        Meso4DF().load(tmp_path)


def test_a_file_of_the_other_architecture_is_refused_with_the_layer_counts(models_dir: Path) -> None:
    weights_or_skip(models_dir, DETECTORS[2])
    with pytest.raises(Exception, match="conv"):
        convert_keras_h5(models_dir / DETECTORS[2].weights[0].path, Meso4Net())
    weights_or_skip(models_dir, Meso4DF)
    with pytest.raises(Exception, match="conv"):
        convert_keras_h5(models_dir / Meso4DF.weights[0].path, MesoInception4Net())


def test_a_batch_of_several_cpu_passes_scores_as_its_crops_alone(models_dir: Path, mesonet: dict[str, Detector]) -> None:
    """On the CPU a batch runs in passes of CPU_CHUNK crops: the scores come back whole and in order."""
    _, faces = face_batch(models_dir)
    batch = np.ascontiguousarray(np.concatenate([faces, faces[:, :, ::-1], faces[:, ::-1]]))
    assert len(batch) > CPU_CHUNK
    for name in ("meso4_df", "mesoinception4_df"):
        whole = mesonet[name].predict(batch)
        alone = np.concatenate([mesonet[name].predict(batch[i : i + 1]) for i in range(len(batch))])
        assert whole.shape == (len(batch),)
        np.testing.assert_allclose(whole, alone, atol=1e-6, rtol=0)


def test_the_cpu_pass_setting_sizes_every_detectors_passes_and_not_its_scores(
    models_dir: Path, mesonet: dict[str, Detector], tmp_path: Path
) -> None:
    """``serve_cpu_pass_crops`` (the best size depends on the CPU's caches) reaches the loaded detectors, which
    are shared in the process: unset, each is back to its own default. The scores do not move with it."""
    from deepwatch.settings import load_settings
    from serve.detectors.registry import load_detectors

    _, faces = face_batch(models_dir)
    batch = np.ascontiguousarray(np.concatenate([faces, faces[:, :, ::-1], faces[:, ::-1]]))
    names = ["meso4_f2f", "mesoinception4_f2f"]
    by_default = {name: mesonet[name].predict(batch) for name in names}
    sized: list[Detector] = []
    try:
        for size in (1, 3, 64):
            sized = load_detectors(load_settings(models_dir=models_dir, data_dir=tmp_path, serve_cpu_pass_crops=size), names)
            for detector in sized:
                assert detector.cpu_pass_crops == size
                np.testing.assert_allclose(detector.predict(batch), by_default[detector.name], atol=1e-6, rtol=0)
    finally:
        restored = load_detectors(load_settings(models_dir=models_dir, data_dir=tmp_path), names)
    assert [d.cpu_pass_crops for d in restored] == [CPU_CHUNK, CPU_CHUNK]
    assert [id(d) for d in restored] == [id(d) for d in sized]  # the same instances, back to their default


def test_predict_refuses_crops_of_the_wrong_size_or_type(mesonet: dict[str, Detector]) -> None:
    detector = mesonet["meso4_df"]
    with pytest.raises(ValueError, match="256"):
        detector.predict(np.zeros((1, 128, 128, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detector.predict(np.zeros((1, 256, 256, 3), dtype=np.float32))
    assert detector.predict(np.zeros((0, 256, 256, 3), dtype=np.uint8)).shape == (0,)


# Measured on the four bundled faces (Pillow bilinear to 256): meso4_df, meso4_f2f and mesoinception4_df give
# both deepfake faces a higher P(fake) than both real ones; mesoinception4_f2f (trained on Face2Face, not on
# Deepfakes) scores all four near 0 and does not separate them, so nothing is asserted about its ranking.
RANKS_DF_ABOVE_REAL = ["meso4_df", "meso4_f2f", "mesoinception4_df"]


@pytest.mark.parametrize("name", RANKS_DF_ABOVE_REAL)
def test_the_detectors_rank_the_bundled_deepfakes_above_the_real_faces(name: str, models_dir: Path, mesonet: dict[str, Detector]) -> None:
    names, batch = face_batch(models_dir)
    p = dict(zip(names, mesonet[name].predict(batch), strict=True))
    fakes = [v for k, v in p.items() if k.startswith("df/")]
    reals = [v for k, v in p.items() if k.startswith("real/")]
    assert min(fakes) > max(reals), p


def test_the_deepfake_models_are_confident_on_the_bundled_faces(models_dir: Path, mesonet: dict[str, Detector]) -> None:
    names, batch = face_batch(models_dir)
    for name in ("meso4_df", "mesoinception4_df"):
        p = dict(zip(names, mesonet[name].predict(batch), strict=True))
        assert all(v > 0.9 for k, v in p.items() if k.startswith("df/")), p
        assert all(v < 0.05 for k, v in p.items() if k.startswith("real/")), p
