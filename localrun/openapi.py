"""The published OpenAPI document, generated from the functions' own resolvers (Powertools' OpenAPIMerge
over each routed function's `app`). `python -m localrun.openapi` writes openapi.json; a test fails when
the committed file differs from what the code generates; `make run` serves it, with Swagger UI at /docs/."""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from enum import Enum
from typing import Any

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge

from localrun.gateway import ROOT, read_routes

OPENAPI = ROOT / "openapi.json"
DESCRIPTION = (
    "Sign-up, sign-in and sign-out in front of a data dashboard. Every path also answers without its trailing "
    "slash, HEAD wherever GET is served, and 405 with Allow for any other method. A request is a JSON request "
    "when it POSTs application/json or its Accept prefers application/json; otherwise HTML pages and 303 "
    "redirects. POST bodies are the same model as JSON or as a form (application/x-www-form-urlencoded, where "
    "a checkbox reads as a boolean and browsers add csrf_token). JSON is strict: a wrong type, a duplicate key "
    "or a repeated form field is a 422. Every other path is proxied to the dashboard host."
)
FORM = "application/x-www-form-urlencoded"
POWERTOOLS_422 = "#/components/schemas/HTTPValidationError"
#: What a function needs to import without a database or AWS: nothing is connected or read at import.
IMPORT_ENV = {"DATABASE_URL": "postgresql://openapi@127.0.0.1:1/openapi", "SESSION_SECRETS": "openapi" * 5,
              "IDENTITY_SECRETS": "identity" * 5, "POWERTOOLS_METRICS_DISABLED": "true",
              "POWERTOOLS_LOG_LEVEL": "ERROR", "MAIL_OUTBOX_DIR": "/nonexistent/openapi-outbox"}


@contextmanager
def import_environment():
    """Settings for importing the functions, then the environment as it was."""
    saved = dict(os.environ)
    os.environ.update(IMPORT_ENV)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def generate() -> dict[str, Any]:
    """The document: every routed function's resolver, merged; POST bodies also documented as forms."""
    merge = OpenAPIMerge(title="dashgate", version="0.2.0", openapi_version="3.1.0", description=DESCRIPTION,
                         on_conflict="error")
    for code_dir in sorted({route.code_dir for route in read_routes()}):
        merge.add_file(code_dir / "app.py", resolver_name="app")
    with import_environment(), warnings.catch_warnings():
        warnings.simplefilter("error")  # a function that fails to import must fail the generation
        document = merge.get_openapi_schema()
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {})
            if "application/json" in body:
                body[FORM] = body["application/json"]
            # Powertools documents its own 422 shape on every route; ours (ValidationErrorOut) is
            # documented where a 422 can happen, and a route without a body or query to check has none.
            responses = operation.get("responses", {})
            for status, response in list(responses.items()):
                if POWERTOOLS_422 in json.dumps(response):
                    del responses[status]
                    continue
                # Powertools gives a response without a body (204, 303) an empty JSON one.
                content = {media: body for media, body in response.get("content", {}).items() if body}
                if content:
                    response["content"] = content
                else:
                    response.pop("content", None)
    document = json.loads(json.dumps(document, default=plain))
    schemas = document.get("components", {}).get("schemas", {})
    while unused := [n for n in schemas if f"#/components/schemas/{n}\"" not in json.dumps(document)]:
        for name in unused:
            del schemas[name]
    return document


def plain(value: Any) -> Any:
    """What JSON cannot hold as it is: an enum as its value (`"in": "query"`), anything else as text."""
    return value.value if isinstance(value, Enum) else str(value)


def render(document: dict[str, Any]) -> str:
    """The file's text: stable key order as generated, two-space indents, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    """Write openapi.json."""
    OPENAPI.write_text(render(generate()))
    print(f"wrote {OPENAPI.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
