"""Lambda entry point for /password/change/: a signed-in user changes the password (SPEC: Change password)."""

from __future__ import annotations

from typing import Annotated

from dashgate import http, pages
from dashgate.edge import Body, Edge
from dashgate.errors import DashgateError, NotSignedIn, Throttled, ValidationFailed
from dashgate.http import Request
from dashgate.models import FieldsOut
from dashgate.models.change import ChangeRequest
from dashgate.openapi import HTML, SEE_OTHER, errors, json_content
from dashgate.runtime import Runtime

PATH = "/password/change/"
CHANGED = "Your password has been changed."
#: Where a signed-out browser goes: the login page, and back here after signing in.
SIGN_IN_FIRST = f"/login/?next={PATH}"
#: What 401 means here (openapi.WHY words it for the login).
NOT_SIGNED_IN = {401: {**errors(401)[401], "description": "Not signed in (JSON; browsers go to the login page)"}}
FIELDS = ["current_password", "password", "password_confirm"]

runtime = Runtime("change", passwords=True, mail=True)


def form(request: Request, err: DashgateError | None = None, values: dict[str, str] | None = None) -> http.Response:
    """The form (again, with the error of a refused POST); a signed-out browser goes to the login page."""
    if isinstance(err, NotSignedIn):
        return http.redirect(SIGN_IN_FIRST)
    return http.form_response(request, runtime.tokens, lambda ctx: pages.change_page(
        ctx.csrf_token, ctx.messages, errors=ctx.errors, alert=ctx.alert), err=err)


edge = Edge(runtime, form=form)
app = edge.app


@edge.route(PATH, "GET", summary="The form to change the password (signed in)",
            responses={200: {"description": "The form (HTML), or the fields POST takes (JSON)",
                             "content": {**HTML, **json_content(FieldsOut)}},
                       303: SEE_OTHER, **errors(503), **NOT_SIGNED_IN})
def show_form():
    """The form for a signed-in user; others sign in first (JSON: 401)."""
    request = edge.request()
    user = edge.signed_in_user()
    if request.wants_json:
        if user is None:
            raise NotSignedIn()
        return http.json_response(200, FieldsOut(fields=FIELDS).body())
    return form(request, NotSignedIn() if user is None else None)


@edge.route(PATH, "POST", summary="Change the password: other sessions signed out, this one replaced",
            responses={204: {"description": "Changed (JSON); the new session's cookie is set"},
                       303: SEE_OTHER, **errors(400, 403, 413, 415, 422, 429, 503), **NOT_SIGNED_IN})
def change_password(body: Annotated[ChangeRequest, Body()]):
    """Check the current password, set the new one, and carry on in a new session."""
    request = edge.request()
    tokens = runtime.tokens
    edge.require_csrf(body.csrf_token)
    try:
        changed = runtime.recovery.change(
            request.cookies.get(tokens.session_cookie_name), body.current_password, body.password,
            ip=request.source_ip, now=runtime.now(), device_token=request.cookies.get(tokens.device_cookie_name))
    except (ValidationFailed, Throttled) as err:
        runtime.count("PasswordChangesThrottled" if isinstance(err, Throttled) else "PasswordChangesFailed")
        raise
    runtime.count("PasswordChanges")
    cookies = [tokens.session_cookie(changed.token, changed.cookie_max_age)]
    if request.wants_json:
        return http.respond(204, cookies=cookies)
    return http.redirect(runtime.settings.default_redirect, [*cookies, tokens.flash_cookie([CHANGED])])


lambda_handler = runtime.handler(edge)
