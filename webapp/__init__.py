"""Stage 5: the Flask page and JSON API that serve the artifacts an operator chose.

Only the factory lives here. ``create_app`` loads and verifies every configured artifact
before it returns, and raises a ``BrainEdgeError`` naming the artifact when one cannot be
served: a server never starts half-configured. Run it with ``brainedge serve`` (see
``webapp.serve``) or any WSGI server: ``gunicorn 'webapp:create_app()'``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask

from webapp.config import ServeConfig
from webapp.errors import BrainEdgeFlask

log = logging.getLogger(__name__)


def create_app(test_config: Mapping[str, Any] | None = None, *,
               config: ServeConfig | None = None) -> Flask:
    """Build the app from ``config`` (default: ``ServeConfig.from_env()``); ``test_config``
    overrides Flask settings, as in the Flask tutorial."""
    # Imported here, not at the top: the blueprints import the runtime, and importing a
    # submodule such as webapp.config (which loads this package first) should not need it.
    from webapp import api, errors, health, pages, requestlog, security
    from webapp.registry import EXTENSION, ServeState, load_models
    from webapp.uploads import InMemoryRequest

    serve_config = config if config is not None else ServeConfig.from_env()
    app = BrainEdgeFlask(__name__)
    app.request_class = InMemoryRequest
    secret_key = serve_config.secret_key
    if secret_key is None:
        # Fine for one process; several workers need one shared key (webapp.serve sets one).
        log.warning("BRAINEDGE_SECRET_KEY is not set: using a random key for this process; "
                    "set it when several worker processes serve the page, or their forms fail")
        secret_key = secrets.token_urlsafe(32)
    app.config.from_mapping(
        SECRET_KEY=secret_key,
        MAX_CONTENT_LENGTH=serve_config.max_upload_bytes,
        # The form has three fields (token, model, file); nothing else is worth parsing.
        MAX_FORM_PARTS=16,
        SESSION_COOKIE_NAME="brainedge_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False  # keep the manifest's class order in probabilities

    state = ServeState(serve_config, load_models(serve_config))
    app.extensions[EXTENSION] = state
    requestlog.init_app(app)
    security.init_app(app)
    errors.init_app(app, pages.render_error)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    log.info("serving %s (default %s)", ", ".join(state.registry.names), state.registry.default)
    return app
