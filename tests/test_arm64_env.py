"""The set-up of ``make arm64-check`` (deploy/arm64-check/), without QEMU or downloads: mirrors
read from the machine's apt configuration, the fixed image list, the model discovery, the
stamps that decide a rebuild, and how the CLI is launched."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "deploy" / "arm64-check"
sys.path.insert(0, str(TOOLS))

import arm64_apt  # noqa: E402
import arm64_check  # noqa: E402
import arm64_env  # noqa: E402
import arm64_steps  # noqa: E402
from arm64_emulator import cli_entry_point, cli_launcher, emulated, native  # noqa: E402

DEB822 = """\
Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: {keyring}

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: {keyring}

Types: deb
Enabled: no
URIs: http://other.invalid/debian
Suites: bookworm
Components: main
"""


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    path = tmp_path / "debian-archive-keyring.gpg"
    path.write_bytes(b"key")
    return path


def etc_apt(tmp_path: Path, keyring: Path, one_line: str = "", deb822: str = DEB822) -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(one_line)
    (etc / "sources.list.d" / "debian.sources").write_text(deb822.format(keyring=keyring))
    (etc / "sources.list.d" / "vendor.list.disabled").write_text("deb http://x.invalid/ a b\n")
    return etc


# --- mirrors ------------------------------------------------------------------------------------

def test_mirrors_come_from_the_machines_deb822_sources(tmp_path, keyring):
    entries = arm64_apt.read_host_sources(etc_apt(tmp_path, keyring))
    mirrors = arm64_apt.find_debian_mirrors(entries, "bookworm", env={})
    assert mirrors == arm64_apt.DebianMirrors("http://mirror.invalid/debian",
                                              "http://mirror.invalid/debian-security",
                                              str(keyring))
    sources = mirrors.arm64_sources()
    assert f"deb [arch=arm64 signed-by={keyring}] http://mirror.invalid/debian bookworm " \
           "bookworm-updates main" in sources
    assert "http://mirror.invalid/debian-security bookworm-security main" in sources
    assert "[arch=amd64 " in mirrors.backports_sources("amd64")
    assert "bookworm-backports main" in mirrors.backports_sources("amd64")


def test_one_line_sources_with_options_are_read_too(tmp_path, keyring):
    one_line = (f"# a comment\ndeb [arch=amd64 signed-by={keyring}] http://m.invalid/debian "
                "trixie main\ndeb http://m.invalid/debian-security trixie-security main\n")
    entries = arm64_apt.read_host_sources(etc_apt(tmp_path, keyring, one_line, deb822=""))
    mirrors = arm64_apt.find_debian_mirrors(entries, "trixie", env={})
    assert (mirrors.archive, mirrors.security) == ("http://m.invalid/debian",
                                                   "http://m.invalid/debian-security")
    # Whatever the host runs, the userland is the Pi's: bookworm.
    assert " bookworm bookworm-updates main" in mirrors.arm64_sources()


def test_a_host_without_debian_sources_is_told_which_variables_to_set(tmp_path, keyring):
    entries = arm64_apt.read_host_sources(etc_apt(tmp_path, keyring, deb822=""))
    with pytest.raises(arm64_apt.MirrorError, match="ARM64_DEBIAN_MIRROR"):
        arm64_apt.find_debian_mirrors(entries, "jammy", env={})


def test_the_environment_names_the_mirrors_when_apt_does_not(tmp_path, keyring, monkeypatch):
    monkeypatch.setattr(arm64_apt, "DEFAULT_KEYRING", keyring)
    env = {arm64_apt.MIRROR_ENV: "http://a.invalid/debian/",
           arm64_apt.SECURITY_MIRROR_ENV: "http://a.invalid/debian-security"}
    mirrors = arm64_apt.find_debian_mirrors([], "jammy", env=env)
    assert (mirrors.archive, mirrors.security) == ("http://a.invalid/debian",
                                                   "http://a.invalid/debian-security")


def test_a_missing_keyring_is_named_with_the_package_to_install(tmp_path, keyring):
    entries = arm64_apt.read_host_sources(etc_apt(tmp_path, keyring))
    keyring.unlink()
    with pytest.raises(arm64_apt.MirrorError, match="debian-archive-keyring"):
        arm64_apt.find_debian_mirrors(entries, "bookworm", env={})


def test_no_mirror_of_this_machine_is_written_into_the_tooling():
    # The mirrors come from the machine at run time (see arm64_apt); the repository names none.
    hosts = {urlparse(uri).hostname for e in arm64_apt.read_host_sources() for uri in e.uris}
    text = "".join(p.read_text() for p in TOOLS.iterdir() if p.is_file())
    assert not [h for h in hosts if h and h in text]


# --- the environment's cache ----------------------------------------------------------------------

def test_a_part_is_rebuilt_only_when_its_key_changes(tmp_path):
    builds: list[Path] = []

    def build(target: Path) -> None:
        builds.append(target)
        (target / "file").write_text("x")

    folder = tmp_path / "site"
    assert arm64_env.ensure(folder, "k1", build)
    assert not arm64_env.ensure(folder, "k1", build)
    assert arm64_env.ensure(folder, "k2", build)
    assert len(builds) == 2 and (folder / "file").is_file()


def test_an_interrupted_build_leaves_no_stamp(tmp_path):
    def broken(target: Path) -> None:
        (target / "half").write_text("x")
        raise RuntimeError("download failed")

    with pytest.raises(RuntimeError, match="download failed"):
        arm64_env.ensure(tmp_path / "site", "k", broken)
    assert not (tmp_path / "site" / ".stamp").exists()


def test_the_wheels_are_the_edge_extra_and_the_test_runner_without_tensorflow():
    reqs = arm64_env.requirements(ROOT / "pyproject.toml")
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs}
    assert {"numpy", "opencv-python-headless", "onnxruntime", "ai-edge-litert", "pydicom",
            "flask", "gunicorn", "pytest"} <= names
    assert not {"tensorflow", "tf-keras", "ruff", "selenium"} & names


# --- inputs, models, launcher ---------------------------------------------------------------------

def test_the_fixed_image_list_is_52_slices_13_per_class_without_repeats():
    lines = [line for line in arm64_check.IMAGE_LIST.read_text().splitlines()
             if line and not line.startswith("#")]
    assert len(lines) == len(set(lines)) == 52
    for cls in ("glioma", "meningioma", "notumor", "pituitary"):
        assert sum(line.startswith(f"Testing/{cls}/") for line in lines) == 13


def test_a_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(arm64_check.CheckError, match="set ARM64_DATA"):
        arm64_check.read_image_list(arm64_check.IMAGE_LIST, tmp_path)


def test_no_models_fails_instead_of_passing_vacuously(tmp_path, monkeypatch):
    monkeypatch.setattr(arm64_check, "REPO", tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(arm64_check.CheckError, match="models/ has no folder with a manifest"):
        arm64_check.find_models([])
    (tmp_path / "models" / "densenet121").mkdir()
    (tmp_path / "models" / "densenet121" / "manifest.json").write_text("{}")
    assert arm64_check.find_models([]) == [tmp_path / "models" / "densenet121"]


def test_a_named_folder_without_a_manifest_is_refused(tmp_path):
    with pytest.raises(arm64_check.CheckError, match=r"no manifest\.json"):
        arm64_check.find_models([str(tmp_path)])


def test_the_cli_is_launched_through_pyprojects_script_entry():
    module, func = cli_entry_point(ROOT)
    code = cli_launcher(ROOT)
    assert f"from {module} import {func}" in code and "sys.argv[0] = 'brainedge'" in code


def test_the_emulated_python_gets_no_host_python_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/host/site-packages")
    monkeypatch.setenv("LD_PRELOAD", "/host/libx86.so")
    monkeypatch.setenv("BRAINEDGE_API_TOKEN", "host-token-0123456789")
    py = emulated(arm64_env.Layout(tmp_path), ROOT, "cortex-a72")
    assert py.argv[:3] == (str(tmp_path / "qemu" / "qemu-aarch64"), "-cpu", "cortex-a72")
    assert py.env["PYTHONPATH"].split(":") == [str(ROOT), str(tmp_path / "site")]
    assert "LD_PRELOAD" not in py.env and "BRAINEDGE_API_TOKEN" not in py.env
    assert native(ROOT).env["PYTHONPATH"] == str(ROOT)
    with pytest.raises(ValueError, match="cortex-a72, cortex-a76"):
        emulated(arm64_env.Layout(tmp_path), ROOT, "cortex-m0")


def test_steps_past_the_time_budget_fail_instead_of_running(tmp_path):
    checks = arm64_steps.Checks()
    side = arm64_steps.Side(native(ROOT), tmp_path, tmp_path, {"m": tmp_path},
                            tmp_path / "specs.json", 1, checks, deadline=0.0)
    arm64_steps.trace_and_predict(side)
    assert [(c["check"], c["passed"]) for c in checks] == [("trace", False), ("predict m", False)]
    assert all("time budget is spent" in c["detail"] for c in checks)
    assert not list(tmp_path.iterdir())  # nothing ran
