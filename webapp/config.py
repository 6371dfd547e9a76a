"""``ServeConfig``: what the web app serves and how, checked once at the edge.

Values come from ``BRAINEDGE_*`` environment variables, optionally on top of a TOML or JSON
file named by ``BRAINEDGE_CONFIG`` (environment wins). Nothing else in ``webapp/`` reads the
environment, so every setting has one place where it is parsed and refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainedge.errors import ConfigError

MB = 1024 * 1024
DEFAULT_MAX_UPLOAD_MB = 20
# A secret shorter than this is guessable; the message says how to make a good one.
MIN_SECRET_CHARS = 16
MAKE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# How an environment variable or a file spells on and off (case-insensitive).
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

# environment variable -> ServeConfig field (BRAINEDGE_CONFIG names the file, not a field)
ENV_FIELDS = {
    "BRAINEDGE_ARTIFACTS": "artifacts",
    "BRAINEDGE_DEFAULT_ARTIFACT": "default_artifact",
    "BRAINEDGE_MAX_UPLOAD_MB": "max_upload_mb",
    "BRAINEDGE_THREADS": "threads",
    "BRAINEDGE_CONCURRENCY": "concurrency",
    "BRAINEDGE_API_TOKEN": "api_token",
    "BRAINEDGE_SECRET_KEY": "secret_key",
    "BRAINEDGE_GRADCAM": "gradcam",
    "BRAINEDGE_ALLOW_FAILED_GATE": "allow_failed_gate",
}
FILE_KEYS = frozenset(ENV_FIELDS.values())


@dataclass(frozen=True)
class ServeConfig:
    """``artifacts``: artifact folders to load at start-up (``brainedge optimize`` variants or
    a training run). ``default_artifact``: the one answering when a request names none, by name
    (``densenet121-tflite-int8``) or path [default: the first]. ``threads``: inference threads
    of each model [default: the runtime's choice]. ``concurrency``: requests one worker process
    serves at once, which is also the number of LiteRT interpreters per model. ``api_token``:
    when set, the JSON API wants ``Authorization: Bearer TOKEN``. ``secret_key``: signs the
    session cookie that carries the form's CSRF token [default: random per start].
    ``gradcam``: add a Grad-CAM heat map computed by the float32 Keras model of each artifact's
    parent training run, where that run is on the server; needs TensorFlow (brainedge[train])
    [default: off]. ``allow_failed_gate``: serve an artifact whose manifest records that it
    failed its parity gate (brainedge optimize), with a warning beside every answer; without
    it such an artifact stops the server from starting [default: off]."""

    artifacts: tuple[Path, ...]
    default_artifact: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * MB
    threads: int | None = None
    concurrency: int = 2
    api_token: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    gradcam: bool = False
    allow_failed_gate: bool = False

    def __post_init__(self) -> None:
        artifacts = tuple(Path(p) for p in self.artifacts)
        if not artifacts and self.default_artifact:
            artifacts = (Path(self.default_artifact),)
        if not artifacts:
            artifacts = (_shipped_default(),)
        if len(set(artifacts)) != len(artifacts):
            raise ConfigError(f"an artifact is listed twice in {[str(p) for p in artifacts]}")
        object.__setattr__(self, "artifacts", artifacts)
        _check_int("max_upload_bytes", self.max_upload_bytes, 1024, 1024 * MB)
        if self.threads is not None:
            _check_int("threads", self.threads, 1, 256)
        _check_int("concurrency", self.concurrency, 1, 256)
        for name in ("api_token", "secret_key"):
            _check_secret(name, getattr(self, name))
        for name in ("gradcam", "allow_failed_gate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def max_upload_mb(self) -> float:
        return self.max_upload_bytes / MB

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], origin: str = "configuration") -> ServeConfig:
        """Build from plain values as a file or the environment give them (strings allowed)."""
        unknown = set(values) - FILE_KEYS
        if unknown:
            raise ConfigError(f"{origin}: unknown setting(s) {sorted(unknown)}; "
                              f"expected some of {sorted(FILE_KEYS)}")
        kwargs: dict[str, Any] = {"artifacts": _paths(values.get("artifacts", ()), origin)}
        for key in ("default_artifact", "api_token", "secret_key"):
            value = values.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{origin}: {key} must be a string, got {value!r}")
            kwargs[key] = value or None
        if values.get("max_upload_mb") is not None:
            mb = _number(values["max_upload_mb"], "max_upload_mb", origin)
            kwargs["max_upload_bytes"] = round(mb * MB)
        for key in ("threads", "concurrency"):
            if values.get(key) is not None:
                kwargs[key] = _integer(values[key], key, origin)
        for key in ("gradcam", "allow_failed_gate"):
            if values.get(key) is not None:
                kwargs[key] = _boolean(values[key], key, origin)
        return cls(**kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> ServeConfig:
        """The file named by ``BRAINEDGE_CONFIG`` (if any), overridden by ``BRAINEDGE_*``,
        overridden by ``overrides`` (e.g. command-line options; ``None`` or empty: unset)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("BRAINEDGE_CONFIG"):
            values.update(read_config_file(Path(env["BRAINEDGE_CONFIG"])))
        for var, key in ENV_FIELDS.items():
            if env.get(var, "").strip():
                values[key] = env[var].strip()
        values.update({k: v for k, v in (overrides or {}).items() if v not in (None, (), [])})
        return cls.from_mapping(values, "configuration (BRAINEDGE_* and options)")


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML (``.toml``) or JSON file of ServeConfig settings, e.g. ``artifacts = [...]``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"BRAINEDGE_CONFIG={path}: cannot read it ({exc.strerror})") from exc
    if path.suffix.lower() == ".toml":
        data = _parse_toml(text, path)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}: not valid JSON ({exc}); use a .toml suffix for TOML"
            ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings, got {type(data).__name__}")
    unknown = set(data) - FILE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {sorted(unknown)}; "
                          f"expected some of {sorted(FILE_KEYS)}")
    return data


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # Python 3.10: tomli is the same parser, if someone installed it
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise ConfigError(f"{path}: reading TOML needs Python 3.11+ (or pip install tomli) "
                              "here; write the same settings as JSON instead") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def _paths(value: Any, origin: str) -> tuple[Path, ...]:
    if isinstance(value, str):
        # os.pathsep like PATH, or commas, which read the same on every OS.
        parts = re.split(f"[,{re.escape(os.pathsep)}]", value)
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ConfigError(f"{origin}: artifacts must be a list of folders, got {value!r}")
    if not all(isinstance(p, (str, Path)) for p in parts):
        raise ConfigError(f"{origin}: artifacts must be folder paths, got {value!r}")
    return tuple(Path(str(p).strip()) for p in parts if str(p).strip())


