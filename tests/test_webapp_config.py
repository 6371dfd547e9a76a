"""ServeConfig from code, environment and files; start-up refusals of create_app; run_server
wiring (gunicorn and the development server are patched, never started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from brainedge.errors import ArtifactIntegrityError, ConfigError, ModelLoadError
from tests.conftest import PROJECT_ROOT
from tests.test_webapp_support import (
    CONFIDENT,
    REVERSED,
    make_artifact,
    need_onnxruntime,
    png_bomb,
    tiny_onnx_bytes,
)
from webapp import create_app, serve
from webapp.config import MB, ServeConfig

TOKEN = "t0ken-for-tests-0123456789"
SECRET = "secret-key-for-tests-0123456789"


# --- ServeConfig ------------------------------------------------------------------------------

def test_defaults_follow_the_issue() -> None:
    config = ServeConfig(("a",))
    assert config.artifacts == (Path("a"),)
    assert config.max_upload_bytes == 20 * MB and config.max_upload_mb == 20
    assert config.threads is None and config.concurrency == 2
    assert config.api_token is None and config.default_artifact is None


def test_repr_hides_the_token_and_the_secret_key() -> None:
    text = repr(ServeConfig(("a",), api_token=TOKEN, secret_key=SECRET))
    assert TOKEN not in text and SECRET not in text


def test_a_default_artifact_path_alone_is_served() -> None:
    assert ServeConfig((), default_artifact="runs/x/tflite-int8").artifacts == (
        Path("runs/x/tflite-int8"),)


@pytest.fixture
def nothing_shipped(monkeypatch, tmp_path):
    """An install whose shipped-models folder is empty."""
    import runtime.shipped

    monkeypatch.setattr(runtime.shipped, "shipped_root", lambda: tmp_path)
    return tmp_path


def test_with_no_artifact_configured_the_shipped_densenet121_is_served(monkeypatch,
                                                                       tmp_path) -> None:
    import runtime.shipped

    (tmp_path / "densenet121").mkdir()
    (tmp_path / "densenet121" / "manifest.json").write_text("{}")
    monkeypatch.setattr(runtime.shipped, "shipped_root", lambda: tmp_path)
    assert ServeConfig(()).artifacts == (tmp_path / "densenet121",)


def test_with_nothing_configured_or_shipped_it_says_what_to_set(nothing_shipped) -> None:
    with pytest.raises(ConfigError, match="no artifact to serve: set BRAINEDGE_ARTIFACTS"):
        ServeConfig(())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"artifacts": ("a", "a")}, "listed twice"),
    ({"max_upload_bytes": 0}, "max_upload_bytes must be an integer from 1024"),
    ({"threads": 0}, "threads must be an integer from 1"),
    ({"threads": True}, "threads must be an integer"),
    ({"concurrency": 0}, "concurrency must be an integer from 1"),
    ({"api_token": "short"}, "api_token must be at least 16 characters"),
    ({"api_token": "has a space in the middle of it"}, "without spaces"),
    ({"secret_key": "short"}, "secret_key must be at least 16 characters"),
])
def test_serve_config_refuses_nonsense(kwargs: dict[str, Any], message: str) -> None:
    values = {"artifacts": ("a",), **kwargs}
    with pytest.raises(ConfigError, match=message) as info:
        ServeConfig(**values)
    secret = kwargs.get("api_token") or kwargs.get("secret_key")
    if secret:
        assert secret not in str(info.value)


def test_from_env_reads_every_variable() -> None:
    env = {
        "BRAINEDGE_ARTIFACTS": f"runs/a{os.pathsep}runs/b,runs/c",
        "BRAINEDGE_DEFAULT_ARTIFACT": "densenet121-tflite-int8",
        "BRAINEDGE_MAX_UPLOAD_MB": "5",
        "BRAINEDGE_THREADS": "3",
        "BRAINEDGE_CONCURRENCY": "4",
        "BRAINEDGE_API_TOKEN": TOKEN,
        "BRAINEDGE_SECRET_KEY": SECRET,
    }
    config = ServeConfig.from_env(env)
    assert config.artifacts == (Path("runs/a"), Path("runs/b"), Path("runs/c"))
    assert config.default_artifact == "densenet121-tflite-int8"
    assert config.max_upload_bytes == 5 * MB
    assert (config.threads, config.concurrency) == (3, 4)
    assert (config.api_token, config.secret_key) == (TOKEN, SECRET)


def test_overrides_win_over_the_environment_and_unset_ones_are_ignored() -> None:
    env = {"BRAINEDGE_ARTIFACTS": "runs/a", "BRAINEDGE_THREADS": "3"}
    config = ServeConfig.from_env(env, overrides={"artifacts": ["runs/b"], "threads": None,
                                                  "max_upload_mb": 2.5})
    assert config.artifacts == (Path("runs/b"),) and config.threads == 3
    assert config.max_upload_bytes == round(2.5 * MB)
    assert ServeConfig.from_env(env, overrides={"artifacts": []}).artifacts == (Path("runs/a"),)
    with pytest.raises(ConfigError, match="unknown setting"):
        ServeConfig.from_env(env, overrides={"workers": 2})


def test_from_env_without_variables_or_shipped_model_says_what_to_set(nothing_shipped) -> None:
    with pytest.raises(ConfigError, match="BRAINEDGE_ARTIFACTS"):
        ServeConfig.from_env({})


def test_from_env_without_variables_serves_the_shipped_densenet121() -> None:
    from runtime.shipped import shipped_artifacts

    assert ServeConfig.from_env({}).artifacts == (shipped_artifacts()["densenet121"],)


@pytest.mark.parametrize(("var", "value", "message"), [
    ("BRAINEDGE_MAX_UPLOAD_MB", "lots", "max_upload_mb must be a number"),
    ("BRAINEDGE_MAX_UPLOAD_MB", "-1", "max_upload_mb must be positive"),
    ("BRAINEDGE_THREADS", "two", "threads must be a whole number"),
    ("BRAINEDGE_CONCURRENCY", "0", "concurrency must be an integer from 1"),
])
def test_from_env_refuses_bad_values_naming_them(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServeConfig.from_env({"BRAINEDGE_ARTIFACTS": "a", var: value})


def test_config_file_toml_and_json_with_the_environment_winning(tmp_path: Path) -> None:
    toml = tmp_path / "serve.toml"
    toml.write_text('artifacts = ["runs/a", "runs/b"]\nmax_upload_mb = 8\nthreads = 2\n')
    config = ServeConfig.from_env({"BRAINEDGE_CONFIG": str(toml), "BRAINEDGE_THREADS": "1"})
    assert config.artifacts == (Path("runs/a"), Path("runs/b"))
    assert config.max_upload_bytes == 8 * MB and config.threads == 1

    as_json = tmp_path / "serve.json"
    as_json.write_text(json.dumps({"artifacts": ["runs/c"], "concurrency": 3}))
    config = ServeConfig.from_env({"BRAINEDGE_CONFIG": str(as_json)})
    assert config.artifacts == (Path("runs/c"),) and config.concurrency == 3


@pytest.mark.parametrize(("name", "text", "message"), [
    ("serve.toml", 'artifacts = ["a"]\nworkers = 4\n', "unknown setting"),
    ("serve.toml", "artifacts = [", "not valid TOML"),
    ("serve.json", "{", "not valid JSON"),
    ("serve.json", '["a"]', "expected a table"),
    ("serve.json", '{"artifacts": 3}', "artifacts must be a list"),
])
def test_config_file_problems_are_config_errors(tmp_path: Path, name: str, text: str,
                                                 message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        ServeConfig.from_env({"BRAINEDGE_CONFIG": str(path)})


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ServeConfig.from_env({"BRAINEDGE_CONFIG": str(tmp_path / "nope.toml")})


# --- create_app start-up ----------------------------------------------------------------------

@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    need_onnxruntime()
    return make_artifact(tmp_path / "onnx-fp32")


def test_create_app_reads_the_environment_when_given_no_config(artifact, monkeypatch) -> None:
    monkeypatch.setenv("BRAINEDGE_ARTIFACTS", str(artifact))
    monkeypatch.setenv("BRAINEDGE_SECRET_KEY", SECRET)
    monkeypatch.setenv("BRAINEDGE_MAX_UPLOAD_MB", "3")
    app = create_app({"TESTING": True})
    assert app.config["MAX_CONTENT_LENGTH"] == 3 * MB
    assert app.config["SECRET_KEY"] == SECRET and app.testing
    assert app.test_client().get("/readyz").get_json()["models"] == ["tinynet-onnx-fp32"]


def test_create_app_refuses_an_artifact_whose_sha256_does_not_match(artifact) -> None:
    model = artifact / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(ArtifactIntegrityError, match="does not match its manifest"):
        create_app(config=ServeConfig((artifact,)))


def test_create_app_refuses_a_folder_without_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(tiny_onnx_bytes(CONFIDENT))
    with pytest.raises(ModelLoadError, match=r"manifest\.json"):
        create_app(config=ServeConfig((folder,)))


def test_create_app_refuses_a_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such artifact"):
        create_app(config=ServeConfig((tmp_path / "nope",)))


def test_create_app_refuses_two_artifacts_with_one_name(artifact, tmp_path: Path) -> None:
    twin = make_artifact(tmp_path / "copy" / "onnx-fp32", REVERSED)
    with pytest.raises(ConfigError, match="both named 'tinynet-onnx-fp32'"):
        create_app(config=ServeConfig((artifact, twin)))


def test_default_artifact_by_name_or_path_and_unknown_refused(artifact, tmp_path) -> None:
    other = make_artifact(tmp_path / "onnx-rev", REVERSED, variant="onnx-rev")
    by_name = create_app(config=ServeConfig((artifact, other),
                                            default_artifact="tinynet-onnx-rev"))
    assert by_name.extensions["brainedge"].registry.default == "tinynet-onnx-rev"
    by_path = create_app(config=ServeConfig((artifact, other), default_artifact=str(other)))
    assert by_path.extensions["brainedge"].registry.default == "tinynet-onnx-rev"
    with pytest.raises(ConfigError, match="not among the loaded ones"):
        create_app(config=ServeConfig((artifact,), default_artifact="resnet"))


def test_hand_written_onnx_bytes_are_a_valid_onnx_model() -> None:
    onnx = pytest.importorskip("onnx", reason="onnx (training extra) checks the hand-written "
                               "model; the edge install runs it with onnxruntime only")
    model = onnx.load_from_string(tiny_onnx_bytes(CONFIDENT))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["ReduceMean", "MatMul", "Softmax"]


def test_the_served_process_refuses_a_png_bomb_from_its_header() -> None:
    # OpenCV reads its pixel limit once, when it is imported; runtime.imageio sets it first,
    # but only if nothing imported cv2 before. A fresh process importing webapp, as
    # `brainedge serve` and gunicorn do, must get the limit (no 900-megapixel allocation).
    code = (
        "import sys; import webapp.inference; import cv2, numpy as np\n"
        "from tests.test_webapp_support import png_bomb\n"
        "try:\n"
        "    cv2.imdecode(np.frombuffer(png_bomb(30000, 30000), np.uint8), -1)\n"
        "except cv2.error:\n"
        "    sys.exit(0)\n"
        "sys.exit('OpenCV tried to decode a 30000x30000 PNG')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(png_bomb()) < 100  # the bomb is tiny; only its header is large


# --- run_server -------------------------------------------------------------------------------

@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record what would be started instead of starting it."""
    import flask
    from gunicorn.app.base import BaseApplication

    calls: list[Any] = []
    monkeypatch.setattr(BaseApplication, "run", lambda self: calls.append(self))
    monkeypatch.setattr(flask.Flask, "run",
                        lambda self, **kwargs: calls.append((self, kwargs)))
    return calls


