"""brainedge ship: only a passed, real-data artifact goes into models/, with a measured card."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from brainedge.errors import ModelLoadError
from brainedge.manifest import read_json

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def clean_list(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.audit import AuditConfig, audit_dataset, write_audit
    from training.data import scan_dataset

    out = tmp_path_factory.mktemp("audit")
    return write_audit(audit_dataset(scan_dataset(phantom_data), AuditConfig()), out)[
        "clean_test"]


def _config(optimized_run: Path, phantom_data: Path, clean_list: Path, models: Path,
            variant: str = "tflite-fp32"):
    from optimize.ship import ShipConfig

    return ShipConfig(artifact=optimized_run / variant, name="densenet121", data=phantom_data,
                      clean_list=clean_list, models_dir=models, sample_per_class=10,
                      commands=("brainedge train ...", "brainedge optimize ..."))


def test_an_artifact_of_a_phantom_trained_run_is_refused(optimized_run, phantom_data,
                                                         clean_list, tmp_path):
    from optimize.ship import ship

    with pytest.raises(ModelLoadError, match="synthetic phantoms"):
        ship(_config(optimized_run, phantom_data, clean_list, tmp_path))
    assert not (tmp_path / "densenet121").exists()


def test_an_artifact_that_failed_its_parity_gate_is_refused(optimized_run, phantom_data,
                                                            clean_list, tmp_path):
    from optimize.ship import ship

    failed = shutil.copytree(optimized_run / "tflite-fp32", tmp_path / "failed")
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["metrics"]["status"] = "failed"
    (failed / "manifest.json").write_text(json.dumps(manifest))
    config = _config(optimized_run, phantom_data, clean_list, tmp_path / "models")
    with pytest.raises(ModelLoadError, match="failed its parity gate"):
        ship(type(config)(**{**config.__dict__, "artifact": failed}))


def test_the_card_records_the_learning_rate_each_epoch_ran_at(tmp_path):
    from optimize.ship import learning_rates_as_run

    log = tmp_path / "training_log.csv"
    log.write_text("epoch,accuracy,lr,val_loss\n0,0.5,0.001,1.0\n1,0.6,0.001,0.9\n"
                   "2,0.7,0.00030000001,0.8\n3,0.7,0.0003,0.8\n4,0.8,9.000001e-05,0.7\n")
    assert learning_rates_as_run(log) == [{"first": 1, "last": 2, "lr": 0.001},
                                          {"first": 3, "last": 4, "lr": 0.00030000001},
                                          {"first": 5, "last": 5, "lr": 9.000001e-05}]
    assert learning_rates_as_run(tmp_path / "missing.csv") == []


def test_shipping_verifies_evaluates_and_writes_card_and_model_card(
        optimized_run, phantom_data, clean_list, tmp_path, monkeypatch):
    import optimize.ship
    from runtime.classifier import load_classifier

    # The tiny run is trained on phantoms; pretend its data is real to reach the shipping path.
    monkeypatch.setattr(optimize.ship, "PHANTOM_MARKER", "no-such-marker")
    models = tmp_path / "models"
    target = optimize.ship.ship(_config(optimized_run, phantom_data, clean_list, models))

    assert sorted(p.name for p in target.iterdir()) == ["card.json", "manifest.json",
                                                        "model.tflite", "ood.npz"]
    classifier = load_classifier(target)  # sha256 verified against the copied manifest
    assert classifier.trust.method == "mahalanobis"  # its own statistics came along
    card = read_json(target / "card.json")
    assert card["sha256"] == classifier.artifact.sha256
    full = card["evaluation"]["full test"]
    assert full["n"] == 16 and set(card["evaluation"]) == {"full test", "leakage-free test"}
    assert all("recall_ci95" in v for v in full["per_class"].values())
    images = card["sample"]["images"]
    assert len(images) == card["evaluation"]["leakage-free test"]["n"]  # <= 10 per class here
    assert card["sample"]["accuracy"] == pytest.approx(
        sum(i["true"] == i["predicted"] for i in images) / len(images))
    assert all(not Path(i["path"]).is_absolute() for i in images)
    text = (models / "MODEL_CARD.md").read_text()
    assert "Not a medical device" in text and "`models/densenet121`" in text
    assert f"{100 * full['accuracy']:.1f}%" in text and "brainedge optimize ..." in text
    temperature = card["calibration"]["temperature"]
    assert temperature == classifier.trust.temperature and f"temperature {temperature:.3f}" in text
    assert f"flagged above {card['ood']['threshold']:.2f}" in text
    rates = card["training"]["learning_rates"]
    assert rates[0]["first"] == 1 and rates[-1]["last"] == card["training"]["epochs_run"]
    assert "Learning rate as run: " in text
    assert not list(models.glob(".*staging"))

    # --compress: the same model, stored as model.tflite.xz, evaluated and loaded from memory
    packed = optimize.ship.ship(replace(_config(optimized_run, phantom_data, clean_list, models),
                                        name="packed", compress=True))
    assert sorted(p.name for p in packed.iterdir()) == ["card.json", "manifest.json",
                                                        "model.tflite.xz", "ood.npz"]
    packed_card = read_json(packed / "card.json")
    assert packed_card["sha256"] == card["sha256"] == load_classifier(packed).artifact.sha256
    assert packed_card["evaluation"]["full test"]["accuracy"] == full["accuracy"]
    assert packed_card["stored_bytes"] == (packed / "model.tflite.xz").stat().st_size
    assert "Stored xz-compressed as `model.tflite.xz`" in (models / "MODEL_CARD.md").read_text()
