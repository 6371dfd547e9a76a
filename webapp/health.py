"""Probes for a process supervisor or orchestrator; never behind the API token.

``/healthz``: the process answers. ``/readyz``: every artifact was loaded, verified against
its manifest and run once (``create_app`` refuses to build an app otherwise), and no model
file has changed on disk since.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from webapp.registry import current_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Any:
    registry = current_state().registry
    problems = registry.problems()
    body = {"status": "unavailable" if problems else "ready", "problems": problems,
            "models": list(registry.names), "default": registry.default}
    return jsonify(body), 503 if problems else 200
