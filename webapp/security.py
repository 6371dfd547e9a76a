"""Bearer-token auth for the JSON API, CSRF protection for the HTML form, response headers.

The form is protected by a random token kept in Flask's signed session cookie and repeated in
a hidden field; a cross-site page can make a browser send the cookie but cannot read the
token. The JSON API never looks at cookies (it is open, or wants a bearer token that a browser
does not send by itself), so it has nothing for a cross-site request to ride on and is exempt.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, Response, request, session

from webapp.errors import Refusal

CSRF_FIELD = "csrf_token"
_SESSION_KEY = "csrf"

# No CDN, no inline script or style: the page works offline and injected markup cannot run.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def csrf_token() -> str:
    """This session's form token, created on first use."""
    if _SESSION_KEY not in session:
        session[_SESSION_KEY] = secrets.token_urlsafe(32)
    return session[_SESSION_KEY]


def check_csrf() -> None:
    expected = session.get(_SESSION_KEY)
    given = request.form.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Refusal(400, "csrf_failed",
                      "The form was not sent from this page or has expired (missing or wrong "
                      "security token). Reload the page and upload the image again.")


def check_bearer(expected: str | None) -> None:
    """Refuse with 401 unless ``Authorization: Bearer <expected>``; no-op when no token is set."""
    if expected is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Refusal(401, "unauthorized",
                      "This API needs a token: send 'Authorization: Bearer <token>'.",
                      {"WWW-Authenticate": 'Bearer realm="brainedge"'})
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Refusal(401, "unauthorized", "The bearer token is not valid.",
                      {"WWW-Authenticate": 'Bearer realm="brainedge", error="invalid_token"'})


def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    # Results show a patient's slice: no browser or proxy should keep a copy.
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.after_request(_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
