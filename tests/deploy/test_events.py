"""events/*.json (for `sam local invoke`) run through the real handlers, so they never go stale."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest

from dashgate.mail import MailRequest
from tests.support import ROOT, LambdaContext

#: In order: registering Jane first lets her JSON login succeed.
EXPECTED = {
    "register-get": 200, "register-post-form": 403, "register-post-json": 201,
    "login-get": 200, "login-post-form": 403, "login-post-json": 200,
    "logout-get": 303, "logout-get-cross-site": 200, "logout-post-json": 204,
    "health-get": 200, "health-get-json": 200,
    "forgot-get": 200, "forgot-post-form": 403, "forgot-post-json": 202,
    "reset-get": 303,  # the token goes into a short-lived cookie, never into the page's URL
    "change-get": 303,  # signed out: to the login page
    "confirm-get": 400,  # a token nobody issued
}
#: The events of functions that are not behind the HTTP API: name → function.
OTHER_EVENTS = {"mailer-sqs": "mailer"}


def test_every_event_file_is_listed() -> None:
    assert {p.stem for p in (ROOT / "events").glob("*.json")} == {*EXPECTED, *OTHER_EVENTS}


def test_each_event_gets_its_documented_answer(handlers: dict, load, db) -> None:
    answers = {}
    for name in EXPECTED:
        event = json.loads((ROOT / "events" / f"{name}.json").read_text())
        assert event["version"] == "2.0" and event["requestContext"]["http"]["method"] in ("GET", "POST")
        function = name.split("-")[0]
        handler = handlers[function] if function in handlers else handlers.setdefault(function, load(function))
        answers[name] = handler.lambda_handler(event, LambdaContext())["statusCode"]

    assert answers == EXPECTED
    assert db.execute("SELECT email, login_count FROM public.users").fetchall() == [("jane@example.com", 1)]


@pytest.mark.parametrize("name", ["register-post-form", "login-post-form"])
def test_form_events_are_base64_encoded_as_api_gateway_sends_them(name: str) -> None:
    event = json.loads((ROOT / "events" / f"{name}.json").read_text())

    assert event["isBase64Encoded"] is True
    assert event["headers"]["content-type"] == "application/x-www-form-urlencoded"


def test_the_mailer_event_sends_jane_her_reset_link(handlers: dict, load, env: dict, db) -> None:
    # GIVEN Jane, registered by the register event
    register = json.loads((ROOT / "events" / "register-post-json.json").read_text())
    assert handlers["register"].lambda_handler(register, LambdaContext())["statusCode"] == 201
    event = json.loads((ROOT / "events" / "mailer-sqs.json").read_text())
    [record] = event["Records"]

    # WHEN the mailer gets the SQS event (locally its mail goes to the outbox)
    result = load("mailer").lambda_handler(event, LambdaContext())

    # THEN the record succeeded and the outbox has her reset mail
    assert record["eventSource"] == "aws:sqs" and MailRequest.from_json(record["body"]).email == "jane@example.com"
    assert result == {"batchItemFailures": []}
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in Path(env["MAIL_OUTBOX_DIR"]).glob("*.eml")]
    assert [(m["To"], m["Subject"]) for m in mails if m["Subject"] == "Reset your password"] == [
        ("jane@example.com", "Reset your password")]
