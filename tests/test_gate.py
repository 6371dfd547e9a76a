"""A failed artifact is not served silently (issue 11, item 7).

An artifact whose manifest records that it failed its parity gate (``status: failed``,
optimize/validate.py) is refused by ``load_classifier``, ``brainedge predict`` and
``brainedge serve`` unless explicitly allowed; where allowed, every answer says so: the API's
JSON, the page, and each row of ``predict``. The artifacts are tiny hand-written ONNX models
(tests/test_webapp_support.py), so this runs on an edge install.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from brainedge.errors import FailedGateError
from brainedge.manifest import load_manifest
from cli.main import main
from runtime import load_classifier
from runtime.gate import Gate, read_gate
from tests.test_webapp_support import (
    csrf_from,
    encode,
    make_artifact,
    multipart,
    need_onnxruntime,
    phantom,
)
from webapp import create_app, serve
from webapp.config import ServeConfig
from webapp.registry import verify_artifacts

SECRET = "secret-key-for-tests-0123456789"
FAILED = {"status": "failed", "val_drop": 0.014, "test_drop": 0.009, "tolerance": 0.01}
PASSED = {"status": "passed", "val_drop": 0.0023, "tolerance": 0.01}
WHAT_FAILED = "failed its parity gate: 1.40 accuracy points below its float32 parent"


def with_metrics(folder: Path, metrics: dict[str, Any]) -> Path:
    """``folder``'s manifest with ``metrics`` recorded, as brainedge optimize writes them."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["metrics"].update(metrics)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_onnxruntime()
    root = tmp_path_factory.mktemp("gate")
    return with_metrics(make_artifact(root / "onnx-failed", variant="onnx-failed"), FAILED)


@pytest.fixture(scope="module")
def passed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_onnxruntime()
    root = tmp_path_factory.mktemp("gate")
    return with_metrics(make_artifact(root / "onnx-passed", variant="onnx-passed"), PASSED)


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("slices")
    for i in range(2):
        (folder / f"slice{i}.png").write_bytes(encode(phantom("glioma", i)))
    return folder


# --- the verdict and load_classifier -------------------------------------------------------------

def test_the_gate_is_read_from_the_manifest_in_points(failed, passed) -> None:
    # The largest drop over the splits checked: validation 1.4, test 0.9.
    assert read_gate(load_manifest(failed)) == Gate("failed", 1.4, 1.0)
    assert read_gate(load_manifest(passed)) == Gate("passed", 0.23, 1.0)


def test_a_training_run_records_no_gate(tmp_path) -> None:
    need_onnxruntime()
    assert read_gate(load_manifest(make_artifact(tmp_path / "run"))) is None


def test_load_classifier_refuses_a_failed_artifact_and_says_what_to_do(failed) -> None:
    with pytest.raises(FailedGateError) as info:
        load_classifier(failed)
    message = str(info.value)
    assert str(failed) in message and WHAT_FAILED in message and "(allowed: 1.00)" in message
    assert "--allow-failed-gate" in message and "BRAINEDGE_ALLOW_FAILED_GATE=1" in message


def test_a_status_other_than_passed_is_no_pass(tmp_path) -> None:
    need_onnxruntime()
    odd = with_metrics(make_artifact(tmp_path / "odd"), {"status": "unchecked"})
    with pytest.raises(FailedGateError, match="parity gate status 'unchecked'"):
        load_classifier(odd)


def test_allowed_it_loads_and_carries_its_verdict(failed, passed) -> None:
    classifier = load_classifier(failed, allow_failed_gate=True)
    assert classifier.gate == Gate("failed", 1.4, 1.0)
    assert classifier.describe()["gate"] == {"status": "failed", "drop_points": 1.4,
                                             "tolerance_points": 1.0}
    assert load_classifier(passed).gate.passed  # no flag needed for a pass


# --- brainedge predict ----------------------------------------------------------------------------

def predict(*args: str) -> Any:
    return CliRunner().invoke(main, ["predict", *args])


def test_predict_refuses_a_failed_artifact_in_one_line(failed, slices) -> None:
    result = predict(str(slices), "--model", str(failed))
    assert result.exit_code == 1
    assert WHAT_FAILED in result.output and "Traceback" not in result.output


def test_predict_table_says_so_beside_every_answer_when_allowed(failed, slices) -> None:
    result = predict(str(slices), "--model", str(failed), "--allow-failed-gate")
    assert result.exit_code == 0, result.output
    header, *rows = [line for line in result.stdout.splitlines() if "slice" in line
                     or line.startswith("file")]
    assert header.split()[-1] == "gate" and len(rows) == 2
    assert all(row.endswith("FAILED, 1.40 pts below parent") for row in rows)
    assert result.output.count(f"WARNING: this model {WHAT_FAILED}") == 1  # the table's end


