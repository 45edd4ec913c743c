"""dashgate.mailer without a network: the words of each mail, text and HTML, escaping, the outbox files."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dashgate.errors import ConfigurationError
from dashgate.mail import KINDS, MailRequest
from dashgate.mailer import Mailer, MailNotSent, OutboxTransport, SesTransport, duration, render, transport_for
from dashgate.recovery import Issued
from dashgate.settings import Settings

NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)
BASE = "https://dash.example.test"
SETTINGS = Settings(database_url="postgresql://unused", public_base_url=BASE,
                    mail_from="Dashboard <no-reply@example.test>")
TOKEN = "tok_" + "A" * 40
LINKS = {"password_reset": f"{BASE}/password/reset/?token={TOKEN}",
         "email_confirm": f"{BASE}/email/confirm/?token={TOKEN}"}
SUBJECTS = {"password_reset": "Reset your password", "email_confirm": "Confirm your email address",
            "password_reset_notice": "Your password has been reset",
            "password_changed_notice": "Your password has been changed"}


def issued(kind: str, first_name: str | None = "Alice") -> Issued:
    link = LINKS.get(kind)
    return Issued(MailRequest(kind, "alice@example.com"), 7, "alice@example.com", first_name, link,
                  NOW + timedelta(hours=1) if link else None, b"h" * 32 if link else None)


def parts(message: email.message.EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_has_its_subject_text_and_html(kind: str) -> None:
    message = render(issued(kind), SETTINGS, now=NOW)
    text, html = parts(message)

    assert message["Subject"] == SUBJECTS[kind]
    assert message["From"] == "Dashboard <no-reply@example.test>" and message["To"] == "alice@example.com"
    assert message.get_content_type() == "multipart/alternative"
    assert text.startswith("Hi Alice,") and "Hi Alice," in html
    assert message["Message-ID"].endswith("@example.test>") and message["Auto-Submitted"] == "auto-generated"


@pytest.mark.parametrize("kind", ["password_reset", "email_confirm"])
def test_a_token_mail_carries_its_link_in_both_parts(kind: str) -> None:
    text, html = parts(render(issued(kind), SETTINGS, now=NOW))

    assert LINKS[kind] in text
    assert f'href="{LINKS[kind]}"' in html
    assert "1 hour" in text if kind == "password_reset" else "2 days" in text


@pytest.mark.parametrize("kind", ["password_reset_notice", "password_changed_notice"])
def test_a_notice_carries_no_secret(kind: str) -> None:
    text, html = parts(render(issued(kind), SETTINGS, now=NOW))

    assert "token" not in text + html and TOKEN not in text + html
    assert "href" not in html  # no button: the only URL is the page that asks for a new link
    assert f"{BASE}/password/forgot/" in text


def test_names_are_escaped_in_html_and_link_like_names_are_left_out() -> None:
    _, html = parts(render(issued("password_reset", first_name='<b>Al</b> & "Co"'), SETTINGS, now=NOW))
    link_like = [parts(render(issued("email_confirm", first_name=name), SETTINGS, now=NOW))[0]
                 for name in ("Visit evil.example", "http://evil", "me@evil.example", "x" * 41)]

    assert "&lt;b&gt;Al&lt;/b&gt; &amp; &quot;Co&quot;" in html and "<b>Al</b>" not in html
    assert all(text.startswith("Hi,\n") for text in link_like)
    assert parts(render(issued("email_confirm", first_name="Dr. J.R. Smith"), SETTINGS, now=NOW))[0].startswith(
        "Hi Dr. J.R. Smith,")


def test_durations_read_as_words() -> None:
    assert [duration(s) for s in (3600, 7200, 172800, 86400, 300, 5400, 61)] == [
        "1 hour", "2 hours", "2 days", "1 day", "5 minutes", "90 minutes", "2 minutes"]


def test_the_outbox_writes_one_rfc5322_file_per_mail(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")

    name = outbox.send(render(issued("password_reset"), SETTINGS, now=NOW))

    files = list((tmp_path / "outbox").iterdir())
    assert [f.name for f in files] == [name] and name.endswith(".eml")
    raw = files[0].read_bytes()
    assert b"\r\n" in raw  # CRLF, as on the wire
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "Reset your password" and LINKS["password_reset"] in parts(parsed)[0]


def test_an_outbox_that_cannot_be_written_is_mail_not_sent(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")

    with pytest.raises(MailNotSent):
        OutboxTransport(blocked / "outbox").send(render(issued("password_reset"), SETTINGS, now=NOW))


def test_the_transport_is_ses_in_aws_and_the_outbox_locally(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    aws = Settings(database_url="x", public_base_url=BASE, mail_from="no-reply@example.test",
                   mail_queue_url="https://sqs.eu-west-1.amazonaws.com/1/mail")
    local = Settings(database_url="x", public_base_url=BASE, mail_outbox_dir=str(tmp_path))

    assert isinstance(transport_for(aws), SesTransport)
    assert transport_for(aws).endpoint.base_url == "https://email.eu-west-1.amazonaws.com"
    assert isinstance(transport_for(local), OutboxTransport)
    with pytest.raises(ConfigurationError, match="MAIL_FROM"):
        transport_for(Settings(database_url="x", mail_queue_url="https://sqs.eu-west-1.amazonaws.com/1/mail"))
    with pytest.raises(ConfigurationError, match="MAIL_OUTBOX_DIR"):
        transport_for(Settings(database_url="x"))


def test_the_mailer_refuses_to_start_without_public_base_url() -> None:
    with pytest.raises(ConfigurationError, match="PUBLIC_BASE_URL"):
        Mailer(Settings(database_url="x"), recovery=None, transport=None)  # type: ignore[arg-type]


class Recorded:
    """A stand-in Recovery that issues one fixed mail and records withdrawals."""

    def __init__(self, result: Issued | None) -> None:
        self.result, self.withdrawn = result, []

    def issue(self, request, *, now):
        return self.result

    def withdraw(self, issued, *, now):
        self.withdrawn.append(issued)


class Failing:
    def send(self, message):
        raise MailNotSent("down")


def test_a_mail_that_could_not_be_sent_is_withdrawn_and_the_error_raised() -> None:
    recovery = Recorded(issued("password_reset"))

    with pytest.raises(MailNotSent):
        Mailer(SETTINGS, recovery, Failing()).deliver(MailRequest("password_reset", "alice@example.com"), now=NOW)

    assert recovery.withdrawn == [recovery.result]


def test_a_mail_that_may_have_been_sent_keeps_its_token() -> None:
    # GIVEN a transport whose service took the mail and never answered
    class Unanswered:
        def send(self, message):
            raise MailNotSent("ses did not answer: TimeoutError", maybe_sent=True)

    recovery = Recorded(issued("password_reset"))

    # WHEN the mail is delivered THEN the caller learns it may have been sent, and the link it may
    # carry still works (withdrawing it would void a link already in the user's inbox)
    with pytest.raises(MailNotSent) as raised:
        Mailer(SETTINGS, recovery, Unanswered()).deliver(MailRequest("password_reset", "alice@example.com"), now=NOW)
    assert raised.value.maybe_sent and recovery.withdrawn == []


def test_a_withdrawal_that_fails_is_logged_and_the_send_error_still_raised(caplog) -> None:
    class Unwithdrawable(Recorded):
        def withdraw(self, issued, *, now):
            raise ConnectionError("database gone")

    with pytest.raises(MailNotSent):
        Mailer(SETTINGS, Unwithdrawable(issued("password_reset")), Failing()).deliver(
            MailRequest("password_reset", "alice@example.com"), now=NOW)

    assert "Could not withdraw an unsent mail" in caplog.text


def test_nothing_issued_means_nothing_sent() -> None:
    assert Mailer(SETTINGS, Recorded(None), Failing()).deliver(MailRequest("password_reset", "x@example.com"),
                                                               now=NOW) is None
