"""Lambda entry point for the deploy-time migration step: a CloudFormation custom resource."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from aws_lambda_powertools import Logger

from dashgate.settings import Settings
from dashgate.store import MIGRATION_STATEMENT_TIMEOUT_MS, Store

#: Constant, so an update never makes CloudFormation delete the "old" resource.
PHYSICAL_ID = "dashgate-schema"

settings = Settings.from_env()
logger = Logger(service="dashgate-migrate")


def apply_migrations() -> list[str]:
    """Apply pending migrations: lock waits are short and retried (store.migrate); one statement may
    take MIGRATION_STATEMENT_TIMEOUT_MS (an index on a big table), well inside the function's timeout."""
    store = Store.from_settings(settings, application_name="dashgate-migrate", connect_timeout=10,
                                statement_timeout_ms=MIGRATION_STATEMENT_TIMEOUT_MS)
    try:
        return store.migrate()
    finally:
        store.close()


def lambda_handler(event: dict[str, Any], context: Any) -> None:
    """Migrate on Create and Update; never drop anything on Delete; always answer CloudFormation."""
    status, reason, data = "SUCCESS", "", {}
    try:
        if event["RequestType"] in ("Create", "Update"):
            applied = apply_migrations()
            data = {"Applied": ",".join(applied) or "none"}
            logger.info("Migrations applied", extra={"applied": applied})
    except Exception as exc:
        cause = exc.__cause__ or exc
        logger.exception("Migrations failed")
        status = "FAILED"
        reason = f"Migrations failed ({type(cause).__name__}); see {getattr(context, 'log_stream_name', 'the log')}"
    send_response(event, status, reason, data)


def send_response(event: dict[str, Any], status: str, reason: str, data: dict[str, str]) -> None:
    """PUT the result to the pre-signed ResponseURL (cfnresponse exists only for inline code)."""
    body = json.dumps({
        "Status": status, "Reason": reason or status, "PhysicalResourceId": PHYSICAL_ID,
        "StackId": event["StackId"], "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"], "NoEcho": False, "Data": data,
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",  # noqa: S310 - CloudFormation's URL
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        logger.info("Answered CloudFormation", extra={"status": status, "http_status": response.status})
