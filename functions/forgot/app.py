"""Lambda entry point for /password/forgot/: ask for a password reset link (SPEC: Forgot password).

Every address gets the same answer, after the same work: one message on the mail queue. Whether the
address has an account is decided later, by the mailer, which sends a link only to a known one."""

from __future__ import annotations

from typing import Annotated

from dashgate import http, pages
from dashgate.edge import Body, Edge
from dashgate.errors import DashgateError, Throttled
from dashgate.http import Request
from dashgate.models import FieldsOut, MessageOut
from dashgate.models.forgot import ForgotRequest
from dashgate.openapi import HTML, SEE_OTHER, errors, json_content
from dashgate.runtime import Runtime

#: The answer to every address, known, unknown or unconfirmed (it tells nobody which addresses have accounts).
SENT = "If that email address has an account, we have sent it a link to reset the password."

runtime = Runtime("forgot", mail=True)


def form(request: Request, err: DashgateError | None = None, values: dict[str, str] | None = None) -> http.Response:
    """The form, or the form again with the address and the error of a refused request."""
    email = (values or {}).get("email", "").strip()
    return http.form_response(request, runtime.tokens, lambda ctx: pages.forgot_page(
        ctx.csrf_token, ctx.messages, email=email, errors=ctx.errors, alert=ctx.alert), err=err)


edge = Edge(runtime, form=form)
app = edge.app


@edge.route("/password/forgot/", "GET", summary="The form to ask for a password reset link",
            responses={200: {"description": "The form (HTML), or the fields POST takes (JSON)",
                             "content": {**HTML, **json_content(FieldsOut)}}})
def show_form():
    """The empty form; JSON clients get the list of fields."""
    request = edge.request()
    if request.wants_json:
        return http.json_response(200, FieldsOut(fields=["email"]).body())
    return form(request)


@edge.route("/password/forgot/", "POST", summary="Ask for a password reset link (the same answer for every address)",
            responses={202: {"description": "Accepted (JSON): a link is on its way if the address has an account",
                             "content": json_content(MessageOut)},
                       303: SEE_OTHER, **errors(400, 403, 413, 415, 422, 429, 503)})
def ask_for_link(body: Annotated[ForgotRequest, Body()]):
    """Queue the request and give the one answer there is; browsers go on to the login page."""
    request = edge.request()
    edge.require_csrf(body.csrf_token)
    try:
        runtime.recovery.forgot(body.email, ip=request.source_ip, now=runtime.now())
    except Throttled:
        runtime.count("ResetRequestsThrottled")
        raise
    runtime.count("ResetRequests")
    if request.wants_json:
        return http.json_response(202, MessageOut(message=SENT).body())
    return http.redirect("/login/", [runtime.tokens.flash_cookie([SENT])])


lambda_handler = runtime.handler(edge)
