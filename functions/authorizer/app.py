"""Lambda entry point for the HTTP API's REQUEST authorizer (payload 2.0, simple responses) on /dash."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths

from dashgate.errors import DashgateError
from dashgate.http import parse_cookies
from dashgate.runtime import Runtime

runtime = Runtime("authorizer", "/dash")


@runtime.logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Allow a live session and pass its user on as context; deny anything else (and on an outage)."""
    # Read the raw `cookies` list: Powertools' APIGatewayAuthorizerEventV2.cookies has raised on
    # requests without cookies in some versions.
    try:
        token = parse_cookies(event.get("cookies") or []).get(runtime.tokens.session_cookie_name)
        user = runtime.users.current_user(token, now=runtime.now())
    except DashgateError as err:
        runtime.log_error(err)
        user = None
    if user is None:
        return {"isAuthorized": False}
    return {"isAuthorized": True,
            "context": {"user_id": str(user.id), "email": user.email, "first_name": user.first_name or ""}}
