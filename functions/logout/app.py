"""Lambda entry point for /logout/: revoke the session and clear the cookie."""

from __future__ import annotations

from typing import Annotated

from dashgate import http, pages
from dashgate.edge import Body, Edge
from dashgate.http import Request
from dashgate.models.logout import LogoutNoticeOut, LogoutRequest
from dashgate.openapi import HTML, SEE_OTHER, errors, json_content
from dashgate.runtime import Runtime

runtime = Runtime("logout")
edge = Edge(runtime)
app = edge.app
SIGNED_OUT = {204: {"description": "Signed out (JSON)"}, 303: SEE_OTHER}


@edge.route("/logout/", "GET", summary="Sign out from a link on this site",
            responses={**SIGNED_OUT, 200: {"description": "Another site's link or a background request: a logout "
                                                          "button (HTML) or how to log out (JSON); nothing changes",
                                           "content": {**HTML, **json_content(LogoutNoticeOut)}},
                       **errors(503)})
def logout_link():
    """A link on this site signs out, and so does a same-origin JSON GET. Anything else another site
    could make a browser send (a link, an <img>, a background fetch) only shows a logout button."""
    request = edge.request()
    head = request.method == "HEAD"  # a safe method (RFC 9110 9.3.2): a link checker never signs anyone out
    if request.wants_json:
        if head or not http.is_same_origin_fetch(request, runtime.settings):
            return http.json_response(200, LogoutNoticeOut(logged_out=False,
                                                           message="POST to /logout/ to log out.").body())
    elif head or not http.is_user_navigation(request, runtime.settings):
        return http.form_response(request, runtime.tokens, lambda ctx: pages.logout_page(ctx.csrf_token))
    return sign_out(request, everywhere=False)


@edge.route("/logout/", "POST", summary="Sign out (everywhere: every session of the user)",
            responses={**SIGNED_OUT, **errors(400, 403, 413, 415, 422, 503)})
def logout(body: Annotated[LogoutRequest, Body()] = None):  # type: ignore[assignment] (no body: no fields)
    """Sign out, with CSRF proof (a form's token, or a same-origin JSON request); no body is fine."""
    request = edge.request()
    body = body or LogoutRequest()
    edge.require_csrf(body.csrf_token)
    return sign_out(request, everywhere=body.everywhere)


def sign_out(request: Request, *, everywhere: bool) -> http.Response:
    """Revoke the session (or all of the user's), clear the cookie; the same answer when signed out."""
    token = request.cookies.get(runtime.tokens.session_cookie_name)
    if runtime.users.sign_out(token, now=runtime.now(), everywhere=everywhere):
        runtime.count("Logouts")
    cleared = [runtime.tokens.clear_session_cookie()]
    if request.wants_json:
        return http.respond(204, cookies=cleared)
    return http.redirect("/", cleared)


lambda_handler = runtime.handler(edge)
