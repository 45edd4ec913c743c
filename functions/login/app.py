"""Lambda entry point for GET and POST /login/: the sign-in form and session creation."""

from __future__ import annotations

from dashgate import http, pages
from dashgate.errors import DashgateError, InvalidCredentials, MethodNotAllowed, Throttled
from dashgate.http import Request, Response
from dashgate.runtime import Runtime
from dashgate.users import SignIn, normalise_email

runtime = Runtime("login", "/login", passwords=True)


def login(request: Request) -> Response:
    """Route by method."""
    if request.method == "GET":
        return show_form(request)
    if request.method == "POST":
        return sign_in(request)
    raise MethodNotAllowed()


def show_form(request: Request) -> Response:
    """Signed in already: go on to `next`. Otherwise the form, carrying `next` through."""
    next_url = http.safe_next(request.query.get("next"), runtime.settings.default_redirect)
    user = runtime.users.current_user(request.cookies.get(runtime.tokens.session_cookie_name), now=runtime.now())
    if request.wants_json:
        return http.json_response(200, {"user": user.as_json() if user else None})
    if user is not None:
        return http.redirect(next_url)
    return form(request, 200, next_url, {})


def form(request: Request, status: int, next_url: str, values: dict, err: DashgateError | None = None) -> Response:
    """The login page, with the error of a refused attempt when there is one."""
    return http.form_response(
        request, runtime.tokens, status,
        lambda ctx: pages.login_page(ctx.csrf_token, ctx.messages, next_url=next_url, values=values,
                                     errors=getattr(err, "fields", None), alert=err.message if err else None),
        headers=http.error_headers(err) if err else None,
    )


def sign_in(request: Request) -> Response:
    """Check the password, start a new session, and send the browser on."""
    values: dict = {}
    next_url = http.safe_next(request.query.get("next"), runtime.settings.default_redirect)
    try:
        data = request.data()
        next_url = http.safe_next(data.get("next") or request.query.get("next"), runtime.settings.default_redirect)
        http.require_csrf(request, data, runtime.tokens, runtime.settings)
        values = {"email": http.text_field(data, "email"), "remember_me": http.flag_field(data, "remember_me")}
        credentials = SignIn(normalise_email(values["email"]), http.text_field(data, "password", strip=False),
                             values["remember_me"])
        tokens = runtime.tokens
        signed_in = runtime.users.authenticate(credentials, ip=request.source_ip, now=runtime.now(),
                                               presented_token=request.cookies.get(tokens.session_cookie_name),
                                               device_token=request.cookies.get(tokens.device_cookie_name))
    except DashgateError as err:
        if isinstance(err, (InvalidCredentials, Throttled)):
            runtime.count("LoginsFailed" if isinstance(err, InvalidCredentials) else "LoginsThrottled")
        if request.wants_json or err.status >= 500:
            raise
        return form(request, err.status, next_url, values, err)
    runtime.count("LoginsSucceeded")
    cookies = [runtime.tokens.session_cookie(signed_in.token, signed_in.cookie_max_age),
               runtime.tokens.device_cookie(signed_in.device_token)]
    if request.wants_json:
        return http.json_response(200, {"user": signed_in.user.as_json()}, cookies=cookies)
    return http.redirect(next_url, cookies)


lambda_handler = runtime.handler(login)
