"""The JSON API under ``/api/v1``: predict, list models, and its own OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from brainedge import MEDICAL_NOTICE
from webapp.config import parse_flag
from webapp.errors import Refusal
from webapp.inference import classify_upload
from webapp.openapi import openapi_document
from webapp.registry import LoadedModel, current_state
from webapp.security import check_bearer
from webapp.uploads import read_upload

bp = Blueprint("api", __name__, url_prefix="/api/v1")

# Open even with a token set: describing the API reveals nothing about patients or models.
PUBLIC_ENDPOINTS = frozenset({"api.openapi"})


@bp.before_request
def authenticate() -> None:
    if request.endpoint not in PUBLIC_ENDPOINTS:
        check_bearer(current_state().config.api_token)


def choose_model(name: str | None) -> LoadedModel:
    registry = current_state().registry
    model = registry.find(name)
    if model is None:
        raise Refusal(400, "unknown_model", f"Unknown model {name!r}; this server has: "
                      f"{', '.join(registry.names)}. See GET /api/v1/models.")
    return model


@bp.post("/predict")
def predict() -> Any:
    data = read_upload(request, allow_raw_body=True)
    # Query first: with a raw body there is no form to carry the choice.
    name = request.args.get("model") or (
        request.form.get("model") if request.mimetype == "multipart/form-data" else None)
    wants_gradcam = _gradcam_wanted()
    outcome = classify_upload(choose_model(name), data, gradcam=wants_gradcam)
    return jsonify({**outcome.to_json(gradcam=wants_gradcam), "request_id": g.request_id})


def _gradcam_wanted() -> bool:
    # Never by default: the heat map adds a base64 PNG to every answer and a backward pass
    # of the float32 parent to the request's time.
    value = request.args.get("gradcam")
    if value is None:
        return False
    flag = parse_flag(value)
    if flag is None:
        raise Refusal(400, "bad_parameter",
                      "The gradcam parameter must be 1 or 0 (or true/false, yes/no, on/off).")
    return flag


@bp.get("/models")
def models() -> Any:
    registry = current_state().registry
    return jsonify({"default": registry.default,
                    "models": [{**m.describe(), **m.gradcam_status()}
                               for m in registry.models.values()],
                    "notice": MEDICAL_NOTICE})


@bp.get("/openapi.json")
def openapi() -> Any:
    state = current_state()
    return jsonify(openapi_document(state.config.max_upload_bytes, state.registry.names,
                                    auth=state.config.api_token is not None))
