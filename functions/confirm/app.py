"""Lambda entry point for /email/confirm/: confirm an address with the emailed link, or ask for a new
link (SPEC: Confirm email).

The link's GET changes nothing, because mail scanners follow links: it shows a button whose POST
confirms. A POST without a token asks for a new link, which only a signed-in user can do (the link
goes to the account's own address): signed out, JSON gets 401 and a browser the login page, as for
any page of a signed-in user. An already confirmed user asking again is told so, and nothing is sent."""

from __future__ import annotations

from typing import Annotated

from dashgate import http, pages
from dashgate.edge import Body, Edge, Query
from dashgate.errors import DashgateError, InvalidToken, NotSignedIn
from dashgate.http import Request
from dashgate.models import FieldsOut, MessageOut
from dashgate.models.confirm import ConfirmRequest
from dashgate.openapi import HTML, SEE_OTHER, errors, json_content
from dashgate.runtime import Runtime

PATH = "/email/confirm/"
CONFIRMED = "Thank you, your email address is confirmed."
SENT = "We have sent you a new confirmation link."
ALREADY = "Your email address is already confirmed."
SIGN_IN_FIRST = f"/login/?next={PATH}"
#: What 400 and 401 mean here (openapi.WHY words them for the sign-in routes).
BAD_LINK = {400: {**errors(400)[400], "description": "The link is missing, used, expired or forged, or the body "
                                                     "could not be read"},
            401: {**errors(401)[401], "description": "No token, and not signed in"}}
Token = Annotated[str | None, Query(description="The emailed link's token.")]

runtime = Runtime("confirm", mail=True)


def form(request: Request, err: DashgateError | None = None, values: dict[str, str] | None = None) -> http.Response:
    """The button page (again, with the error of a refused POST); a bad link's page; signed out without
    a token, the login page."""
    if isinstance(err, NotSignedIn):
        return http.redirect(SIGN_IN_FIRST)
    if isinstance(err, InvalidToken):
        return invalid_link(err)
    token = (values or {}).get("token") or request.query.get("token") or None
    return http.form_response(request, runtime.tokens, lambda ctx: pages.confirm_page(
        ctx.csrf_token, ctx.messages, token=token, alert=ctx.alert), err=err, headers=http.NO_REFERRER)


def invalid_link(err: InvalidToken) -> http.Response:
    """400: the link is missing, used, expired, forged or for an address the account no longer has."""
    page = pages.message_page("Confirm your email address", err.message,
                              link=("Log in to ask for a new link", SIGN_IN_FIRST))
    return http.respond(400, page, headers=http.NO_REFERRER)


edge = Edge(runtime, form=form, null_origin=True)  # its pages are no-referrer: see http.require_csrf
app = edge.app


@edge.route(PATH, "GET", summary="The emailed link: a button that confirms (this GET changes nothing)",
            responses={200: {"description": "The button (HTML), or the fields POST takes (JSON)",
                             "content": {**HTML, **json_content(FieldsOut)}},
                       303: SEE_OTHER, **errors(422, 503), **BAD_LINK})
def show_button(token: Token = None):
    """With a token: the confirm button, when the token is outstanding. Without: the button that asks
    for a new link (signed in), or the login page."""
    request = edge.request()
    err: DashgateError | None = None
    if token is not None and not runtime.recovery.confirm_token_valid(token, now=runtime.now()):
        err = InvalidToken(InvalidToken.CONFIRMATION)
    elif token is None and edge.signed_in_user() is None:
        err = NotSignedIn()
    if not request.wants_json:
        return form(request, err)
    if err is not None:
        raise err
    return http.json_response(200, FieldsOut(fields=["token"]).body())


@edge.route(PATH, "POST", summary="Confirm the address with the emailed token, or (signed in, no token) ask "
                                  "for a new link",
            responses={202: {"description": "A new link is on its way (JSON)", "content": json_content(MessageOut)},
                       200: {"description": "Already confirmed: nothing sent (JSON)",
                             "content": json_content(MessageOut)},
                       204: {"description": "Confirmed (JSON)"}, 303: SEE_OTHER,
                       **errors(403, 413, 415, 422, 503), **BAD_LINK})
def confirm(body: Annotated[ConfirmRequest, Body()]):
    """Confirm with the token; without one, send a signed-in user a new link."""
    request = edge.request()
    edge.require_csrf(body.csrf_token)
    if body.token is None:
        return send_new_link(request)
    runtime.recovery.confirm(body.token, now=runtime.now())
    runtime.count("EmailConfirmations")
    if request.wants_json:
        return http.respond(204)
    next_page = runtime.settings.default_redirect if edge.signed_in_user() else "/login/"
    return http.redirect(next_page, [runtime.tokens.flash_cookie([CONFIRMED])])


def send_new_link(request: Request) -> http.Response:
    """A new confirmation link for the signed-in user (the mailer applies the per-address limits)."""
    user = edge.signed_in_user()
    if user is None:
        raise NotSignedIn()
    message = ALREADY
    if not user.email_confirmed:
        runtime.recovery.send_confirmation(user)
        message = SENT
    if request.wants_json:
        return http.json_response(202 if message == SENT else 200, MessageOut(message=message).body())
    return http.redirect(runtime.settings.default_redirect, [runtime.tokens.flash_cookie([message])])


lambda_handler = runtime.handler(edge)
