"""dashgate.aws: the standard-library Signature V4 equals botocore's for the same request; credentials."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from dashgate import aws
from dashgate.aws import AwsError, Credentials, sign
from tests.support import json_endpoint

NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)
SQS_HEADERS = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.SendMessage"}
SES_HEADERS = {"Content-Type": "application/json"}
CASES = [
    # (url, headers, body, service, region, session token)
    ("https://sqs.eu-west-1.amazonaws.com/", SQS_HEADERS,
     b'{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/mail","MessageBody":"{}"}',
     "sqs", "eu-west-1", "FwoGZXIvYXdzEJr//////////token"),
    ("https://email.us-east-1.amazonaws.com/v2/email/outbound-emails", SES_HEADERS,
     json.dumps({"Content": {"Simple": {"Subject": {"Data": "Réinitialiser ✓"}}}}, ensure_ascii=False).encode(),
     "ses", "us-east-1", None),
    ("http://127.0.0.1:5123/v2/email/outbound-emails", {**SES_HEADERS, "X-Extra": "  two   spaces  "}, b"",
     "ses", "eu-central-1", "token"),
    ("https://sqs.eu-west-1.amazonaws.com:443/", SQS_HEADERS, b"{}", "sqs", "eu-west-1", None),
]


def botocore_signed(url: str, headers: dict[str, str], body: bytes, service: str, region: str,
                    token: str | None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The headers botocore's SigV4Auth adds to the same request at the same time."""
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: NOW)
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    botocore_auth.SigV4Auth(BotoCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
                            service, region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(("url", "headers", "body", "service", "region", "token"), CASES)
def test_the_signature_equals_botocores(url, headers, body, service, region, token, monkeypatch) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)

    ours = sign("POST", url, headers, body, credentials=credentials, region=region, service=service, now=NOW)
    theirs = botocore_signed(url, headers, body, service, region, token, monkeypatch)

    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"] == "20250314T150926Z"
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token") == token
    assert ours["Host"] == aws.host_of(url) and ":443" not in ours["Host"]


def test_a_changed_body_or_key_changes_the_signature() -> None:
    credentials = Credentials("AKIDEXAMPLE", "secret")
    url, headers = "https://sqs.eu-west-1.amazonaws.com/", SQS_HEADERS

    first = sign("POST", url, headers, b"{}", credentials=credentials, region="eu-west-1", service="sqs", now=NOW)
    body = sign("POST", url, headers, b"{ }", credentials=credentials, region="eu-west-1", service="sqs", now=NOW)
    key = sign("POST", url, headers, b"{}", credentials=Credentials("AKIDEXAMPLE", "other"), region="eu-west-1",
               service="sqs", now=NOW)

    assert len({first["Authorization"], body["Authorization"], key["Authorization"]}) == 3


def test_credentials_come_from_the_lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")

    assert aws.current_credentials() == Credentials("AKID", "secret", "token")


def use_container_endpoint(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """What Lambda SnapStart gives a function: no keys, a container credentials endpoint (on `port`)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/creds")
    monkeypatch.setattr(aws, "_container_cache", {})


def test_without_keys_the_container_endpoint_is_asked_once_while_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN what Lambda SnapStart gives a function: no keys, a container credentials endpoint
    asked: list[str | None] = []

    def reply(request) -> tuple[int, dict]:
        asked.append(request.headers.get("Authorization"))
        return 200, {"AccessKeyId": "ASIA", "SecretAccessKey": "s", "Token": "t",
                     "Expiration": "2999-01-01T00:00:00Z"}

    with json_endpoint(reply) as port:
        use_container_endpoint(monkeypatch, port)
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "auth-token")
        # WHEN two calls need credentials
        first, second = aws.current_credentials(), aws.current_credentials()

    # THEN the endpoint was asked once, with its token
    assert first == second and first.access_key == "ASIA" and first.token == "t"
    assert asked == ["auth-token"]


def test_container_credentials_are_refreshed_before_they_expire_and_kept_while_the_endpoint_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an endpoint whose keys expire in 200 s (inside the five minutes before expiry when they are
    # refreshed), which answers the second time with new keys and then fails
    answers = [(200, "first"), (200, "second"), (500, "")]

    def reply(request) -> tuple[int, dict]:
        status, key = answers.pop(0)
        expires = datetime.fromtimestamp(time.time() + 200, UTC).isoformat()
        return status, ({"AccessKeyId": key, "SecretAccessKey": "s", "Token": "t", "Expiration": expires}
                        if status == 200 else {})

    with json_endpoint(reply) as port:
        use_container_endpoint(monkeypatch, port)
        # WHEN three calls need credentials
        keys = [aws.current_credentials().access_key for _ in range(3)]

    # THEN each asked again; the failed refresh kept the keys that still work instead of failing
    assert keys == ["first", "second", "second"] and answers == []


def test_no_credentials_at_all_is_an_aws_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(AwsError):
        aws.current_credentials()
