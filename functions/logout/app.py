"""Lambda entry point for GET and POST /logout/: revoke the session and clear the cookie."""

from __future__ import annotations

from dashgate import http, pages
from dashgate.errors import MethodNotAllowed
from dashgate.http import Request, Response
from dashgate.runtime import Runtime

runtime = Runtime("logout", "/logout")


def logout(request: Request) -> Response:
    """A link on this site and POST (with CSRF proof) sign out; any other GET (another site, an
    <img>, a background fetch) only shows a logout button."""
    if request.method == "GET" and not http.is_user_navigation(request):
        if request.wants_json:
            return http.json_response(200, {"logged_out": False, "message": "POST to /logout/ to log out."})
        return http.form_response(request, runtime.tokens, 200, lambda ctx: pages.logout_page(ctx.csrf_token))
    everywhere = False
    if request.method == "POST":
        data = request.data()
        http.require_csrf(request, data, runtime.tokens, runtime.settings)
        everywhere = http.flag_field(data, "everywhere")  # form everywhere=1, JSON {"everywhere": true}
    elif request.method != "GET":
        raise MethodNotAllowed()
    token = request.cookies.get(runtime.tokens.session_cookie_name)
    if runtime.users.sign_out(token, now=runtime.now(), everywhere=everywhere):
        runtime.count("Logouts")
    cleared = [runtime.tokens.clear_session_cookie()]
    if request.wants_json:
        return Response(204, cookies=cleared)
    return http.redirect("/", cleared)


lambda_handler = runtime.handler(logout)
