"""Lambda entry point for the mailer: the mail queue's SQS batches, each message one mail (or none).

A message that fails to send is reported in `batchItemFailures` and only it is retried (after
maxReceiveCount receives it goes to the dead-letter queue); a body that is not a mail request would
never succeed, so it is logged and dropped. Logs name the kind, the user and the message id only:
never a token, a link or a mail's text (SPEC: Delivery).
"""

from __future__ import annotations

from typing import Any

from dashgate.lazy import defer_powertools

# Powertools' data_classes init imports its forty event classes; batch processing needs three
# (dashgate.lazy says why). Before the first Powertools import.
defer_powertools()

from aws_lambda_powertools.utilities.batch import (  # noqa: E402
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord  # noqa: E402

from dashgate.mail import MailRequest  # noqa: E402
from dashgate.mailer import Mailer, MailNotSent, transport_for  # noqa: E402
from dashgate.runtime import Runtime  # noqa: E402

runtime = Runtime("mailer", sessions=False)
mailer = Mailer(runtime.settings, runtime.recovery, transport_for(runtime.settings))
processor = BatchProcessor(event_type=EventType.SQS)


def deliver(record: SQSRecord) -> None:
    """One message: send its mail; raise (the record is retried) when it could not be sent."""
    try:
        request = MailRequest.from_json(record.body)
    except ValueError:
        runtime.logger.error("Dropped a message that is not a mail request", extra={"message_id": record.message_id})
        return
    where = {"kind": request.kind, "message_id": record.message_id}
    try:
        sent = mailer.deliver(request, now=runtime.now())
    except Exception as exc:
        # The service's status and error code (MessageRejected, Throttling...) say why; neither holds a token.
        cause = {"cause": type(exc).__name__, "status": getattr(exc.__cause__, "status", None),
                 "code": getattr(exc.__cause__, "code", None)}
        if isinstance(exc, MailNotSent) and exc.maybe_sent:  # sending it again would void the link it carries
            runtime.count("MailsUncertain")
            runtime.logger.warning("Mail may have been sent; not retried", extra={**where, **cause})
            return
        runtime.count("MailsFailed")
        runtime.logger.error("Mail not sent; the queue will retry", extra={**where, **cause})
        raise
    if sent is None:
        runtime.logger.info("Nothing to send", extra=where)
        return
    runtime.count("MailsSent")
    runtime.logger.info("Mail sent", extra={**where, "user_id": sent.user_id, "mail_id": sent.message_id})


@runtime.metrics.log_metrics
@runtime.logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The batch's partial response: {"batchItemFailures": [{"itemIdentifier": <failed messageId>}...]}."""
    return process_partial_response(event=event, record_handler=deliver, processor=processor, context=context)
