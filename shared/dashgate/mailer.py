"""The mailer: what the mail queue asks for, written (plain text and HTML) and sent (SPEC: Delivery).

For each queued MailRequest, `Recovery.issue` decides whether anything is sent (nothing for an unknown
address, a reached limit, an address already confirmed) and makes the one-time link; `render` writes
the mail; a transport sends it: Amazon SES v2 in AWS, `.eml` files in MAIL_OUTBOX_DIR locally.
The caller logs the kind, the user id and the message id, never a link or a body; only a mail that
could not be withdrawn is logged here (its kind and user id).
"""

from __future__ import annotations

import email.policy
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from dashgate.errors import ConfigurationError
from dashgate.mail import MailRequest
from dashgate.mailqueue import write_new
from dashgate.settings import Settings

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from dashgate.aws import Endpoint
    from dashgate.recovery import Issued, Recovery

#: SES v2's SendEmail (API Reference: "SendEmail", POST /v2/email/outbound-emails).
SES_SEND_PATH = "/v2/email/outbound-emails"
#: A first name is shown in a greeting only if it is short and does not look like a link or an
#: address: anyone can register someone else's address, with a "name" made to be clicked.
MAX_GREETING_NAME = 40
LINK_LIKE = re.compile(r"://|www\.|@|\.[a-z]{2,}\b", re.IGNORECASE)


class MailNotSent(Exception):
    """The transport could not send a mail (the queue retries it). `maybe_sent`: the mail service got it
    and its answer was lost; the mail may be on its way, so it is neither withdrawn nor sent again."""

    def __init__(self, message: str, *, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


@dataclass(frozen=True)
class Letter:
    """What a mail says, before it is written as text and HTML."""

    subject: str
    paragraphs: tuple[str, ...]
    button: str | None = None  # the label of the link, where the mail carries one
    link: str | None = None
    closing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sent:
    """A sent mail: its kind, its recipient's user id and the transport's message id."""

    kind: str
    user_id: int
    message_id: str


def compose(issued: Issued, settings: Settings) -> Letter:
    """The words of each kind of mail, in the seed's plain, friendly tone; a link only in token mails."""
    base = _base_url(settings)
    site = urlsplit(base).netloc
    kind = issued.request.kind
    if kind == "password_reset":
        return Letter(
            "Reset your password",
            (f"Someone, hopefully you, asked to reset the password of your account at {site}. "
             f"Use the link below to choose a new one. It works once, within "
             f"{duration(settings.password_reset_ttl_seconds)}.",),
            "Reset my password", _link(issued),
            ("If you did not ask for this, you can ignore this email: your password stays as it is.",))
    if kind == "email_confirm":
        return Letter(
            "Confirm your email address",
            (f"Thank you for registering at {site}! Please confirm that this is your email address. "
             f"The link works within {duration(settings.email_confirm_ttl_seconds)}.",),
            "Confirm my email address", _link(issued),
            ("If you did not register, you can ignore this email.",))
    forgot = f"{base}/password/forgot/"  # no secret: the page that asks for a new link
    if kind == "password_reset_notice":
        return Letter("Your password has been reset", (
            f"The password of your account at {site} has just been reset, and every device that was signed in "
            "has been signed out. You may now login with your new password.",
            f"If you did not do this, please ask for a new password at once: {forgot}"))
    if kind == "password_changed_notice":
        return Letter("Your password has been changed", (
            f"The password of your account at {site} has just been changed, and your other devices have been "
            "signed out.",
            f"If you did not do this, please ask for a new password at once: {forgot}"))
    raise ValueError(f"no mail for {kind!r}")


def render(issued: Issued, settings: Settings, *, now: datetime | None = None) -> EmailMessage:
    """The mail for an issued request: RFC 5322 headers, a plain text part and its HTML alternative."""
    letter = compose(issued, settings)
    sender = settings.mail_from or "dashgate <no-reply@localhost>"
    name = greeting_name(issued.first_name)
    greeting = f"Hi {name}," if name else "Hi,"
    message = EmailMessage()
    message["Subject"] = letter.subject
    message["From"] = sender
    message["To"] = issued.email
    message["Date"] = format_datetime(now or datetime.now(UTC))
    # a domain given: make_msgid would otherwise ask the DNS for this machine's name
    message["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2] or "localhost")
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(_text(letter, greeting, _signature(settings)))
    message.add_alternative(_html(letter, greeting, _signature(settings)), subtype="html")
    return message


def greeting_name(first_name: str | None) -> str | None:
    """The first name as a greeting may show it, or None (missing, too long, or link-like)."""
    name = " ".join((first_name or "").split())
    if not name or len(name) > MAX_GREETING_NAME or LINK_LIKE.search(name) or not name.isprintable():
        return None
    return name


def duration(seconds: int) -> str:
    """A TTL in words: "1 hour", "2 days", "30 minutes"."""
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _base_url(settings: Settings) -> str:
    if not settings.public_base_url:
        raise ConfigurationError("Set PUBLIC_BASE_URL: the links in mail are built from it, and only from it")
    return settings.public_base_url


def _link(issued: Issued) -> str:
    if not issued.link:
        raise ValueError(f"a {issued.request.kind} mail needs its link")
    return issued.link


def _signature(settings: Settings) -> str:
    return urlsplit(_base_url(settings)).netloc


def _text(letter: Letter, greeting: str, signature: str) -> str:
    blocks = [greeting, *letter.paragraphs]
    if letter.link:
        blocks.append(f"{letter.button}:\n{letter.link}")
    blocks += [*letter.closing, f"Thanks,\n{signature}"]
    return "\n\n".join(blocks) + "\n"


def _html(letter: Letter, greeting: str, signature: str) -> str:
    paragraph = '<p style="margin:0 0 16px">{}</p>'.format
    body = [paragraph(escape(greeting)), *(paragraph(escape(p)) for p in letter.paragraphs)]
    if letter.link:
        href = escape(letter.link, quote=True)
        body.append(f'<p style="margin:24px 0"><a href="{href}" style="background:#3b6fe0;color:#fff;'
                    f'padding:12px 20px;border-radius:8px;text-decoration:none;font-weight:600">'
                    f"{escape(letter.button or letter.link)}</a></p>")
        body.append(paragraph(f'Or copy this link into your browser:<br><span style="word-break:break-all">'
                              f"{escape(letter.link)}</span>"))
    body += [paragraph(escape(p)) for p in letter.closing]
    body.append(paragraph(f"Thanks,<br>{escape(signature)}"))
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(letter.subject)}</title></head>"
            '<body style="margin:0;padding:24px;background:#f3f5f8;font:16px/1.5 system-ui,sans-serif;'
            'color:#1d2433"><div style="max-width:32rem;margin:0 auto;padding:24px;background:#fff;'
            f'border-radius:12px">{"".join(body)}</div></body></html>\n')


