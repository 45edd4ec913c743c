"""`make run`'s mail: the spool, handed to the real mailer function as SQS would hand it the queue,
and /_outbox/, a page of the `.eml` files the mailer wrote (local only: never deployed)."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import time
import traceback
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from html import escape
from pathlib import Path
from typing import Any

from dashgate.mailqueue import SPOOL, SpoolQueue
from localrun.gateway import Environments, LambdaContext

#: Seconds between two looks at the spool.
POLL_SECONDS = 0.25
#: Messages handed to the mailer in one event (the template's BatchSize).
BATCH_SIZE = 10
#: Attempts a message gets before it is moved to <outbox>/dead/ (the queue's maxReceiveCount).
MAX_ATTEMPTS = 5
#: Seconds before a failed message is tried again, times its attempts so far (SQS would wait for the
#: visibility timeout).
RETRY_SECONDS = 2.0
#: What the mailer names its files (OutboxTransport, mailqueue.write_new): anything else under /_outbox/ is a 404.
EML_NAME = re.compile(r"[0-9]{20}-[0-9a-f]{32}\.eml")
URL = re.compile(r"https?://[^\s<>\"']+")
HTML_HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                ("Referrer-Policy", "no-referrer"),
                ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")]
STYLE = ("body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d2433}"
         "article{border:1px solid #d5dae3;border-radius:8px;padding:1rem;margin:1rem 0}"
         "dl{display:grid;grid-template-columns:5rem 1fr;margin:0 0 .5rem}dt{color:#5b6475}dd{margin:0}"
         "pre{white-space:pre-wrap;word-break:break-all;background:#f6f7f9;padding:.75rem;border-radius:6px}")


def sqs_record(message_id: str, body: str, receive_count: int, sent_ms: int) -> dict[str, Any]:
    """One record as Lambda's SQS event source mapping delivers it (AWS Lambda Developer Guide, "SQS")."""
    import hashlib

    return {
        "messageId": message_id, "receiptHandle": f"local-{message_id}", "body": body,
        "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": str(sent_ms),
                       "SenderId": "LOCAL", "ApproximateFirstReceiveTimestamp": str(sent_ms)},
        "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's checksum
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:local:000000000000:dashgate-mail",
        "awsRegion": "local",
    }


@dataclass
class MailPump:
    """What the SQS event source mapping does in AWS: batches from the spool to the mailer; a message
    that succeeded is deleted, a failed one is tried again later, at most MAX_ATTEMPTS times."""

    outbox: Path
    mailer: Environments
    attempts: dict[str, int] = field(default_factory=dict)
    not_before: dict[str, float] = field(default_factory=dict)

    @property
    def spool(self) -> SpoolQueue:
        return SpoolQueue(self.outbox / SPOOL)

    def pump_once(self) -> int:
        """Hand one batch to the mailer; how many messages it took."""
        now = time.monotonic()
        batch = [p for p in self.spool.pending() if self.not_before.get(p.name, 0) <= now][:BATCH_SIZE]
        if not batch:
            return 0
        by_id = {str(uuid.uuid5(uuid.NAMESPACE_URL, path.name)): path for path in batch}
        records = [sqs_record(message_id, path.read_text(), self.attempts.get(path.name, 0) + 1,
                              int(path.stat().st_mtime * 1000)) for message_id, path in by_id.items()]
        try:
            result = self.mailer.invoke({"Records": records}, LambdaContext(self.mailer.route.function))
            failed = {failure["itemIdentifier"] for failure in result.get("batchItemFailures", [])}
        except Exception:  # Powertools raises when every record failed: all are tried again
            print(traceback.format_exc(), end="", flush=True)
            failed = set(by_id)
        for message_id, path in by_id.items():
            if message_id in failed:
                self._failed(path)
            else:
                path.unlink(missing_ok=True)
                self.attempts.pop(path.name, None)
                self.not_before.pop(path.name, None)
        sent = len(by_id) - len(failed)
        print(f"mailer: {sent} of {len(by_id)} spooled message(s) handled; mail is at /_outbox/", flush=True)
        return len(by_id)

    def _failed(self, path: Path) -> None:
        tries = self.attempts[path.name] = self.attempts.get(path.name, 0) + 1
        if tries >= MAX_ATTEMPTS:
            (self.outbox / "dead").mkdir(parents=True, exist_ok=True)
            shutil.move(path, self.outbox / "dead" / path.name)
            self.attempts.pop(path.name, None)
            self.not_before.pop(path.name, None)
            print(f"mailer: {path.name} failed {tries} times; moved to {self.outbox / 'dead'}", flush=True)
            return
        self.not_before[path.name] = time.monotonic() + RETRY_SECONDS * tries


