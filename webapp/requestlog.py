"""One log line per request with nothing a patient could be recognised by.

Logged: request id, method, the matched route pattern (never the raw path or query, which a
client may fill with anything), status, body sizes and duration. Never logged: file names,
DICOM tags, image content, form values. The request id is sent back in ``X-Request-ID`` and
in error bodies so a clinician's report can be matched to the line. It is always made here: an
id chosen by the caller could carry a patient number into the log.
"""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request

log = logging.getLogger(__name__)


def _start() -> None:
    g.request_id = uuid.uuid4().hex
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    elapsed_ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1e3
    route = request.url_rule.rule if request.url_rule is not None else "<no route>"
    log.info("request_id=%s method=%s route=%s status=%d in_bytes=%s out_bytes=%s ms=%.1f",
             g.get("request_id"), request.method, route, response.status_code,
             request.content_length, response.content_length, elapsed_ms)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
