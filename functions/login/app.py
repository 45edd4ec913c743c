"""Lambda entry point for /login/: the sign-in form (GET) and session creation (POST)."""

from __future__ import annotations

from typing import Annotated

from dashgate import http, pages
from dashgate.edge import Body, Edge, Query
from dashgate.errors import DashgateError, EmailNotConfirmed, InvalidCredentials, Throttled
from dashgate.http import Request
from dashgate.models import SignedInOut, UserOut
from dashgate.models.login import LoginRequest, SessionOut
from dashgate.openapi import HTML, SEE_OTHER, errors, json_content
from dashgate.runtime import Runtime
from dashgate.users import SignIn

runtime = Runtime("login", passwords=True, mail=True)
#: 403 is also REQUIRE_CONFIRMED_EMAIL's answer (openapi.WHY names only CSRF).
REFUSED = {403: {**errors(403)[403], "description": "CSRF: no valid token, or another site's Origin; or, with "
                  "REQUIRE_CONFIRMED_EMAIL, an unconfirmed address (a new link is sent)"}}
Next = Annotated[str | None, Query(description="A local path to go to after signing in; anything else is ignored.")]


def form(request: Request, err: DashgateError | None = None, values: dict[str, str] | None = None) -> http.Response:
    """The login page, with the error of a refused attempt when there is one."""
    values = values or {}
    next_url = http.safe_next(values.get("next") or request.query.get("next"), runtime.settings.default_redirect)
    shown = {"email": values.get("email", "").strip(), "remember_me": bool(values.get("remember_me"))}
    return http.form_response(request, runtime.tokens, lambda ctx: pages.login_page(
        ctx.csrf_token, ctx.messages, next_url=next_url, values=shown, errors=ctx.errors, alert=ctx.alert), err=err)


edge = Edge(runtime, form=form)
app = edge.app


@edge.route("/login/", "GET", summary="The sign-in form, or where a signed-in user goes next",
            responses={200: {"description": "The form (HTML), or the signed-in user (JSON)",
                             "content": {**HTML, **json_content(SessionOut)}},
                       303: SEE_OTHER, **errors(422, 503)})
def show_form(next: Next = None):
    """Signed in already: go on to `next`. Otherwise the form, carrying `next` through."""
    request = edge.request()
    user = edge.signed_in_user()
    if request.wants_json:
        return http.json_response(200, SessionOut(user=UserOut(**user.as_json()) if user else None).body())
    if user is not None:
        return http.redirect(http.safe_next(next, runtime.settings.default_redirect))
    return form(request)


@edge.route("/login/", "POST", summary="Sign in: a new session and its cookie",
            responses={200: {"description": "Signed in (JSON)", "content": json_content(SignedInOut)},
                       303: SEE_OTHER, **errors(400, 401, 413, 415, 422, 429, 503), **REFUSED})
def sign_in(body: Annotated[LoginRequest, Body()], next: Next = None):
    """Check the password, start a new session, and send the browser on."""
    request = edge.request()
    edge.require_csrf(body.csrf_token)
    tokens = runtime.tokens
    try:
        signed_in = runtime.users.authenticate(
            SignIn(body.email, body.password, body.remember_me), ip=request.source_ip, now=runtime.now(),
            presented_token=request.cookies.get(tokens.session_cookie_name),
            device_token=request.cookies.get(tokens.device_cookie_name))
    except (InvalidCredentials, Throttled) as err:
        runtime.count("LoginsFailed" if isinstance(err, InvalidCredentials) else "LoginsThrottled")
        raise
    except EmailNotConfirmed as err:  # REQUIRE_CONFIRMED_EMAIL: the right password, an unconfirmed address
        runtime.count("LoginsUnconfirmed")
        # Its message says a new link was sent: when it cannot be queued, the answer is a 503 instead.
        runtime.recovery.send_confirmation(err.user)
        raise
    runtime.count("LoginsSucceeded")
    cookies = [tokens.session_cookie(signed_in.token, signed_in.cookie_max_age),
               tokens.device_cookie(signed_in.device_token)]
    if request.wants_json:
        return http.json_response(200, SignedInOut(user=UserOut(**signed_in.user.as_json())).body(), cookies=cookies)
    return http.redirect(http.safe_next(body.next or next, runtime.settings.default_redirect), cookies)


lambda_handler = runtime.handler(edge)
