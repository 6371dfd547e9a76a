"""The models in models/ (installed as brainedge_models): verified, and as good as their card.

One test per shipped model (the shipping path itself is tested in test_ship.py). On a clone
without ../shared the dataset checks skip with the reason; with CI set they fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from brainedge.errors import ArtifactIntegrityError
from brainedge.manifest import read_json
from runtime.shipped import shipped_artifacts

SHIPPED = shipped_artifacts()


def test_the_default_densenet121_ships_with_the_package():
    # predict, serve and `make serve` answer with it when no model is named
    from runtime.shipped import DEFAULT_MODEL, default_artifact

    assert DEFAULT_MODEL == "densenet121"
    assert default_artifact() == SHIPPED["densenet121"]
    assert read_json(SHIPPED["densenet121"] / "card.json")["gate"]["status"] == "passed"


def test_shipped_models_fit_the_repository_budget():
    total = sum(f.stat().st_size for folder in SHIPPED.values() for f in folder.iterdir())
    assert total <= 25 * 1024 * 1024, f"{total / 1e6:.1f} MB of shipped models"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_loads_with_its_sha256_verified(name, tmp_path):
    from runtime.classifier import load_classifier

    classifier = load_classifier(SHIPPED[name])
    assert classifier.artifact.sha256 == read_json(SHIPPED[name] / "card.json")["sha256"]
    copy = shutil.copytree(SHIPPED[name], tmp_path / name)
    model = copy / classifier.artifact.model_path.name
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError):
        load_classifier(copy)


@pytest.mark.dataset
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_scores_as_its_card_says_on_the_fixed_sample(name, shared_dataset):
    from runtime.classifier import load_classifier
    from runtime.imageio import read_image

    card = read_json(SHIPPED[name] / "card.json")
    sample = card["sample"]["images"]
    assert len(sample) >= 200, f"the card records only {len(sample)} sample images"
    classifier = load_classifier(SHIPPED[name])
    names = classifier.class_names
    predicted, batch = [], []
    for item in sample:
        batch.append(classifier.prepare(read_image(Path(shared_dataset) / item["path"])))
        if len(batch) == 32 or len(predicted) + len(batch) == len(sample):
            predicted += [names[i] for i in classifier.predict_batch(np.stack(batch)).argmax(1)]
            batch = []
    truth = [item["true"] for item in sample]
    accuracy = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
    agreement = float(np.mean([p == item["predicted"]
                               for p, item in zip(predicted, sample, strict=True)]))
    assert abs(accuracy - card["sample"]["accuracy"]) <= 0.03, (accuracy, card["sample"])
    assert agreement >= 0.99, f"agrees with the card on {agreement:.1%} of the sample"
