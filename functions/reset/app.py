"""Lambda entry point for /password/reset/: choose a new password with an emailed link (SPEC: Reset password).

The link's GET only moves its token into a short-lived cookie that only this path receives, and
redirects to the tokenless page: the token never sits in a page's URL, where the page's links, its
Referer or the browser's history could leak it (OWASP Forgot Password Cheat Sheet)."""

from __future__ import annotations

import re
from typing import Annotated

from dashgate import http, pages
from dashgate.edge import Body, Edge, Query
from dashgate.errors import DashgateError, InvalidToken
from dashgate.http import Request
from dashgate.models import FieldsOut
from dashgate.models.reset import ResetRequest
from dashgate.openapi import HTML, SEE_OTHER, errors, json_content
from dashgate.runtime import Runtime
from dashgate.sessions import Cookie
from dashgate.settings import TOKEN_MAX

PATH = "/password/reset/"
RESET = "Your password has been reset. You may now login."
#: What a token of ours looks like (base64url); anything else is not put in a cookie.
TOKEN_SHAPE = re.compile(rf"[A-Za-z0-9_-]{{1,{TOKEN_MAX}}}")
#: 400 here is mostly the link (openapi.WHY names only the unreadable body).
BAD_LINK = {400: {**errors(400)[400], "description": "The link is missing, used, expired or forged, or the body "
                                                     "could not be read"}}
Token = Annotated[str | None, Query(description="The emailed link's token: kept in a cookie, then a redirect "
                                                "to the tokenless page.")]

runtime = Runtime("reset", passwords=True, mail=True)
#: `__Secure-` rather than `__Host-`, which requires Path=/ (RFC 6265bis 4.1.3).
COOKIE = "__Secure-reset" if runtime.settings.session_cookie_secure else "reset"


def token_cookie(token: str) -> Cookie:
    """The link's token, for this path only, for no longer than a token lives."""
    return Cookie(COOKIE, token, runtime.settings.password_reset_ttl_seconds,
                  secure=runtime.settings.session_cookie_secure, path=PATH)


def clear_token_cookie() -> Cookie:
    """Delete the token cookie with the attributes it was set with."""
    return Cookie(COOKIE, "", 0, secure=runtime.settings.session_cookie_secure, path=PATH)


def form(request: Request, err: DashgateError | None = None, values: dict[str, str] | None = None) -> http.Response:
    """The new-password form (again, with the error of a refused POST); a bad link's page instead."""
    if isinstance(err, InvalidToken):
        return invalid_link(err)
    return http.form_response(request, runtime.tokens, lambda ctx: pages.reset_page(
        ctx.csrf_token, ctx.messages, errors=ctx.errors, alert=ctx.alert), err=err, headers=http.NO_REFERRER)


def invalid_link(err: InvalidToken) -> http.Response:
    """400: the link is missing, used, expired or forged; a way to ask for a new one; the cookie goes."""
    page = pages.message_page("Reset your password", err.message, link=("Ask for a new link", "/password/forgot/"))
    return http.respond(400, page, headers=http.NO_REFERRER, cookies=[clear_token_cookie()])


edge = Edge(runtime, form=form, null_origin=True)  # its pages are no-referrer: see http.require_csrf
app = edge.app


@edge.route(PATH, "GET", summary="The emailed link (a token: kept in a cookie, 303 to this page), then the form",
            responses={200: {"description": "The form (HTML), or the fields POST takes (JSON)",
                             "content": {**HTML, **json_content(FieldsOut)}},
                       303: SEE_OTHER, **errors(422, 503), **BAD_LINK})
def show_form(token: Token = None):
    """A link's token goes into the cookie (nothing else changes); the tokenless page shows the form
    when its cookie holds an outstanding token. JSON clients send the token in the query."""
    request = edge.request()
    if request.wants_json:
        if not runtime.recovery.reset_token_valid(token, now=runtime.now()):
            raise InvalidToken()
        return http.json_response(200, FieldsOut(fields=["token", "password"]).body())
    if token is not None:
        if not TOKEN_SHAPE.fullmatch(token):
            return invalid_link(InvalidToken())
        return http.redirect(PATH, [token_cookie(token)])
    if not runtime.recovery.reset_token_valid(request.cookies.get(COOKIE), now=runtime.now()):
        return invalid_link(InvalidToken())
    return form(request)


@edge.route(PATH, "POST", summary="Set a new password with the emailed token; every session is signed out",
            responses={204: {"description": "Password reset (JSON); no session is created"},
                       303: SEE_OTHER, **errors(403, 413, 415, 422, 503), **BAD_LINK})
def reset_password(body: Annotated[ResetRequest, Body()]):
    """Set the password with the token (the body's, else the cookie's), then browsers log in afresh."""
    request = edge.request()
    edge.require_csrf(body.csrf_token)
    token = body.token if body.token is not None else request.cookies.get(COOKIE)
    runtime.recovery.reset(token, body.password, now=runtime.now())
    runtime.count("PasswordResets")
    if request.wants_json:
        return http.respond(204, cookies=[clear_token_cookie()])
    return http.redirect("/login/", [clear_token_cookie(), runtime.tokens.flash_cookie([RESET])])


lambda_handler = runtime.handler(edge)
