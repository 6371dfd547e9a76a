"""The Raspberry Pi kit (deploy/raspberry-pi/) says only what the code does: every setting in
the environment file is one webapp/config.py reads, the unit runs the real ``brainedge serve``
options as a non-root user, and the proxy's limits are the app's. Where ``systemd-analyze`` and
``nginx`` exist, they check the unit and the site file as systemd and nginx would."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import webapp.config
from webapp.config import ServeConfig
from webapp.serve import gunicorn_options

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "deploy" / "raspberry-pi"
UNIT = KIT / "brainedge.service"
ENV_EXAMPLE = KIT / "brainedge.env.example"
NGINX_SITE = KIT / "nginx-brainedge.conf"
VARIABLE = re.compile(r"\bBRAINEDGE_[A-Z0-9_]+\b")


def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd's unit syntax as far as this unit uses it: sections of key=value lines, where a
    key may repeat (so not configparser)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a key=value line in a section: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def service() -> dict[str, str]:
    """[Service] as a dict (the last value of a repeated key wins, as in systemd)."""
    return dict(unit_sections(UNIT.read_text())["Service"])


def env_values() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", line), (
            f"{line!r}: systemd's EnvironmentFile wants KEY=value, no spaces, no quotes needed")
        key, _, value = line.partition("=")
        values[key] = value
    return values


def variables_config_reads() -> set[str]:
    return set(re.findall(r'"(BRAINEDGE_[A-Z0-9_]+)"', Path(webapp.config.__file__).read_text()))


# --- the environment file ----------------------------------------------------------------------


def test_every_variable_in_the_env_file_is_one_the_server_reads_and_all_are_there() -> None:
    read = variables_config_reads()
    assert set(webapp.config.ENV_FIELDS) | {"BRAINEDGE_CONFIG"} <= read
    mentioned = set(VARIABLE.findall(ENV_EXAMPLE.read_text()))  # set or commented out
    assert mentioned - read == set(), "the kit documents settings the server never reads"
    assert read - mentioned == set(), "a setting of the server is missing from the kit"


def test_the_env_files_values_are_accepted_by_the_server() -> None:
    values = env_values()
    assert values, "no active setting at all"
    # Artifacts given explicitly: with none, the shipped model would be looked up.
    config = ServeConfig.from_env(environ=values, overrides={"artifacts": ["/opt/models/a"]})
    assert config.threads == int(values["BRAINEDGE_THREADS"])
    assert config.concurrency == int(values["BRAINEDGE_CONCURRENCY"])
    assert config.max_upload_mb == float(values["BRAINEDGE_MAX_UPLOAD_MB"])
    # Secrets ship empty, to be generated at install; never a shared default.
    assert values["BRAINEDGE_API_TOKEN"] == values["BRAINEDGE_SECRET_KEY"] == ""
    assert config.api_token is None and config.secret_key is None


# --- the unit ----------------------------------------------------------------------------------


def test_the_unit_runs_as_a_dedicated_user_restarts_on_failure_and_reads_the_env_file() -> None:
    unit = service()
    assert unit["User"] == "brainedge" and unit["Group"] == "brainedge"
    assert unit["Restart"] == "on-failure"
    assert unit["EnvironmentFile"] == "/etc/brainedge/brainedge.env"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes"}.items():
        assert unit.get(key) == value, key
    assert "/opt/brainedge" in unit["ReadOnlyPaths"].split()
    assert unit_sections(UNIT.read_text())["Install"] == [("WantedBy", "multi-user.target")]


def test_the_units_command_line_uses_only_real_serve_options_on_loopback() -> None:
    from cli.main import main

    serve = main.commands["serve"]
    known = {opt for param in serve.params for opt in (*param.opts, *param.secondary_opts)}
    program, command, *args = shlex.split(service()["ExecStart"])
    assert program.startswith("/") and Path(program).name == "brainedge"
    assert command == "serve"
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert set(options) <= known, f"not options of brainedge serve: {set(options) - known}"
    assert options["--host"] == "127.0.0.1", "the reverse proxy is what the network sees"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    true = shutil.which("true")
    assert true
    program = shlex.split(service()["ExecStart"])[0]

    def verify(text: str) -> tuple[int, str]:
        # verify wants ExecStart's program to exist: a stand-in for the venv's brainedge.
        path = tmp_path / "brainedge.service"
        path.write_text(text.replace(program, true))
        proc = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True,
                              text=True, timeout=120, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    code, output = verify(UNIT.read_text())
    assert code == 0, output
    assert "brainedge.service" not in output, output
    # The check can fail: a misspelt setting is reported.
    _, broken = verify(UNIT.read_text().replace("ProtectHome=", "ProtectHomes="))
    assert "Unknown key" in broken and "ProtectHomes" in broken, broken


# --- the reverse proxy -------------------------------------------------------------------------


def test_nginx_limits_match_the_apps_upload_limit_and_worker_timeout() -> None:
    site = NGINX_SITE.read_text()
    body = re.search(r"^\s*client_max_body_size\s+(\d+)m;", site, re.MULTILINE)
    assert body and int(body.group(1)) == float(env_values()["BRAINEDGE_MAX_UPLOAD_MB"])
    read = re.search(r"^\s*proxy_read_timeout\s+(\d+)s;", site, re.MULTILINE)
    options = gunicorn_options(ServeConfig(artifacts=(Path("a"),)), "127.0.0.1", 8000, 1)
    assert read and int(read.group(1)) == options["timeout"]
    port = shlex.split(service()["ExecStart"])
    assert f"server 127.0.0.1:{port[port.index('--port') + 1]};" in site


def test_nginx_accepts_the_site_file(tmp_path: Path) -> None:
    nginx, openssl = shutil.which("nginx"), shutil.which("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx or openssl is not installed (Debian packages nginx, openssl)")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=brainedge.radiology.example", "-keyout", tmp_path / "k.key",
                    "-out", tmp_path / "c.crt"], capture_output=True, check=True, timeout=60)
    # Every option enabled, certificates and temporary folders moved under tmp_path.
    site = NGINX_SITE.read_text()
    site = re.sub(r"^(\s*)#(ssl_client_certificate|ssl_verify|allow|deny)", r"\1\2", site,
                  flags=re.MULTILINE)
    site = re.sub(r"/etc/ssl/brainedge/\S+\.crt", str(tmp_path / "c.crt"), site)
    site = site.replace("/etc/ssl/brainedge/brainedge.key", str(tmp_path / "k.key"))
    (tmp_path / "site.conf").write_text(site)
    temp = " ".join(f"{kind}_temp_path {tmp_path / kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{ access_log off; {temp} include {tmp_path / 'site.conf'}; }}\n")
    proc = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
