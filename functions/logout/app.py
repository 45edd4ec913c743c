"""Lambda entry point for GET and POST /logout/: revoke the session and clear the cookie."""

from __future__ import annotations

from dashgate import http, pages
from dashgate.errors import MethodNotAllowed
from dashgate.http import Request, Response
from dashgate.runtime import Runtime, utcnow

runtime = Runtime("logout", "/logout")


def logout(request: Request) -> Response:
    """GET from this site and POST (with CSRF proof) sign out; a cross-site GET only asks."""
    if request.method == "GET" and http.is_cross_site(request):
        if request.wants_json:
            return http.json_response(200, {"logged_out": False, "message": "POST to /logout/ to log out."})
        return http.form_response(request, runtime.tokens, 200, lambda ctx: pages.logout_page(ctx.csrf_token))
    if request.method == "POST":
        http.require_csrf(request, request.data(), runtime.tokens, runtime.settings)
    elif request.method != "GET":
        raise MethodNotAllowed()
    if runtime.users.sign_out(request.cookies.get(runtime.tokens.session_cookie_name), now=utcnow()):
        runtime.count("Logouts")
    cleared = [runtime.tokens.clear_session_cookie()]
    if request.wants_json:
        return Response(204, cookies=cleared)
    return http.redirect("/", cleared)


lambda_handler = runtime.handler(logout)
