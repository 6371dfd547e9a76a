"""The page a clinician uses: upload a slice, see what the model saw and what it answered.

It works without JavaScript (a plain multipart POST that re-renders the page); ``app.js`` only
adds a drop zone. Every refusal re-renders the same page with the message in ``#error``. With
Grad-CAM on, every answer of an artifact whose parent run is on the server carries its heat map
(a page shows one image, unlike the API, where it would bloat every answer).
"""

from __future__ import annotations

from flask import Blueprint, Response, make_response, render_template, request

from brainedge import MEDICAL_NOTICE
from webapp.errors import Refusal
from webapp.inference import Outcome, classify_upload, gate_warning
from webapp.registry import current_state
from webapp.security import check_csrf
from webapp.uploads import read_upload

bp = Blueprint("pages", __name__)


def render_page(outcome: Outcome | None = None, error: str | None = None, status: int = 200,
                selected: str | None = None) -> Response:
    state = current_state()
    registry = state.registry
    html = render_template(
        "index.html", outcome=outcome, error=error, notice=MEDICAL_NOTICE,
        models=[{**m.describe(), **m.gradcam_status()} for m in registry.models.values()],
        selected=selected or (outcome.model.name if outcome else registry.default),
        max_upload_mb=f"{state.config.max_upload_mb:g}", gradcam_on=state.config.gradcam,
        gate_warning=gate_warning)
    return make_response(html, status)


def render_error(message: str, status: int) -> Response:
    # The form is not read again here: after a 413 it must not be parsed a second time.
    return render_page(error=message, status=status)


@bp.get("/")
def index() -> Response:
    return render_page()


@bp.post("/")
def classify() -> Response:
    check_csrf()
    registry = current_state().registry
    name = request.form.get("model")
    model = registry.find(name)
    if model is None:
        raise Refusal(400, "unknown_model",
                      f"Unknown model {name!r}; choose one of {', '.join(registry.names)}.")
    outcome = classify_upload(model, read_upload(request, allow_raw_body=False),
                              gradcam=current_state().config.gradcam)
    return render_page(outcome)
