"""Lambda entry point for GET and POST /register/: the sign-up form and account creation."""

from __future__ import annotations

from dashgate import http, pages
from dashgate.errors import DashgateError, MethodNotAllowed, Throttled
from dashgate.http import Request, Response
from dashgate.runtime import Runtime
from dashgate.users import SignUp, normalise_email

#: The seed app's wording, shown once on the login page after a successful registration.
REGISTERED = "You have successfully registered! You may now login."

runtime = Runtime("register", "/register", passwords=True)


def register(request: Request) -> Response:
    """Route by method."""
    if request.method == "GET":
        return show_form(request)
    if request.method == "POST":
        return create_account(request)
    raise MethodNotAllowed()


def show_form(request: Request, status: int = 200, values: dict | None = None,
              err: DashgateError | None = None) -> Response:
    """The empty form, or the form again with the submitted values and the errors."""
    if request.wants_json and err is None:
        return http.json_response(200, {"fields": ["email", "first_name", "last_name", "password", "password_confirm"]})
    errors = getattr(err, "fields", None)
    alert = err.message if err is not None else None
    return http.form_response(request, runtime.tokens, status,
                              lambda ctx: pages.register_page(ctx.csrf_token, ctx.messages, values=values,
                                                              errors=errors, alert=alert),
                              headers=http.error_headers(err) if err else None)


def create_account(request: Request) -> Response:
    """Validate, create the user, and send browsers to the login page with a flash message."""
    values: dict = {}
    try:
        data = request.data()
        http.require_csrf(request, data, runtime.tokens, runtime.settings)
        values = {name: http.text_field(data, name) for name in ("email", "first_name", "last_name")}
        form = SignUp(
            email=normalise_email(values["email"]),
            password=http.text_field(data, "password", strip=False),
            # JSON clients may omit the confirmation; browsers always send it (SPEC: POST /register/).
            password_confirm=http.text_field(data, "password_confirm", strip=False)
            if "password_confirm" in data or not request.wants_json else None,
            first_name=values["first_name"],
            last_name=values["last_name"],
        )
        user = runtime.users.register(form, ip=request.source_ip, now=runtime.now(),
                                      confirm_required=not request.wants_json)
    except DashgateError as err:
        if isinstance(err, Throttled):
            runtime.count("RegistrationsThrottled")
        if request.wants_json or err.status >= 500:
            raise
        return show_form(request, err.status, values, err)
    runtime.count("Registrations")
    if request.wants_json:
        return http.json_response(201, {"user": user.as_json()})
    return http.redirect("/login/", [runtime.tokens.flash_cookie([REGISTERED])])


lambda_handler = runtime.handler(register)
