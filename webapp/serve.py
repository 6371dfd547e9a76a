"""Run the app: Flask's development server, or gunicorn for production.

Artifacts are loaded in each gunicorn worker after the fork, not preloaded in the master:
LiteRT interpreters and ONNX Runtime sessions own native thread pools, and threads do not
survive ``fork()`` (a child inherits locks that may be held by threads that no longer exist),
so a runtime created before the fork can deadlock or crash in a worker. The price is one copy
of each model per worker, which is why the default is at most two workers. To still refuse to
start before anything forks, the master verifies every artifact's manifest and sha256 first;
a worker that then cannot load its models stops gunicorn (it exits "Worker failed to boot").
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
from typing import Any

from flask import Flask
from werkzeug.serving import WSGIRequestHandler

from brainedge.errors import ConfigError
from webapp import create_app
from webapp.config import ServeConfig
from webapp.registry import verify_artifacts

log = logging.getLogger(__name__)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


class _QuietRequestHandler(WSGIRequestHandler):
    """The development server logs each raw request line; ``webapp.requestlog`` logs a
    version without paths or query strings instead."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def gunicorn_options(config: ServeConfig, host: str, port: int, workers: int) -> dict[str, Any]:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "bind": [bind],
        "workers": workers,
        # Threads per worker share its models: concurrency = LiteRT interpreters per model.
        "worker_class": "gthread",
        "threads": config.concurrency,
        "preload_app": False,  # see the module docstring
        "timeout": 120,  # a DenseNet121 inference on a Raspberry Pi takes about a second
        "graceful_timeout": 30,
        "accesslog": None,  # request lines carry raw paths; webapp.requestlog logs instead
        "errorlog": "-",
        "loglevel": "info",
    }


# Settings of newer gunicorn versions only (pyproject allows gunicorn>=23). Gunicorn 27 opens
# a control socket under ~/.gunicorn by default; nothing here uses it, so it stays closed.
_IF_SUPPORTED: dict[str, Any] = {"control_socket_disable": True}


def _gunicorn_application(config: ServeConfig, options: dict[str, Any]) -> Any:
    from gunicorn.app.base import BaseApplication

    class BrainEdgeGunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            for key, value in _IF_SUPPORTED.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Flask:
            return create_app(config=config)  # in the worker, after the fork

    return BrainEdgeGunicorn()


def run_server(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
               workers: int | None = None, dev: bool = False) -> None:
    """Serve ``config`` on ``host:port``; blocks until the server stops."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    count = default_workers() if workers is None else workers
    if count < 1:
        raise ConfigError(f"workers must be >= 1, got {count}")
    if config.secret_key is None:
        # One key for every worker, or a form served by one would be refused by another.
        config = dataclasses.replace(config, secret_key=secrets.token_urlsafe(32))
    verify_artifacts(config)
    if dev:
        app = create_app(config=config)
        app.run(host=host, port=port, threaded=True, use_reloader=False,
                request_handler=_QuietRequestHandler)
        return
    log.info("gunicorn on %s:%d with %d worker(s) x %d thread(s)", host, port, count,
             config.concurrency)
    _gunicorn_application(config, gunicorn_options(config, host, port, count)).run()
