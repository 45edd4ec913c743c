"""What the generated OpenAPI document says about answers that are not a route's own model: pages,
redirects and errors. Route decorators pass these as `responses`; `localrun.openapi` writes the file."""

from __future__ import annotations

from typing import Any

from dashgate.models import ErrorOut, Reply, ValidationErrorOut

#: An HTML page (browser requests).
HTML: dict[str, Any] = {"text/html": {"schema": {"type": "string"}}}
#: 303 See Other: the next page of a browser request.
SEE_OTHER: dict[str, Any] = {"description": "Browsers: on to the next page",
                             "headers": {"Location": {"description": "A local path", "schema": {"type": "string"}}}}
WHY = {
    400: "The body could not be read (JSON, base64, UTF-8)",
    401: "Invalid email or password",
    403: "CSRF: no valid token, or another site's Origin",
    409: "That email address is already registered",
    413: "The body is larger than 16 KiB",
    415: "Neither a form nor JSON",
    422: "A field is invalid, has the wrong type, or was sent twice",
    429: "Too many attempts: see Retry-After",
    503: "The database is unavailable",
}


def json_content(model: type[Reply]) -> dict[str, Any]:
    """A JSON body described by a response model."""
    return {"application/json": {"model": model}}


def errors(*statuses: int) -> dict[int, dict[str, Any]]:
    """The error answers of a route: the SPEC's JSON error (with `fields` for 422), or a page."""
    answers: dict[int, dict[str, Any]] = {}
    for status in statuses:
        content = json_content(ValidationErrorOut if status == 422 else ErrorOut)
        answers[status] = {"description": WHY[status], "content": {**content, **HTML}}
    return answers