class OutboxPages:
    """/_outbox/ (every mail, newest first) and /_outbox/<name> (one mail), with links clickable only
    where they lead to PUBLIC_BASE_URL: the outbox is for following dashgate's own links."""

    def __init__(self, directory: Path, public_base_url: str) -> None:
        self.directory = directory
        self.base = public_base_url.rstrip("/")

    def respond(self, path: str) -> tuple[int, list[tuple[str, str]], bytes, str]:
        """The page for a path under /_outbox."""
        if path in ("/_outbox", "/_outbox/"):
            files = sorted(self.directory.glob("*.eml"), reverse=True) if self.directory.is_dir() else []
            articles = "".join(self._article(f, link=True) for f in files if EML_NAME.fullmatch(f.name))
            body = articles or "<p>No mail yet. Mail that dashgate sends appears here.</p>"
            return 200, HTML_HEADERS, self._page("Outbox", body).encode(), "outbox"
        name = path.removeprefix("/_outbox/")
        file = self.directory / name
        if not EML_NAME.fullmatch(name) or not file.is_file():
            return 404, HTML_HEADERS, self._page("Not in the outbox", "<p>No such mail.</p>").encode(), "outbox"
        page = self._page(str(read_mail(file)["Subject"]), '<p><a href="/_outbox/">All mail</a></p>'
                          + self._article(file, link=False))
        return 200, HTML_HEADERS, page.encode(), "outbox"

    def _article(self, file: Path, *, link: bool) -> str:
        message = read_mail(file)
        subject = escape(str(message["Subject"] or "(no subject)"))
        title = f'<a href="/_outbox/{escape(file.name)}">{subject}</a>' if link else subject
        text = message.get_body(preferencelist=("plain",))
        return (f"<article><h2>{title}</h2><dl><dt>To</dt><dd>{escape(str(message['To']))}</dd>"
                f"<dt>From</dt><dd>{escape(str(message['From']))}</dd>"
                f"<dt>Date</dt><dd>{escape(str(message['Date']))}</dd></dl>"
                f"<pre>{self.linked(text.get_content() if text is not None else '')}</pre></article>")

    def linked(self, text: str) -> str:
        """`text` escaped, its URLs under PUBLIC_BASE_URL as links (any other URL stays text)."""
        html, last = [], 0
        for match in URL.finditer(text):
            url = match.group().rstrip(".,;:!?)")
            html.append(escape(text[last:match.start()]))
            ours = url == self.base or url.startswith(self.base + "/")
            html.append(f'<a href="{escape(url, quote=True)}">{escape(url)}</a>' if ours else escape(url))
            last = match.start() + len(url)
        html.append(escape(text[last:]))
        return "".join(html)

    @staticmethod
    def _page(title: str, body: str) -> str:
        return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
                f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
                "<p>Local only: the mail dashgate sent while running on this machine.</p>"
                f"{body}</body></html>")


def read_mail(file: Path) -> EmailMessage:
    """An .eml file as a message."""
    return email.message_from_bytes(file.read_bytes(), policy=email.policy.default)  # type: ignore[return-value]
