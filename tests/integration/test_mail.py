"""Mail delivery against moto's SQS and SES v2 over real HTTP (ThreadedMotoServer: dashgate's client is
plain HTTPS, not boto3, so it needs a server), with the real mailer function and PostgreSQL.

What SES received is read from moto itself: its backend (the server runs in this process) and each
SendEmail request as it arrived (recorded by wrapping moto's handler)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends
from moto.sesv2.responses import SESV2Response

from dashgate.aws import AwsError
from dashgate.errors import ServiceUnavailable
from dashgate.mail import MailRequest
from dashgate.sqs import SqsQueue
from tests.support import LambdaContext

REGION = "eu-west-1"
ACCOUNT = "123456789012"
BASE = "https://dash.example.test"  # the test environment's PUBLIC_BASE_URL
SENDER = "Dashboard <no-reply@example.test>"  # its MAIL_FROM


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """One moto server for the module, on a free port; every test resets its state."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto(moto_url: str, monkeypatch: pytest.MonkeyPatch, env: dict) -> dict[str, Any]:
    """AWS as the mailer sees it: credentials, a mail queue, a verified sending domain; and what SES received."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                        "AWS_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(name, value)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
    queue_url = sqs.create_queue(QueueName="mail")["QueueUrl"]
    boto3.client("sesv2", region_name=REGION, endpoint_url=moto_url).create_email_identity(EmailIdentity="example.test")
    received: list[dict[str, Any]] = []
    failing: set[str] = set()
    slow: set[str] = set()
    original = SESV2Response.send_email

    def recording_send_email(self: SESV2Response):
        request = json.loads(self.body)
        received.append(request)
        if set(request["Destination"]["ToAddresses"]) & failing:  # SES having a bad moment for this one
            return json.dumps({"message": "try again"}), {"status": 500, "x-amzn-ErrorType": "InternalFailure"}
        answer = original(self)
        if set(request["Destination"]["ToAddresses"]) & slow:  # sent, but the answer comes too late
            time.sleep(1.5)
        return answer

    monkeypatch.setattr(SESV2Response, "send_email", recording_send_email)
    monkeypatch.setenv("MAIL_QUEUE_URL", queue_url)
    return {"url": moto_url, "sqs": sqs, "queue_url": queue_url, "received": received, "failing": failing,
            "slow": slow, "sent": lambda: ses_backends[ACCOUNT][REGION].sent_messages}


def add_user(db, email: str, first_name: str = "Alice") -> int:
    """A registered user, straight into the table (the password is never used here)."""
    return db.execute("INSERT INTO public.users (email, password_hash, first_name, last_name, created_at, "
                      "login_count) VALUES (%s, 'x', %s, 'Liddell', now(), 0) RETURNING id",
                      (email, first_name)).fetchone()[0]


def queued_event(moto: dict[str, Any], *requests: MailRequest | str) -> dict[str, Any]:
    """Put each request on the queue (a string as a raw body) and receive them as Lambda's SQS event."""
    for request in requests:
        if isinstance(request, MailRequest):
            SqsQueue(moto["queue_url"]).send(request)
        else:
            moto["sqs"].send_message(QueueUrl=moto["queue_url"], MessageBody=request)
    messages = moto["sqs"].receive_message(QueueUrl=moto["queue_url"], MaxNumberOfMessages=10,
                                           AttributeNames=["All"])["Messages"]
    assert len(messages) == len(requests)
    return sqs_event(messages)


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping hands the function (AWS Lambda Developer Guide, "SQS")."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:mail", "awsRegion": REGION,
    } for m in messages]}


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the function logged: each record's message and extra fields. (Powertools binds its
    handler to the stdout of the first test that made the logger, so capsys may not see the lines.)"""
    return "\n".join(json.dumps(vars(record), default=str) for record in caplog.records
                     if record.name.startswith("dashgate"))


def test_the_queue_gets_exactly_one_message_whose_body_round_trips(moto: dict[str, Any]) -> None:
    request = MailRequest("password_reset", "alice@example.com")

    SqsQueue(moto["queue_url"]).send(request)

    messages = moto["sqs"].receive_message(QueueUrl=moto["queue_url"], MaxNumberOfMessages=10)["Messages"]
    assert [MailRequest.from_json(m["Body"]) for m in messages] == [request]


def test_an_unreachable_or_missing_queue_is_service_unavailable(moto: dict[str, Any]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/{ACCOUNT}/mail"
    missing = moto["queue_url"].replace("/mail", "/no-such-queue")

    for url in (closed, missing):
        with pytest.raises(ServiceUnavailable) as raised:
            SqsQueue(url).send(MailRequest("password_reset", "alice@example.com"))
        assert isinstance(raised.value.__cause__, AwsError)


def test_a_reset_mail_is_sent_with_ses_with_its_link_in_text_and_html(moto: dict[str, Any], load, db) -> None:
    add_user(db, "alice@example.com")
    mailer = load("mailer")
    event = queued_event(moto, MailRequest("password_reset", "alice@example.com"))

    result = mailer.lambda_handler(event, LambdaContext())

    assert result == {"batchItemFailures": []}
    [request] = moto["received"]
    simple = request["Content"]["Simple"]
    text, html = simple["Body"]["Text"]["Data"], simple["Body"]["Html"]["Data"]
    assert request["FromEmailAddress"] == SENDER
    assert request["Destination"] == {"ToAddresses": ["alice@example.com"]}
    assert simple["Subject"]["Data"] == "Reset your password"
    [link] = [word for word in text.split() if "token=" in word]
    assert link.startswith(f"{BASE}/password/reset/?token=")  # built from PUBLIC_BASE_URL alone
    assert f'href="{link}"' in html
    assert "ConfigurationSetName" not in request
    assert [(m.source, m.destinations) for m in moto["sent"]()] == [(SENDER, {"ToAddresses": ["alice@example.com"]})]


def test_the_configuration_set_is_named_when_set(moto: dict[str, Any], load, db) -> None:
    add_user(db, "alice@example.com")
    mailer = load("mailer", SES_CONFIGURATION_SET="dashgate-mail")

    mailer.lambda_handler(queued_event(moto, MailRequest("password_reset", "alice@example.com")), LambdaContext())

    assert [r["ConfigurationSetName"] for r in moto["received"]] == ["dashgate-mail"]


def test_a_notice_is_sent_to_the_user_without_a_link(moto: dict[str, Any], load, db) -> None:
    user_id = add_user(db, "alice@example.com")
    mailer = load("mailer")
    event = queued_event(moto, MailRequest("password_changed_notice", "alice@example.com", user_id))

    assert mailer.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}

    [request] = moto["received"]
    assert request["Content"]["Simple"]["Subject"]["Data"] == "Your password has been changed"
    assert "token" not in json.dumps(request)


def test_only_the_record_that_failed_to_send_is_reported_and_its_retry_sends(moto: dict[str, Any], load, db) -> None:
    # GIVEN three known addresses, and SES failing for bob's
    for name in ("alice", "bob", "carol"):
        add_user(db, f"{name}@example.com", name.title())
    moto["failing"].add("bob@example.com")
    mailer = load("mailer")
    event = queued_event(moto, *(MailRequest("password_reset", f"{n}@example.com") for n in ("alice", "bob", "carol")))
    bob = next(r["messageId"] for r in event["Records"] if "bob" in r["body"])

    # WHEN the batch is handled
    result = mailer.lambda_handler(event, LambdaContext())

    # THEN only bob's message is reported failed (SQS retries it alone), the others were sent
    assert result == {"batchItemFailures": [{"itemIdentifier": bob}]}
    assert sorted(d["ToAddresses"][0] for d in (m.destinations for m in moto["sent"]())) == [
        "alice@example.com", "carol@example.com"]
    # AND the retry sends it: the failed mail was withdrawn, so no per-address limit holds it back
    moto["failing"].clear()
    retry = {"Records": [r for r in event["Records"] if r["messageId"] == bob]}
    assert mailer.lambda_handler(retry, LambdaContext()) == {"batchItemFailures": []}
    assert moto["sent"]()[-1].destinations == {"ToAddresses": ["bob@example.com"]}


def test_a_mail_whose_answer_never_comes_is_not_sent_again_and_its_link_keeps_working(
        moto: dict[str, Any], load, db, caplog) -> None:
    # GIVEN SES that sends alice's mail but answers after the mailer stopped waiting
    add_user(db, "alice@example.com")
    moto["slow"].add("alice@example.com")
    mailer = load("mailer")
    mailer.mailer.transport.endpoint.timeout = 0.5
    event = queued_event(moto, MailRequest("password_reset", "alice@example.com"))

    # WHEN the batch is handled
    result = mailer.lambda_handler(event, LambdaContext())

    # THEN the message is not reported failed: its retry would send a second mail and void the first's link
    assert result == {"batchItemFailures": []}
    assert len(moto["sent"]()) == 1
    # AND the token of the mail that went out still works
    assert db.execute("SELECT count(*) FROM public.dashgate_tokens WHERE purpose = 'password_reset' "
                      "AND used_at IS NULL").fetchone()[0] == 1
    assert "Mail may have been sent; not retried" in logged(caplog) and '"MailsUncertain"' not in logged(caplog)


def test_a_malformed_body_is_dropped_not_retried(moto: dict[str, Any], load, db, caplog) -> None:
    add_user(db, "alice@example.com")
    mailer = load("mailer")
    event = queued_event(moto, "not a mail request", '{"kind": "password_reset"}',
                         MailRequest("password_reset", "alice@example.com"))

    result = mailer.lambda_handler(event, LambdaContext())

    assert result == {"batchItemFailures": []}
    assert [r["Destination"]["ToAddresses"] for r in moto["received"]] == [["alice@example.com"]]
    assert [r.getMessage() for r in caplog.records if r.name == "dashgate-mailer"] == [
        "Dropped a message that is not a mail request"] * 2 + ["Mail sent"]


def test_an_unknown_address_is_sent_nothing(moto: dict[str, Any], load, db) -> None:
    add_user(db, "alice@example.com")
    mailer = load("mailer")
    event = queued_event(moto, MailRequest("password_reset", "nobody@example.com"))

    assert mailer.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert moto["received"] == []


def test_a_full_mailer_run_logs_no_token_link_or_body(moto: dict[str, Any], load, db, caplog, capsys) -> None:
    add_user(db, "alice@example.com")
    add_user(db, "bob@example.com", "Bob")
    moto["failing"].add("bob@example.com")
    mailer = load("mailer", POWERTOOLS_LOG_LEVEL="DEBUG")
    caplog.set_level("DEBUG")
    event = queued_event(moto, MailRequest("password_reset", "alice@example.com"),
                         MailRequest("password_reset", "bob@example.com"),
                         MailRequest("email_confirm", "x@example.com"), "malformed")

    mailer.lambda_handler(event, LambdaContext())

    out = capsys.readouterr()
    logs = logged(caplog) + out.out + out.err
    links = [word for r in moto["received"] for word in r["Content"]["Simple"]["Body"]["Text"]["Data"].split()
             if "token=" in word]
    assert len(links) == 2 and "Mail sent" in logs and "Mail not sent" in logs
    for secret in [*links, *(link.split("token=")[1] for link in links), "token=", "Reset my password"]:
        assert secret not in logs
