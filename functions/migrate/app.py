"""Lambda entry point for the deploy-time migration step: a CloudFormation custom resource.

It always answers CloudFormation, SUCCESS or FAILED with a reason, and well before its own timeout:
on a setting that fails to parse, a database that is down, a lock that a live transaction holds
for too long, or anything else. Nothing but the standard library is imported at module level, so
even a broken layer reaches the code that answers.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from typing import Any

#: Constant, so an update never makes CloudFormation delete the "old" resource.
PHYSICAL_ID = "dashgate-schema"
#: Seconds kept free before the function's timeout, to answer CloudFormation whatever happened.
ANSWER_MARGIN_SECONDS = 20

logger = logging.getLogger("dashgate-migrate")
logger.setLevel(logging.INFO)


def lambda_handler(event: dict[str, Any], context: Any) -> None:
    """Migrate on Create and Update; never drop anything on Delete; always answer CloudFormation."""
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - ANSWER_MARGIN_SECONDS
    status, reason, data = "SUCCESS", "", {}
    try:
        if event["RequestType"] in ("Create", "Update"):
            applied = apply_migrations(deadline)
            data = {"Applied": ",".join(applied) or "none"}
            logger.info("Migrations applied: %s", data["Applied"])
    except Exception as exc:
        logger.exception("Migrations failed")
        status, reason = "FAILED", failure_reason(exc, context)
    send_response(event, status, reason, data)


def apply_migrations(deadline: float) -> list[str]:
    """Apply pending migrations, giving up on lock waits before `deadline` (monotonic seconds)."""
    from dashgate.settings import Settings  # here, not at import: a bad setting must still be answered
    from dashgate.store import MIGRATION_STATEMENT_TIMEOUT_MS, Store

    settings = Settings.from_env()
    store = Store.from_settings(settings, application_name="dashgate-migrate", connect_timeout=10,
                                statement_timeout_ms=MIGRATION_STATEMENT_TIMEOUT_MS)
    try:
        return store.migrate(deadline=deadline)
    finally:
        store.close()


def failure_reason(exc: BaseException, context: Any) -> str:
    """What CloudFormation shows: the kind of failure, its message (no secret is in one), the log."""
    cause = exc.__cause__ or exc
    detail = str(cause).splitlines()[0][:300] if str(cause) else ""
    where = getattr(context, "log_stream_name", "the function's log")
    return f"Migrations failed ({type(cause).__name__}: {detail}); see {where}"


def send_response(event: dict[str, Any], status: str, reason: str, data: dict[str, str]) -> None:
    """PUT the result to the pre-signed ResponseURL (cfnresponse exists only for inline code)."""
    body = json.dumps({
        "Status": status, "Reason": reason or status, "PhysicalResourceId": PHYSICAL_ID,
        "StackId": event["StackId"], "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"], "NoEcho": False, "Data": data,
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",  # noqa: S310 - CloudFormation's URL
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(request, timeout=ANSWER_MARGIN_SECONDS / 2) as response:  # noqa: S310
        logger.info("Answered CloudFormation %s (HTTP %s)", status, response.status)