def test_predict_csv_and_json_carry_the_gate_on_every_row(failed, slices) -> None:
    as_csv = predict(str(slices), "--model", str(failed), "--allow-failed-gate",
                     "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["gate"] for r in rows] == ["FAILED, 1.40 pts below parent"] * 2
    assert f"WARNING: this model {WHAT_FAILED}" in as_csv.stderr
    as_json = predict(str(slices), "--model", str(failed), "--allow-failed-gate",
                      "--format", "json")
    document = json.loads(as_json.stdout)
    gate = {"status": "failed", "drop_points": 1.4, "tolerance_points": 1.0}
    assert document["gate"] == gate
    assert [row["gate"] for row in document["predictions"]] == [gate, gate]


def test_predict_with_a_passed_artifact_adds_no_gate_column(passed, slices) -> None:
    result = predict(str(slices), "--model", str(passed))
    assert result.exit_code == 0, result.output
    assert "gate" not in result.stdout.splitlines()[0] and "WARNING" not in result.output


# --- the web app and brainedge serve --------------------------------------------------------------

def test_the_server_refuses_to_start_with_a_failed_artifact(failed, passed) -> None:
    config = ServeConfig((passed, failed), secret_key=SECRET)
    with pytest.raises(FailedGateError, match=WHAT_FAILED):
        verify_artifacts(config)  # in the master, before any worker forks
    with pytest.raises(FailedGateError, match="BRAINEDGE_ALLOW_FAILED_GATE"):
        create_app({"TESTING": True}, config=config)


def test_the_environment_variable_allows_it() -> None:
    assert ServeConfig.from_env({"BRAINEDGE_ARTIFACTS": "a"}).allow_failed_gate is False
    config = ServeConfig.from_env({"BRAINEDGE_ARTIFACTS": "a",
                                   "BRAINEDGE_ALLOW_FAILED_GATE": "1"})
    assert config.allow_failed_gate is True


@pytest.fixture(scope="module")
def client(failed, passed) -> Any:
    config = ServeConfig((passed, failed), secret_key=SECRET, allow_failed_gate=True)
    return create_app({"TESTING": True}, config=config).test_client()


def test_api_answers_of_a_failed_artifact_carry_the_gate_and_a_warning(client) -> None:
    body = client.post("/api/v1/predict?model=tinynet-onnx-failed",
                       **multipart(encode(phantom()))).get_json()
    assert body["gate"] == {"status": "failed", "drop_points": 1.4, "tolerance_points": 1.0}
    assert WHAT_FAILED in body["gate_warning"]
    passing = client.post("/api/v1/predict", **multipart(encode(phantom()))).get_json()
    assert passing["gate"]["status"] == "passed" and "gate_warning" not in passing
    listed = {m["name"]: m["gate"]["status"]
              for m in client.get("/api/v1/models").get_json()["models"]}
    assert listed == {"tinynet-onnx-passed": "passed", "tinynet-onnx-failed": "failed"}


def test_the_page_shows_a_warning_beside_the_answer_of_a_failed_artifact(client) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "FAILED its parity gate" in page  # in the model picker already
    token = csrf_from(page)
    html = client.post("/", **multipart(encode(phantom()), csrf_token=token,
                                        model="tinynet-onnx-failed")).get_data(as_text=True)
    assert 'id="gate-warning"' in html and WHAT_FAILED in html
    html = client.post("/", **multipart(encode(phantom()), csrf_token=token,
                                        model="tinynet-onnx-passed")).get_data(as_text=True)
    assert 'id="prediction-label"' in html and 'id="gate-warning"' not in html


def test_brainedge_serve_flag_allows_it_and_its_absence_keeps_the_environment(
        monkeypatch) -> None:
    calls: list[ServeConfig] = []
    monkeypatch.setattr(serve, "run_server", lambda config, **kw: calls.append(config))
    runner = CliRunner()
    assert runner.invoke(main, ["serve", "--artifact", "a", "--allow-failed-gate"]).exit_code == 0
    assert runner.invoke(main, ["serve", "--artifact", "a"],
                         env={"BRAINEDGE_ALLOW_FAILED_GATE": "yes"}).exit_code == 0
    assert runner.invoke(main, ["serve", "--artifact", "a"],
                         env={"BRAINEDGE_ALLOW_FAILED_GATE": ""}).exit_code == 0
    assert [c.allow_failed_gate for c in calls] == [True, True, False]
