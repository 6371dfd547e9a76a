"""Every refusal is a 4xx with a message that says what was wrong; a 500 is a bug.

The API answers errors as JSON, the page re-renders itself with the message. The 500 handler
logs the exception type and traceback lines only: an exception's message may quote what it
was given (DICOM header values, file names), so it is neither logged nor shown.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

HtmlRenderer = Callable[[str, int], Response]


class Refusal(Exception):
    """A request the app refuses, with the status, a stable code for integrators and a
    message for the person who sent it."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class BrainEdgeFlask(Flask):
    def log_exception(self, exc_info: Any) -> None:
        """Flask's version logs the exception's message, which may quote patient data; the
        500 handler below logs its type and traceback instead."""


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.blueprint == "health"


def _http_message(exc: HTTPException) -> tuple[str, str]:
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
        return "too_large", (f"The upload is larger than the limit of {limit:g} MB. Send one "
                             f"slice (PNG, JPEG or DICOM) of at most {limit:g} MB.")
    if exc.code == 404:
        # The path is not echoed: whatever a client typed into it is not ours to repeat.
        return "not_found", ("No such page or endpoint. The API is described at "
                             "/api/v1/openapi.json.")
    if exc.code == 405:
        return "method_not_allowed", f"{request.method} is not allowed here."
    return (exc.name or "error").lower().replace(" ", "_"), exc.description or str(exc.name)


def init_app(app: Flask, render_html: HtmlRenderer) -> None:
    """Register the handlers; ``render_html(message, status)`` draws the page with an error."""

    def respond(status: int, code: str, message: str,
                headers: Mapping[str, str] | None = None) -> Response:
        if wants_json():
            response = jsonify({"error": message, "code": code, "status": status,
                                "request_id": g.get("request_id")})
            response.status_code = status
        else:
            response = render_html(message, status)
        response.headers.update(headers or {})
        return response

    @app.errorhandler(Refusal)
    def refused(exc: Refusal) -> Response:
        return respond(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if exc.code is None or exc.code >= 500:
            return internal_error(InternalServerError(original_exception=exc))
        code, message = _http_message(exc)
        return respond(exc.code, code, message)

    @app.errorhandler(InternalServerError)
    def internal_error(exc: InternalServerError) -> Response:
        original = exc.original_exception or exc
        request_id = g.get("request_id")
        log.error("request_id=%s unhandled %s\n%s", request_id, type(original).__name__,
                  "".join(traceback.format_tb(original.__traceback__)).rstrip())
        return respond(500, "internal_error",
                       f"Internal error (request {request_id}); it has been logged. This is a "
                       "bug, not a problem with your image: please report the request id.")
