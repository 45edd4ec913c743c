"""Lambda entry point for /register/: the sign-up form (GET) and account creation (POST).

A new account is sent a link to confirm its address. The account exists once the user row is
committed: if the link cannot be queued then (the queue is unavailable), the registration still
succeeds and the failure is logged; the user asks for a new link from /email/confirm/ once signed in
(or gets one at login when REQUIRE_CONFIRMED_EMAIL is on)."""

from __future__ import annotations

from typing import Annotated

from dashgate import http, pages
from dashgate.edge import Body, Edge
from dashgate.errors import DashgateError, Throttled
from dashgate.http import Request
from dashgate.models import FieldsOut, SignedInOut, UserOut
from dashgate.models.register import RegisterRequest
from dashgate.openapi import HTML, SEE_OTHER, errors, json_content
from dashgate.runtime import Runtime
from dashgate.users import SignUp

#: The seed app's wording, shown once on the login page after a successful registration.
REGISTERED = "You have successfully registered! You may now login."
#: What GET /register/ as JSON lists: the fields POST takes.
FIELDS = ["email", "first_name", "last_name", "password", "password_confirm"]

runtime = Runtime("register", passwords=True, mail=True)


def form(request: Request, err: DashgateError | None = None, values: dict[str, str] | None = None) -> http.Response:
    """The empty form, or the form again with the submitted values (never the passwords) and the errors."""
    shown = {name: (values or {}).get(name, "").strip() for name in ("email", "first_name", "last_name")}
    return http.form_response(request, runtime.tokens, lambda ctx: pages.register_page(
        ctx.csrf_token, ctx.messages, values=shown, errors=ctx.errors, alert=ctx.alert), err=err)


edge = Edge(runtime, form=form)
app = edge.app


@edge.route("/register/", "GET", summary="The sign-up form",
            responses={200: {"description": "The form (HTML), or the fields POST takes (JSON)",
                             "content": {**HTML, **json_content(FieldsOut)}}})
def show_form():
    """The empty form; JSON clients get the list of fields."""
    request = edge.request()
    if request.wants_json:
        return http.json_response(200, FieldsOut(fields=FIELDS).body())
    return form(request)


@edge.route("/register/", "POST", summary="Create an account",
            responses={201: {"description": "Created (JSON)", "content": json_content(SignedInOut)},
                       303: SEE_OTHER, **errors(400, 403, 409, 413, 415, 422, 429, 503)})
def create_account(body: Annotated[RegisterRequest, Body()]):
    """Create the user, and send browsers to the login page with a flash message."""
    request = edge.request()
    edge.require_csrf(body.csrf_token)
    account = SignUp(email=body.email, password=body.password, first_name=body.first_name, last_name=body.last_name)
    try:
        user = runtime.users.register(account, ip=request.source_ip, now=runtime.now())
    except Throttled:
        runtime.count("RegistrationsThrottled")
        raise
    runtime.count("Registrations")
    runtime.recovery.send_confirmation(user, best_effort=True)  # the registration stands whatever the queue
    if request.wants_json:
        return http.json_response(201, SignedInOut(user=UserOut(**user.as_json())).body())
    return http.redirect("/login/", [runtime.tokens.flash_cookie([REGISTERED])])


lambda_handler = runtime.handler(edge)