def test_production_serving_is_gunicorn_without_preload_and_with_shared_secret(
        artifact, started) -> None:
    serve.run_server(ServeConfig((artifact,), concurrency=3), host="0.0.0.0", port=8123,
                     workers=2)
    (gunicorn_app,) = started
    cfg = gunicorn_app.cfg
    assert cfg.bind == ["0.0.0.0:8123"] and cfg.workers == 2 and cfg.threads == 3
    assert cfg.preload_app is False and cfg.worker_class_str == "gthread"
    assert cfg.accesslog is None
    # What each worker does after the fork: build the app from the same configuration.
    first, second = gunicorn_app.load(), gunicorn_app.load()
    assert first is not second
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert first.test_client().get("/readyz").status_code == 200


def test_default_worker_count_is_at_most_two(artifact, started) -> None:
    assert 1 <= serve.default_workers() <= 2
    serve.run_server(ServeConfig((artifact,)))
    assert started[0].cfg.workers == serve.default_workers()
    assert started[0].cfg.bind == ["127.0.0.1:8000"]


def test_ipv6_hosts_are_bracketed() -> None:
    options = serve.gunicorn_options(ServeConfig(("a",)), "::1", 9000, 1)
    assert options["bind"] == ["[::1]:9000"]


def test_a_tampered_artifact_stops_run_server_before_anything_starts(artifact,
                                                                     started) -> None:
    model = artifact / "model.onnx"
    model.write_bytes(b"garbage")
    with pytest.raises(ArtifactIntegrityError):
        serve.run_server(ServeConfig((artifact,)))
    assert started == []


