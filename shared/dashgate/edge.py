"""The edge: each function's Powertools `APIGatewayHttpResolver` (validation on), and what dashgate adds
to it: the transport checks before a body is read, one exception handler that maps every error, 405
with Allow for the other methods of our paths, HEAD wherever GET is served, and the headers every
answer carries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from dashgate.lazy import defer_powertools

# Powertools' package inits import every resolver and every event class it has: load only the HTTP API
# resolver's modules (dashgate.lazy says why and what it saves). Before the first Powertools import.
defer_powertools()

from aws_lambda_powertools.event_handler.api_gateway import (  # noqa: E402
    APIGatewayHttpResolver,
    Response,
    ResponseBuilder,
)
from aws_lambda_powertools.event_handler.exceptions import NotFoundError  # noqa: E402
from aws_lambda_powertools.event_handler.openapi.exceptions import (  # noqa: E402
    RequestUnsupportedContentType,
    RequestValidationError,
)

# Body and Query: the functions' route signatures take them from here, after the deferral above.
from aws_lambda_powertools.event_handler.openapi.params import Body, Query  # noqa: E402, F401
from aws_lambda_powertools.utilities.data_classes.api_gateway_proxy_event import (  # noqa: E402
    APIGatewayProxyEventV2,
)

from dashgate import http  # noqa: E402
from dashgate.errors import (  # noqa: E402
    CsrfRejected,
    DashgateError,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
    ValidationFailed,
)
from dashgate.http import Request  # noqa: E402
from dashgate.models import Submission, json_object  # noqa: E402

if TYPE_CHECKING:
    from dashgate.runtime import Runtime
    from dashgate.store import User

#: Shows a form again, with the submitted values and the error of a refused POST (browser requests).
FormPage = Callable[[Request, DashgateError, dict[str, str]], Response]
Handler = Callable[..., Response]


class Resolver(APIGatewayHttpResolver):
    """Powertools keeps the event being served on a class (`BaseRouter.current_event`): one per
    process, which is all Lambda ever runs. `make run` and the tests serve several environments in
    threads of one process, so here each thread reads the event it is serving."""

    _serving = threading.local()

    @property
    def current_event(self) -> APIGatewayProxyEventV2:  # type: ignore[override]
        return self._serving.event

    def _to_proxy_event(self, event: dict) -> APIGatewayProxyEventV2:
        self._serving.event = super()._to_proxy_event(event)
        return self._serving.event


class Edge:
    """One function's routes. `route("/login/", "GET", "POST")` serves `/login/` and `/login` (API
    Gateway sends both), and HEAD with GET; any other method on those paths is a 405 with Allow."""

    def __init__(self, runtime: Runtime, *, form: FormPage | None = None, null_origin: bool = False) -> None:
        self.runtime = runtime
        self.form = form
        #: The forms are on `Referrer-Policy: no-referrer` pages, which post `Origin: null` (http.require_csrf).
        self.null_origin = null_origin
        self.app = Resolver(enable_validation=True, json_body_deserializer=json_object)
        self.app.exception_handler(Exception)(self.on_error)
        #: path -> the methods it answers, for Allow.
        self.allowed: dict[str, list[str]] = {}

    def route(self, path: str, *methods: str, **openapi: Any) -> Callable[[Handler], Handler]:
        """Register a handler for `methods` on `path` (documented) and its bare form (not documented)."""

        def register(func: Handler) -> Handler:
            for method in methods:
                self.app.route(path, method, **openapi)(func)
                self.app.route(path.rstrip("/"), method, include_in_schema=False)(func)
                if method == "GET":
                    self.app.route(path, "HEAD", include_in_schema=False)(func)
                    self.app.route(path.rstrip("/"), "HEAD", include_in_schema=False)(func)
            allowed = self.allowed.setdefault(path.rstrip("/"), [])
            allowed += [m for m in methods if m not in allowed]
            if "GET" in methods and "HEAD" not in allowed:
                allowed.append("HEAD")
            return func

        return register

    def request(self) -> Request:
        """The request being served, read once."""
        request = self.app.context.get("dashgate_request")
        if request is None:
            request = Request.from_event(self.app.current_event.raw_event)
            self.app.append_context(dashgate_request=request)
        return request

    def signed_in_user(self) -> User | None:
        """The user whose session cookie the request being served carries, or None."""
        request, runtime = self.request(), self.runtime
        return runtime.users.current_user(request.cookies.get(runtime.tokens.session_cookie_name), now=runtime.now())

    # -- serving -----------------------------------------------------------------------------------
    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """The Lambda answer to one event: transport checks, then the resolver; never an exception."""
        try:
            event = http.admit(event)
        except DashgateError as err:
            return self.refuse(event, err)
        try:
            return self.finish(http.method_of(event), self.app.resolve(event, context))
        except Exception as exc:  # what the exception handler could not answer (its form needed the keys...)
            return self.refuse(event, exc if isinstance(exc, DashgateError) else DashgateError())

    def refuse(self, event: dict[str, Any], err: DashgateError) -> dict[str, Any]:
        """The answer to an error raised outside the resolver's own handling."""
        self.log(err)
        request = Request.from_event(event)
        response = self.error_page(request, err, {})
        return self.finish(request.method, ResponseBuilder(response).build(APIGatewayProxyEventV2(event)))

    def finish(self, method: str, result: dict[str, Any]) -> dict[str, Any]:
        """Add the headers every answer carries; HEAD gets the GET answer without its body."""
        headers = result.setdefault("headers", {})
        for name, value in http.default_headers(self.runtime.settings, headers.get("Content-Type")).items():
            headers.setdefault(name, value)
        if not result.get("cookies"):
            result.pop("cookies", None)
        if method == "HEAD":
            result["body"] = ""
        return result

    def on_error(self, exc: Exception) -> Response:
        """The one exception handler: every error of a request (ours, validation, unknown path or
        method, a bug) becomes the SPEC's answer; a bug is logged and answered 500 with no detail."""
        request = self.request()
        err = self.dashgate_error(exc, request)
        self.log(err)
        return self.error_page(request, err, self.submitted(request))

    def error_page(self, request: Request, err: DashgateError, values: dict[str, str]) -> Response:
        """A refused browser POST shows its form again; anything else, or a form that cannot be shown
        (its CSRF token needs the signing keys), is the error's page or JSON."""
        if self._shows_form(request, err):
            try:
                return self.form(request, err, values)
            except DashgateError as failed:
                self.log(failed)
                err = failed
        return http.error_response(request, err)

    def log(self, err: DashgateError) -> None:
        """A bug with its traceback; a dependency's failure with its cause; a refusal with its status
        and code (a failed login, a CSRF or throttling refusal: the events a security team follows)."""
        if type(err) is DashgateError:
            self.runtime.logger.exception("Unhandled error")
        elif err.status < 500:
            self.runtime.logger.info("Refused", extra={"status": err.status, "error": err.code})
        else:
            self.runtime.log_error(err)

    def dashgate_error(self, exc: Exception, request: Request) -> DashgateError:
        """What an exception means to the client."""
        if isinstance(exc, DashgateError):
            return exc
        if isinstance(exc, NotFoundError):
            allowed = self.allowed.get(request.path.rstrip("/"))
            return MethodNotAllowed(", ".join(allowed)) if allowed else NotFound()
        if isinstance(exc, RequestUnsupportedContentType):
            return UnsupportedMediaType()
        if isinstance(exc, RequestValidationError):
            # A form from another site is refused as such, whatever its fields (SPEC: CSRF).
            csrf = self.csrf_error(request)
            return csrf or ValidationFailed(self.body_model().fields_of(list(exc.errors())))
        return DashgateError()

    def submitted(self, request: Request) -> dict[str, str]:
        """The fields of a submitted form (first values), to fill the form in again; {} for JSON."""
        if request.content_type != http.FORM_TYPE:
            return {}
        return {k: v[0] for k, v in parse_qs(self.app.current_event.decoded_body or "", keep_blank_values=True).items()}

    def require_csrf(self, csrf_token: object) -> None:
        """Refuse the POST being served unless it comes from this site (http.require_csrf, with this
        function's pages' rule for `Origin: null`): the one check the handlers and the error path share."""
        http.require_csrf(self.request(), csrf_token, self.runtime.tokens, self.runtime.settings,
                          null_origin=self.null_origin)

    def csrf_error(self, request: Request) -> CsrfRejected | None:
        """The CSRF refusal a POST would get, if any (the handlers check it again once the body is valid)."""
        if request.method != "POST" or self.runtime.keys is None:
            return None
        try:
            self.require_csrf(self.submitted(request).get("csrf_token"))
        except CsrfRejected as err:
            return err
        return None

    def body_model(self) -> type[Submission]:
        """The request body model of the route being served."""
        route = self.app.context.get("_route")
        for param in getattr(getattr(route, "dependant", None), "body_params", []):
            if isinstance(param.type_, type) and issubclass(param.type_, Submission):
                return param.type_
        return Submission

    def _shows_form(self, request: Request, err: DashgateError) -> bool:
        return self.form is not None and request.method == "POST" and not request.wants_json and err.status < 500
