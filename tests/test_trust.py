"""Calibrated probabilities and a learned out-of-distribution score (issue 11, items 1 and 3).

The arithmetic (temperature, Mahalanobis and energy scores, the threshold) against brute force;
the runtimes' second output (features) told apart from the probabilities by width; and an
artifact whose manifest carries a temperature and ``ood.npz``, as every runtime reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainedge.errors import ArtifactIntegrityError, ConfigError, ModelLoadError
from brainedge.manifest import hash_files
from runtime.base import TensorSpec, assign_outputs
from runtime.ood_score import FeatureStats, max_softmax_score
from runtime.temperature import apply_temperature, fit_temperature, negative_log_likelihood
from tests.test_webapp_support import CONFIDENT, encode, make_artifact, need_onnxruntime

K, D = 4, 9


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- temperature ----------------------------------------------------------------------------------

@pytest.mark.arm64
def test_temperature_on_probabilities_equals_temperature_on_logits() -> None:
    z = np.random.default_rng(0).normal(scale=4.0, size=(50, K))
    for t in (0.5, 1.7, 3.0):
        np.testing.assert_allclose(apply_temperature(softmax(z), t), softmax(z / t), atol=1e-6)
    p = softmax(z)
    assert apply_temperature(p, None) is p and apply_temperature(p, 1.0) is p
    # The winner never changes; an integer model's exact zeros stay zero.
    assert (apply_temperature(p, 2.5).argmax(1) == p.argmax(1)).all()
    q = np.array([[0.0, 0.25, 0.75, 0.0]])
    out = apply_temperature(q, 2.0)
    assert out[0, 0] == 0.0 and out[0, 3] == 0.0 and np.isclose(out.sum(), 1.0)


@pytest.mark.arm64
def test_fitting_recovers_the_temperature_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(scale=5.0, size=(20000, K))
    # The truth is softmax(z / 2): a model reporting softmax(z) is over-confident by T = 2.
    truth = softmax(z / 2.0)
    labels = np.array([rng.choice(K, p=row) for row in truth])
    t = fit_temperature(softmax(z), labels)
    assert 1.85 < t < 2.15
    assert negative_log_likelihood(apply_temperature(softmax(z), t), labels) < \
        negative_log_likelihood(softmax(z), labels)


@pytest.mark.arm64
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), 100.0])
def test_an_impossible_temperature_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="temperature must be"):
        apply_temperature(np.full((1, K), 0.25), bad)


# --- scores ---------------------------------------------------------------------------------------

def random_stats(seed: int = 0) -> FeatureStats:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, D))
    return FeatureStats(rng.normal(size=(K, D)).astype(np.float32),
                        (a @ a.T / D + np.eye(D)).astype(np.float32),
                        rng.normal(size=(D, K)).astype(np.float32),
                        rng.normal(size=K).astype(np.float32))


@pytest.mark.arm64
def test_scores_match_their_definitions(tmp_path: Path) -> None:
    stats = random_stats()
    f = np.random.default_rng(2).normal(size=(7, D)).astype(np.float32)
    brute = [min((x - m) @ stats.precision @ (x - m) for m in stats.means) for x in f]
    np.testing.assert_allclose(stats.mahalanobis(f), brute, rtol=1e-4)
    logits = f.astype(np.float64) @ stats.weight + stats.bias
    np.testing.assert_allclose(stats.energy(f), -np.log(np.exp(logits).sum(1)), rtol=1e-6)
    np.testing.assert_allclose(max_softmax_score(softmax(logits)), 1 - softmax(logits).max(1))
    stats.save(tmp_path / "ood.npz")
    np.testing.assert_array_equal(FeatureStats.load(tmp_path / "ood.npz").mahalanobis(f),
                                  stats.mahalanobis(f))


@pytest.mark.arm64
def test_a_symmetric_precision_is_stored_as_its_upper_triangle_and_loads_exactly(
        tmp_path: Path) -> None:
    stats = random_stats()
    symmetric = ((stats.precision.astype(np.float64) + stats.precision.T) / 2).astype(np.float32)
    halved = FeatureStats(stats.means, symmetric, stats.weight, stats.bias)
    halved.save(tmp_path / "half.npz")
    with np.load(tmp_path / "half.npz") as data:
        assert "precision" not in data.files
        assert data["precision_upper"].shape == (D * (D + 1) // 2,)
    np.testing.assert_array_equal(FeatureStats.load(tmp_path / "half.npz").precision, symmetric)

    asymmetric = symmetric.copy()
    asymmetric[0, 1] += 1e-3  # as earlier artifacts may hold: stored whole, loaded unchanged
    FeatureStats(stats.means, asymmetric, stats.weight, stats.bias).save(tmp_path / "whole.npz")
    np.testing.assert_array_equal(FeatureStats.load(tmp_path / "whole.npz").precision, asymmetric)


@pytest.mark.arm64
def test_a_truncated_upper_triangle_is_refused(tmp_path: Path) -> None:
    stats = random_stats()
    np.savez_compressed(tmp_path / "ood.npz", means=stats.means, weight=stats.weight,
                        bias=stats.bias, precision_upper=np.ones(D * (D + 1) // 2 - 1, np.float32))
    with pytest.raises(ArtifactIntegrityError, match="upper triangle"):
        FeatureStats.load(tmp_path / "ood.npz")


@pytest.mark.arm64
def test_statistics_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    good = random_stats()
    with pytest.raises(ArtifactIntegrityError, match="do not fit"):
        FeatureStats(good.means, good.precision[:-1], good.weight, good.bias)
    (tmp_path / "ood.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactIntegrityError, match="cannot read"):
        FeatureStats.load(tmp_path / "ood.npz")


@pytest.mark.arm64
def test_outputs_are_told_apart_by_width() -> None:
    probs, feats = TensorSpec("p", (None, K), "float32"), TensorSpec("f", (None, D), "float32")
    assert assign_outputs([probs], Path("m")) == (0, None)
    assert assign_outputs([feats, probs], Path("m")) == (1, 0)
    assert assign_outputs([probs, feats], Path("m")) == (0, 1)
    with pytest.raises(ModelLoadError, match=r"two .* of different widths"):
        assign_outputs([probs, probs], Path("m"))
    with pytest.raises(ModelLoadError, match="found 3 outputs"):
        assign_outputs([probs, feats, feats], Path("m"))


# --- fitting (training side: scikit-learn) -----------------------------------------------------

def clusters(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(scale=6.0, size=(K, D))
    labels = rng.integers(0, K, n)
    return centres[labels] + rng.normal(size=(n, D)) + shift, labels


def test_the_threshold_flags_at_most_the_stated_share() -> None:
    pytest.importorskip("sklearn", reason="training.trust needs the training extra")
    from training.trust import threshold_for

    scores = np.random.default_rng(3).normal(size=1000)
    for rate in (0.01, 0.05):
        t = threshold_for(scores, rate)
        assert np.mean(scores > t) <= rate
        assert np.mean(scores >= t) > rate - 1e-9  # and no lower threshold would do
    assert np.mean(np.arange(571.0) > threshold_for(np.arange(571.0), 0.01)) <= 0.01


def test_fitted_statistics_separate_far_features_from_the_training_clouds() -> None:
    pytest.importorskip("sklearn", reason="fitting the statistics needs the training extra")
    from training.trust import fit_feature_stats, threshold_for

    features, labels = clusters(2000, seed=4)
    stats = fit_feature_stats(features, labels, np.zeros((D, K)), np.zeros(K))
    threshold = threshold_for(stats.mahalanobis(clusters(600, seed=5)[0]), 0.01)
    held_out = stats.mahalanobis(clusters(2000, seed=6)[0])
    assert np.mean(held_out > threshold) < 0.03
    assert np.all(stats.mahalanobis(clusters(200, seed=7, shift=8.0)[0]) > threshold)


def test_fit_trust_calibrates_and_scores_from_the_model_outputs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="fitting the statistics needs the training extra")
    from runtime.preprocess import PreprocessSpec
    from training.pipeline import PreparedSet
    from training.trust import fit_trust

    spec = PreprocessSpec(image_size=32, scaling="unit")

    def prepared(n: int, seed: int) -> PreparedSet:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, K, n)
        images = np.zeros((n, 32, 32, 3), np.uint8)
        images[..., 0] = (labels * 60 + rng.integers(0, 20, n))[:, None, None]
        # A quarter of the labels disagree with what the image shows: a model certain of what
        # it sees is then over-confident.
        wrong = rng.random(n) < 0.25
        labels[wrong] = rng.integers(0, K, wrong.sum())
        return PreparedSet(images, labels, tuple(f"img{i}" for i in range(n)), ())

    weight = np.eye(D, K) * 6.0

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Features: the red level one-hot-ish by class plus noise; an over-confident head.
        level = x[:, 0, 0, 0]
        centre = np.clip(np.rint(level * 255 / 60), 0, K - 1).astype(int)
        f = np.eye(D)[centre] * 3 + np.random.default_rng(int(level.sum() * 1e3)).normal(
            scale=0.3, size=(len(x), D))
        return softmax(f @ weight * 4.0), f

    fit = fit_trust(predict, prepared(400, 8), prepared(300, 9), spec, (weight, np.zeros(K)),
                    fit_images=200)
    assert fit.temperature > 1.5  # the head was made over-confident
    assert fit.calibration["nll_after"] < fit.calibration["nll_before"]
    assert fit.ood["validation_flagged"] <= 0.01
    assert fit.ood["fit_images"] == 200 and fit.ood["threshold_images"] == 300
    files, extra = fit.write(tmp_path)
    assert files == ["ood.npz"] and (tmp_path / "ood.npz").is_file()
    assert extra["ood"]["threshold"] == fit.threshold and extra["calibration"]["temperature"]
    with pytest.raises(ConfigError, match="unknown out-of-distribution method"):
        fit_trust(predict, prepared(40, 8), prepared(30, 9), spec, (weight, np.zeros(K)),
                  method="vibes")


# --- an artifact that carries both --------------------------------------------------------------

def with_trust(folder: Path, temperature: float, threshold: float,
               stats: FeatureStats | None = None) -> Path:
    """Add a temperature and out-of-distribution statistics, as brainedge optimize does."""
    (stats or FeatureStats(np.zeros((K, D), np.float32), np.eye(D, dtype=np.float32),
                           np.zeros((D, K), np.float32), np.zeros(K, np.float32))
     ).save(folder / "ood.npz")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = hash_files(folder, ["model.onnx", "ood.npz"])
    manifest["extra"].update(calibration={"temperature": temperature},
                             ood={"method": "mahalanobis", "threshold": threshold,
                                  "false_flag_rate": 0.01, "file": "ood.npz"})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def gray(level: int) -> np.ndarray:
    image = np.zeros((32, 32), np.uint8)
    image[8:24, 8:24] = level
    return image


def test_the_runtime_reads_features_as_the_second_output(tmp_path: Path) -> None:
    need_onnxruntime()
    from runtime import get_predictor

    plain = get_predictor(make_artifact(tmp_path / "plain") / "model.onnx")
    both = get_predictor(make_artifact(tmp_path / "both", features=True) / "model.onnx")
    assert plain.feature_spec is None and both.feature_spec.shape == (None, D)
    x = np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype(np.float32)
    probs, features = both.predict_with_features(x)
    np.testing.assert_allclose(probs, plain.predict(x), atol=1e-7)
    np.testing.assert_allclose(features, np.tile(x.mean(axis=(1, 2)), 3), atol=1e-6)
    assert plain.predict_with_features(x)[1] is None


def test_a_classifier_applies_its_temperature_and_flags_by_its_score(tmp_path: Path) -> None:
    need_onnxruntime()
    from runtime import load_classifier
    from runtime.request import run_request

    plain = load_classifier(make_artifact(tmp_path / "plain", features=True))
    folder = with_trust(make_artifact(tmp_path / "trusted", features=True), 3.0, 0.5)
    trusted = load_classifier(folder)
    x = trusted.prepare(gray(120))[None]
    raw = plain.predict_batch(x)
    np.testing.assert_allclose(trusted.predict_batch(x), apply_temperature(raw, 3.0),
                               atol=1e-6)
    assert trusted.describe()["temperature"] == 3.0
    assert trusted.describe()["ood"]["threshold"] == 0.5
    # Means at 0 and identity precision: the score is the squared norm of the features,
    # 3 * sum of the three channel means, so a dark slice passes and a bright one is flagged.
    dark, bright = trusted.classify(gray(5)), trusted.classify(gray(250))
    assert not dark.ood_score.flagged and bright.ood_score.flagged
    assert "unlike the MRI slices" in bright.ood_score.reason
    answer = run_request(trusted, encode(gray(250)), "upload")
    assert answer.ood.score_flagged is True and answer.ood.score.flagged
    assert answer.ood.flagged and answer.prediction.to_dict()["ood_score"]["flagged"]
    assert answer.ood.measures["ood_threshold"] == 0.5
    # An artifact without statistics answers unscored, and says so.
    assert plain.classify(gray(250)).ood_score is None and plain.describe()["ood"] is None


def test_unverified_or_unusable_statistics_are_refused(tmp_path: Path) -> None:
    need_onnxruntime()
    from runtime import load_classifier

    folder = with_trust(make_artifact(tmp_path / "tampered", features=True), 2.0, 1.0)
    stats = FeatureStats.load(folder / "ood.npz")
    FeatureStats(stats.means + 1, stats.precision, stats.weight, stats.bias).save(
        folder / "ood.npz")
    with pytest.raises(ArtifactIntegrityError, match="not the file its manifest lists"):
        load_classifier(folder)
    no_features = with_trust(make_artifact(tmp_path / "no-features"), 2.0, 1.0)
    with pytest.raises(ArtifactIntegrityError, match="no features output"):
        load_classifier(no_features)
    bad_t = with_trust(make_artifact(tmp_path / "bad-t", features=True), 0.0, 1.0)
    with pytest.raises(ConfigError, match="temperature must be"):
        load_classifier(bad_t)
    assert CONFIDENT.shape == (3, K)  # the tiny model's features are 3 * 3 = D wide


# --- export: every format carries the features ------------------------------------------------

@pytest.mark.tf
def test_exported_artifacts_output_the_features_of_their_keras_model(tmp_path: Path) -> None:
    from brainedge.tf_compat import keras
    from optimize.calibration import CalibrationSet
    from optimize.convert import to_onnx, to_tflite, with_features
    from runtime import get_predictor
    from training.trust import keras_with_features

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(12, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    model = keras.Model(inputs, keras.layers.Dense(K, activation="softmax",
                                                   name="probabilities")(x))
    images = np.random.default_rng(0).uniform(size=(24, 16, 16, 3)).astype(np.float32)
    want_probs, want_feats = keras_with_features(model)(images)
    exported = with_features(model)
    calibration = CalibrationSet(images)
    blobs = {"fp32.tflite": to_tflite(exported, "fp32"),
             "int8.tflite": to_tflite(exported, "int8", calibration),
             "model.onnx": to_onnx(exported)}
    for name, blob in blobs.items():
        (tmp_path / name).write_bytes(blob)
        predictor = get_predictor(tmp_path / name)
        probs, feats = predictor.predict_with_features(images)
        assert predictor.feature_spec.shape[-1] == 12 and probs.shape == (24, K), name
        tol = 0.05 if name.startswith("int8") else 1e-5
        np.testing.assert_allclose(feats, want_feats, atol=tol * max(1, want_feats.max()))
        np.testing.assert_allclose(probs, want_probs, atol=tol)
    narrow = keras.Model(inputs, keras.layers.Dense(K, activation="softmax")(
        keras.layers.Dense(K)(keras.layers.GlobalAveragePooling2D()(inputs))))
    with pytest.raises(Exception, match="as wide as its output"):
        with_features(narrow)


# --- what the user sees: the page, the API and brainedge predict ------------------------------

SECRET = "secret-key-for-tests-0123456789"


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_onnxruntime()
    root = tmp_path_factory.mktemp("trusted")
    # Features = the three channel means, thrice: a phantom slice scores 0.69, the same slice
    # at half its brightness 0.22. Between them, the threshold tells them apart.
    return with_trust(make_artifact(root / "onnx-trusted", variant="onnx-trusted",
                                    features=True), 3.0, 0.4)


def bright() -> bytes:
    from tests.test_webapp_support import phantom

    return encode(phantom())


def dim() -> bytes:
    from tests.test_webapp_support import phantom

    return encode((phantom() * 0.5).astype(np.uint8))


def test_the_api_and_the_page_show_the_score_its_threshold_and_the_flag(trusted) -> None:
    from tests.test_webapp_support import csrf_from, multipart
    from webapp import create_app
    from webapp.config import ServeConfig

    client = create_app({"TESTING": True},
                        config=ServeConfig((trusted,), secret_key=SECRET)).test_client()
    body = client.post("/api/v1/predict", **multipart(bright())).get_json()
    score = body["ood"]["score"]
    assert score["method"] == "mahalanobis" and score["threshold"] == 0.4 and score["flagged"]
    assert body["ood"]["flagged"] and body["ood"]["score_flagged"] is True
    assert any("unlike the MRI slices" in r for r in body["ood"]["reasons"])
    assert body["model"]["temperature"] == 3.0
    assert body["class"]  # a flagged upload is still answered
    calm = client.post("/api/v1/predict", **multipart(dim())).get_json()
    assert calm["ood"]["score"]["flagged"] is False and calm["ood"]["score_flagged"] is False

    token = csrf_from(client.get("/").get_data(as_text=True))
    html = client.post("/", **multipart(bright(), csrf_token=token)
                       ).get_data(as_text=True)
    assert 'id="ood-warning"' in html and 'id="prediction-label"' in html
    assert "unlike the brain MRI slices the model was trained" in html
    assert 'id="ood-score"' in html and "threshold of\n          0.4" in html
    assert "temperature\n          3.00" in html


def test_predict_has_an_ood_column_and_names_what_fired(trusted, tmp_path: Path) -> None:
    import csv
    import io

    from click.testing import CliRunner

    from cli.main import main

    (tmp_path / "bright.png").write_bytes(bright())
    (tmp_path / "dark.png").write_bytes(dim())
    table = CliRunner().invoke(main, ["predict", str(tmp_path), "--model", str(trusted)])
    assert table.exit_code == 0, table.output
    rows = {line.split()[0].rsplit("/", 1)[-1]: line for line in table.stdout.splitlines()
            if ".png" in line and not line.startswith(" ")}
    assert "FLAGGED by score" in rows["bright.png"] and "ok (score" in rows["dark.png"]
    assert "1 file(s) FLAGGED" in table.stdout and "temperature 3.00" in table.stdout
    as_csv = CliRunner().invoke(main, ["predict", str(tmp_path), "--model", str(trusted),
                                       "--format", "csv"])
    flagged = {Path(r["file"]).name: r["ood_flagged"]
               for r in csv.DictReader(io.StringIO(as_csv.stdout))}
    assert flagged == {"bright.png": "true", "dark.png": "false"}
