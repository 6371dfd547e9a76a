"""What a wheel holds: every package of the repository, and the shipped models as data."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import PROJECT_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


def _setuptools() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_folder_with_an_init_is_a_listed_package():
    config = _setuptools()
    mapped = {path: name for name, path in config.get("package-dir", {}).items()}
    found = set()
    for init in PROJECT_ROOT.rglob("__init__.py"):
        folder = init.parent.relative_to(PROJECT_ROOT)
        if folder.parts[0] in {"tests", "build"} or folder.parts[0].startswith("."):
            continue
        top = mapped.get(folder.parts[0], folder.parts[0])
        found.add(".".join((top, *folder.parts[1:])))
    missing = found - set(config["packages"])
    assert not missing, f"packages missing from pyproject.toml: {sorted(missing)}"


def test_the_shipped_models_are_package_data():
    config = _setuptools()
    assert config["package-dir"]["brainedge_models"] == "models"
    patterns = config["package-data"]["brainedge_models"]
    for needed in ("*/manifest.json", "*/card.json", "*/model.tflite", "*/ood.npz",
                   "MODEL_CARD.md"):
        assert needed in patterns
    # Every file a shipped model's manifest lists installs with it (else it fails its sha256).
    import fnmatch
    import json

    for manifest in (PROJECT_ROOT / "models").glob("*/manifest.json"):
        for name in json.loads(manifest.read_text())["files"]:
            rel = f"{manifest.parent.name}/{name}"
            assert any(fnmatch.fnmatch(rel, pattern) for pattern in patterns), rel