def test_zero_workers_is_refused(artifact, started) -> None:
    with pytest.raises(ConfigError, match="workers"):
        serve.run_server(ServeConfig((artifact,)), workers=0)
    assert started == []


def test_dev_serving_is_flasks_server_without_request_line_logging(artifact, started) -> None:
    serve.run_server(ServeConfig((artifact,), secret_key=SECRET), host="127.0.0.1",
                     port=5050, dev=True)
    ((app, kwargs),) = started
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 5050
    assert kwargs["use_reloader"] is False and kwargs["threaded"] is True
    assert kwargs["request_handler"] is serve._QuietRequestHandler
    assert app.config["SECRET_KEY"] == SECRET


# --- brainedge serve (cli/serve.py) ---------------------------------------------------

@pytest.fixture
def serve_command() -> Any:
    from cli.main import main

    if "serve" not in main.commands:
        pytest.skip("`brainedge serve` is not wired into cli/main.py")
    return main


def test_brainedge_serve_help_lists_its_options(serve_command) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(serve_command, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--artifact", "--default", "--host", "--port", "--workers", "--dev"):
        assert option in result.output


def test_brainedge_serve_passes_options_over_the_environment_to_run_server(
        serve_command, monkeypatch) -> None:
    from click.testing import CliRunner

    calls: list[tuple[ServeConfig, dict[str, Any]]] = []
    monkeypatch.setattr(serve, "run_server", lambda config, **kw: calls.append((config, kw)))
    env = {"BRAINEDGE_ARTIFACTS": "runs/other", "BRAINEDGE_THREADS": "3"}
    result = CliRunner().invoke(serve_command, [
        "serve", "--artifact", "runs/a", "--artifact", "runs/b", "--port", "9000", "--dev",
        "--max-upload-mb", "5"], env=env)
    assert result.exit_code == 0, result.output
    ((config, kwargs),) = calls
    assert config.artifacts == (Path("runs/a"), Path("runs/b")) and config.threads == 3
    assert config.max_upload_bytes == 5 * MB
    assert kwargs == {"host": "127.0.0.1", "port": 9000, "workers": None, "dev": True}


def test_brainedge_serve_without_artifacts_is_a_one_line_error(serve_command,
                                                              nothing_shipped) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(serve_command, ["serve"], env={"BRAINEDGE_ARTIFACTS": ""})
    assert result.exit_code == 1 and "no artifact to serve" in result.output
