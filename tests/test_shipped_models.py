"""The models in models/ (installed as brainedge_models): verified, and as good as their card.

One test per shipped model (the shipping path itself is tested in test_ship.py). On a clone
without ../shared the dataset checks skip with the reason; with CI set they fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from brainedge.errors import ArtifactIntegrityError
from brainedge.manifest import read_json
from cli.main import main
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


@pytest.mark.dataset
def test_an_int8_answer_of_100_percent_says_it_is_the_resolution_not_certainty(shared_dataset):
    # The int8 softmax outputs steps of 1/256 and a class below one step reads exactly 0, so a
    # confident slice gets 100.0%: the API gives the step, the page and predict explain it.
    from tests.test_webapp_support import csrf_from, multipart
    from webapp import create_app
    from webapp.config import ServeConfig

    data = (shared_dataset / "Testing" / "pituitary" / "Te-pi_0010.jpg").read_bytes()
    app = create_app({"TESTING": True}, config=ServeConfig(
        (SHIPPED["densenet121"],), secret_key="secret-key-for-tests-0123456789"))
    client = app.test_client()
    body = client.post("/api/v1/predict", **multipart(data, "slice.jpg")).get_json()
    assert body["model"]["probability_step"] == pytest.approx(1 / 256)
    assert body["class"] == "pituitary" and body["confidence"] == 1.0
    token = csrf_from(client.get("/").get_data(as_text=True))
    html = client.post("/", **multipart(data, "slice.jpg", csrf_token=token)).get_data(
        as_text=True)
    assert 'id="probability-step"' in html
    assert "steps of 0.39%" in html and "100.0% means every other class" in html

    table = CliRunner().invoke(main, ["predict", str(shared_dataset / "Testing" / "pituitary" /
                                                     "Te-pi_0010.jpg")])
    assert table.exit_code == 0, table.output
    assert "outputs steps of 0.0039" in table.output and "not certainty" in table.output