def _number(value: Any, key: str, origin: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {key} must be a number, got {value!r}") from None
    if not number > 0:
        raise ConfigError(f"{origin}: {key} must be positive, got {value!r}")
    return number


def _integer(value: Any, key: str, origin: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{origin}: {key} must be a whole number, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{origin}: {key} must be a whole number, got {value!r}") from None


def parse_flag(value: Any) -> bool | None:
    """``True``/``False`` for a boolean or a word of ``TRUE_WORDS``/``FALSE_WORDS``, else
    ``None``; shared with the API's ``?gradcam=`` so both accept the same spellings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


def _boolean(value: Any, key: str, origin: str) -> bool:
    flag = parse_flag(value)
    if flag is None:
        raise ConfigError(f"{origin}: {key} must be one of {sorted(TRUE_WORDS)} or "
                          f"{sorted(FALSE_WORDS)}, got {value!r}")
    return flag


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def _check_secret(name: str, value: str | None) -> None:
    if value is None:
        return
    # Never quote the value: it is a secret, and this message may be logged.
    if len(value) < MIN_SECRET_CHARS or any(c.isspace() for c in value):
        raise ConfigError(f"{name} must be at least {MIN_SECRET_CHARS} characters without "
                          f"spaces; generate one with: {MAKE_SECRET}")


def _shipped_default() -> Path:
    """With nothing configured, the shipped DenseNet121 answers (never a phantom-trained run)."""
    from brainedge.errors import ModelLoadError
    from runtime.shipped import default_artifact

    try:
        return default_artifact()
    except ModelLoadError as exc:
        raise ConfigError(f"no artifact to serve: set BRAINEDGE_ARTIFACTS (or pass --artifact) "
                          f"to a folder made by brainedge optimize ({exc})") from exc
