"""Lambda entry point for the HTTP API's REQUEST authorizer (payload 2.0, simple responses) on /dash."""

from __future__ import annotations

from typing import Any

from dashgate.assertions import assertion_keys
from dashgate.errors import ConfigurationError, DashgateError
from dashgate.http import parse_cookies
from dashgate.runtime import Runtime

runtime = Runtime("authorizer")
settings = runtime.settings
if not settings.has_identity_keys:
    raise ConfigurationError("Set IDENTITY_SECRET_ARN (in AWS) or IDENTITY_SECRETS: the authorizer signs the "
                             "identity it passes to the dashboard host")
#: The key the assertions are signed with, used for nothing else (SPEC: The dashboard host).
assertions = runtime.key_ring(assertion_keys, what="identity assertion keys")


@runtime.correlated
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Allow a live session and pass its user on as a signed, short-lived assertion; deny anything else
    (and on an outage). The gateway caches the answer per Cookie header for at most
    AuthorizerCacheSeconds (30 s at most), less than the assertion's life (60 s): a cached answer
    always carries an assertion the host still accepts."""
    # Read the raw `cookies` list: Powertools' APIGatewayAuthorizerEventV2.cookies has raised on
    # requests without cookies in some versions.
    try:
        token = parse_cookies(event.get("cookies") or []).get(runtime.tokens.session_cookie_name)
        now = runtime.now()
        user = runtime.users.current_user(token, now=now)
        assertion = assertions.current.issue(user, now) if user else None
    except DashgateError as err:
        runtime.log_error(err)
        user = None
    if user is None:
        return {"isAuthorized": False}
    return {"isAuthorized": True, "context": {"user_id": str(user.id), "email": user.email,
                                              "first_name": user.first_name or "", "assertion": assertion}}