class Transport(Protocol):
    def send(self, message: EmailMessage) -> str:
        """Send one rendered mail; its message id. MailNotSent when it could not be sent."""


class SesTransport:
    """Amazon SES v2 SendEmail with Simple content (subject, text, HTML). SES rewrites links only for a
    configuration set that tracks clicks, so SES_CONFIGURATION_SET must name none that does (README:
    "Account mail"): a reset link must not pass its token through a tracking domain."""

    def __init__(self, settings: Settings, endpoint: Endpoint | None = None) -> None:
        from dashgate.aws import Endpoint, current_region, endpoint_override

        if not settings.mail_from:
            raise ConfigurationError("Set MAIL_FROM (an address of the SES identity) to send mail with SES")
        name, address = parseaddr(settings.mail_from)
        self.sender = formataddr((name, address))  # a non-ASCII name as RFC 2047 words, as SES needs
        self.configuration_set = settings.ses_configuration_set
        self.endpoint = endpoint or Endpoint(
            endpoint_override("sesv2") or f"https://email.{current_region()}.amazonaws.com", service="ses")

    def send(self, message: EmailMessage) -> str:
        """SendEmail; SES's message id."""
        from dashgate.aws import AwsError

        payload: dict = {
            "FromEmailAddress": self.sender,
            "Destination": {"ToAddresses": [str(message["To"])]},
            "Content": {"Simple": {
                "Subject": {"Data": str(message["Subject"]), "Charset": "UTF-8"},
                "Body": {"Text": {"Data": _part(message, "plain"), "Charset": "UTF-8"},
                         "Html": {"Data": _part(message, "html"), "Charset": "UTF-8"}},
            }},
        }
        if self.configuration_set:
            payload["ConfigurationSetName"] = self.configuration_set
        try:
            answer = self.endpoint.post_json(SES_SEND_PATH, payload)
        except AwsError as exc:
            raise MailNotSent(str(exc), maybe_sent=exc.maybe_done) from exc
        return str(answer.get("MessageId") or "")


def _part(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        raise ValueError(f"the mail has no text/{subtype} part")
    return part.get_content()


class OutboxTransport:
    """A local outbox: each mail an RFC 5322 `.eml` file in a directory, written atomically."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def send(self, message: EmailMessage) -> str:
        """Write the mail as `<time>-<id>.eml`; the file's name."""
        try:  # CRLF line ends, as on the wire
            return write_new(self.directory, ".eml", message.as_bytes(policy=email.policy.SMTP))
        except OSError as exc:
            raise MailNotSent(f"outbox: {type(exc).__name__}") from exc


def transport_for(settings: Settings) -> Transport:
    """SES where the mail queue is SQS (AWS: MAIL_QUEUE_URL), else the local outbox (MAIL_OUTBOX_DIR)."""
    if settings.mail_queue_url:
        return SesTransport(settings)
    if settings.mail_outbox_dir:
        return OutboxTransport(settings.mail_outbox_dir)
    raise ConfigurationError("Set MAIL_QUEUE_URL (in AWS, with MAIL_FROM) or MAIL_OUTBOX_DIR (locally)")


class Mailer:
    """One queued request at a time: issue, render, send; a mail that could not be sent is withdrawn."""

    def __init__(self, settings: Settings, recovery: Recovery, transport: Transport) -> None:
        _base_url(settings)  # fail at cold start, not at the first message
        self.settings, self.recovery, self.transport = settings, recovery, transport

    def deliver(self, request: MailRequest, *, now: datetime) -> Sent | None:
        """Send what `request` asks for; None when there is nothing to send. When sending fails, the
        issued token and its count are withdrawn and the error raised, so that the retry can send; when
        the mail may have been sent (MailNotSent.maybe_sent), its token stays valid (a retry would void
        the link it carries and send a second mail)."""
        issued = self.recovery.issue(request, now=now)
        if issued is None:
            return None
        try:
            message_id = self.transport.send(render(issued, self.settings, now=now))
        except Exception as exc:
            if isinstance(exc, MailNotSent) and exc.maybe_sent:
                raise
            # The send's error is the one to report (and retry on); a failure to withdraw only costs the
            # address one of its day's mails, so it is logged and never put in its place.
            try:
                self.recovery.withdraw(issued, now=now)
            except Exception as failed:  # logged; the send's error follows
                logger.warning("Could not withdraw an unsent mail",
                               extra={"kind": request.kind, "user_id": issued.user_id, "cause": type(failed).__name__})
            raise
        return Sent(request.kind, issued.user_id, message_id)
