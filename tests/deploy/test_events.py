"""events/*.json (for `sam local invoke`) run through the real handlers, so they never go stale."""

from __future__ import annotations

import json

import pytest

from tests.support import ROOT, LambdaContext

#: In order: registering Jane first lets her JSON login succeed.
EXPECTED = {
    "register-get": 200, "register-post-form": 403, "register-post-json": 201,
    "login-get": 200, "login-post-form": 403, "login-post-json": 200,
    "logout-get": 303, "logout-get-cross-site": 200, "logout-post-json": 204,
    "health-get": 200, "health-get-json": 200,
}


def test_every_event_file_is_listed() -> None:
    assert {p.stem for p in (ROOT / "events").glob("*.json")} == set(EXPECTED)


def test_each_event_gets_its_documented_answer(handlers: dict, db) -> None:
    answers = {}
    for name in EXPECTED:
        event = json.loads((ROOT / "events" / f"{name}.json").read_text())
        assert event["version"] == "2.0" and event["requestContext"]["http"]["method"] in ("GET", "POST")
        answers[name] = handlers[name.split("-")[0]].lambda_handler(event, LambdaContext())["statusCode"]

    assert answers == EXPECTED
    assert db.execute("SELECT email, login_count FROM public.users").fetchall() == [("jane@example.com", 1)]


@pytest.mark.parametrize("name", ["register-post-form", "login-post-form"])
def test_form_events_are_base64_encoded_as_api_gateway_sends_them(name: str) -> None:
    event = json.loads((ROOT / "events" / f"{name}.json").read_text())

    assert event["isBase64Encoded"] is True
    assert event["headers"]["content-type"] == "application/x-www-form-urlencoded"
