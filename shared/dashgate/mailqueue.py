"""The mail queue, as the request path sees it: `send(MailRequest)` puts exactly one message on it.

In AWS it is an SQS queue (`MAIL_QUEUE_URL`); locally (`make run`, tests) a spool directory under
`MAIL_OUTBOX_DIR`, which `make run` hands to the same mailer code. Sending never waits on the mail
service itself: the mailer function sends, later.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Protocol

from dashgate.errors import ConfigurationError, ServiceUnavailable
from dashgate.mail import MailRequest
from dashgate.settings import Settings

#: Where a spool keeps its messages, under MAIL_OUTBOX_DIR.
SPOOL = "queue"


class MailQueue(Protocol):
    def send(self, request: MailRequest) -> None:
        """Put one message on the queue; ServiceUnavailable when that is not possible."""


def write_new(directory: Path, suffix: str, data: bytes) -> str:
    """Write `data` as a new file `<time>-<random><suffix>` in `directory`, atomically (a temporary
    file renamed into place, removed if the write fails), so a reader never sees half a file; its name."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{suffix}"
    with tempfile.NamedTemporaryFile("wb", dir=directory, suffix=".tmp", delete=False) as out:
        try:
            out.write(data)
        except OSError:
            out.close()
            os.unlink(out.name)
            raise
    os.replace(out.name, directory / name)
    return name


class SpoolQueue:
    """A local queue: one JSON file per message in `<MAIL_OUTBOX_DIR>/queue/`, written atomically
    (a temporary file renamed into place), in the order they were sent."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def send(self, request: MailRequest) -> None:
        try:
            write_new(self.directory, ".json", request.to_json().encode())
        except OSError as exc:
            raise ServiceUnavailable() from exc

    def pending(self) -> list[Path]:
        """The messages not yet taken, oldest first."""
        return sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []


def queue_for(settings: Settings) -> MailQueue:
    """The queue this environment sends to: SQS when MAIL_QUEUE_URL is set, else the local spool."""
    if settings.mail_queue_url:
        from dashgate.sqs import SqsQueue  # the signed HTTPS client (no boto3 on the request path)

        return SqsQueue(settings.mail_queue_url)
    if settings.mail_outbox_dir:
        return SpoolQueue(Path(settings.mail_outbox_dir) / SPOOL)
    raise ConfigurationError("Set MAIL_QUEUE_URL (in AWS, the mail queue) or MAIL_OUTBOX_DIR (locally)")
