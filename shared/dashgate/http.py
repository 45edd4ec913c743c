"""HTTP: what dashgate reads of a payload 2.0 request, the transport checks made before the resolver
reads a body, CSRF, safe redirects, flash, and the response shapes (pages, JSON, errors).

Routing, body parsing and validation are Powertools' and pydantic's (`dashgate.edge`,
`dashgate.models`); this module stays free of both, so the dashboard host's guard can use it."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

from dashgate import pages
from dashgate.errors import (
    BadRequest,
    CsrfRejected,
    DashgateError,
    MethodNotAllowed,
    PayloadTooLarge,
    Throttled,
    UnsupportedMediaType,
    ValidationFailed,
)
from dashgate.settings import MAX_BODY_BYTES, Settings

if TYPE_CHECKING:  # health answers without cookies or signing keys: it need not import itsdangerous
    from aws_lambda_powertools.event_handler.api_gateway import Response
    from aws_lambda_powertools.shared.cookies import Cookie

    from dashgate.sessions import Tokens

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"
#: Longest `next` we follow; a longer one is not a page of ours.
MAX_NEXT_LENGTH = 2048
#: Headers on every HTML page: no framing (clickjacking), no scripts, forms post only to us.
HTML_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP API payload 2.0 event that dashgate reads."""

    method: str
    path: str
    headers: dict[str, str]
    cookies: dict[str, str]
    query: dict[str, str]
    raw_body: str
    is_base64: bool
    source_ip: str
    request_id: str

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Request:
        """Read an event; malformed parts read as empty rather than raising."""
        http_ctx = (event.get("requestContext") or {}).get("http") or {}
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        return cls(
            method=method_of(event),
            path=str(event.get("rawPath") or http_ctx.get("path") or "/"),
            headers=headers,
            cookies=parse_cookies(event.get("cookies") or []),
            query={k: v[0] for k, v in parse_qs(str(event.get("rawQueryString") or "")).items()},
            raw_body=event.get("body") or "",
            is_base64=bool(event.get("isBase64Encoded")),
            source_ip=str(http_ctx.get("sourceIp") or "unknown"),
            request_id=str((event.get("requestContext") or {}).get("requestId") or ""),
        )

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @cached_property
    def wants_json(self) -> bool:
        """A JSON request: a JSON body (POST), or an Accept that prefers JSON to HTML (GET). (Read once:
        a request asks several times.)"""
        if self.method == "POST" and self.content_type == JSON_TYPE:
            return True
        return prefers_json(self.headers.get("accept", ""))


def method_of(event: dict[str, Any]) -> str:
    """The request method of an event (what `Request.from_event` reads, without reading the rest)."""
    return str(((event.get("requestContext") or {}).get("http") or {}).get("method") or "GET").upper()


def admit(event: dict[str, Any]) -> dict[str, Any]:
    """Check the transport before anything reads the body: at most 16 KiB (413), valid base64 and UTF-8
    (400), a form or JSON (415). Returns the event with its body as plain text, so that the resolver
    parses exactly what was checked. An empty body passes whatever its type (a logout POST)."""
    raw = event.get("body") or ""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw:  # no body: no fields, whatever the type says (a logout POST; CSRF rules still apply)
        if media_type not in (FORM_TYPE, JSON_TYPE):
            headers.pop("content-type", None)
        return {**event, "headers": headers}
    if len(raw) > MAX_BODY_BYTES * 4 // 3 + 4:
        raise PayloadTooLarge()
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("The body is not valid base64.") from None
    else:
        body = raw.encode("utf-8", "surrogatepass")
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    if media_type not in (FORM_TYPE, JSON_TYPE):
        raise UnsupportedMediaType()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The body is not valid UTF-8.") from None
    if media_type == FORM_TYPE:
        try:
            parse_qsl(text, keep_blank_values=True, errors="strict")
        except UnicodeError:
            raise BadRequest("The form data could not be read.") from None
    # Powertools reads `content-type` case-sensitively and parses any JSON-like type as JSON: pass
    # the media type we checked.
    headers["content-type"] = media_type
    return {**event, "body": text, "isBase64Encoded": False, "headers": headers}


#: The pages whose URL held, or whose form holds, a one-time token (reset, confirm): no Referer leaves them.
NO_REFERRER = {"Referrer-Policy": "no-referrer"}


def default_headers(settings: Settings, content_type: str | None) -> dict[str, str]:
    """Headers every answer carries: never cached, no sniffing, HSTS over https, and the page rules
    (no framing, no scripts) on HTML."""
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if content_type == HTML_TYPE:
        headers.update(HTML_SECURITY_HEADERS)
    if settings.session_cookie_secure:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


def respond(status: int, body: str = "", content_type: str | None = HTML_TYPE, *,
            headers: dict[str, str] | None = None, cookies: list[Cookie | str] | None = None) -> Response:
    """A Powertools response (Set-Cookie travels in `cookies`: API Gateway's rule for payload 2.0)."""
    from aws_lambda_powertools.event_handler.api_gateway import Response

    return Response(status, content_type if body else None, body, headers=headers or {}, cookies=cookies or [])


def json_response(status: int, payload: str, **kwargs: Any) -> Response:
    """A JSON response; `payload` is a model's JSON (`models.Reply.body()`)."""
    return respond(status, payload, JSON_TYPE, **kwargs)


def redirect(location: str, cookies: list[Cookie | str] | None = None) -> Response:
    """303 See Other to a location already known to be local."""
    return respond(303, headers={"Location": location}, cookies=cookies)


def error_response(request: Request, err: DashgateError) -> Response:
    """Any error as a response, the one place they are mapped: JSON for JSON requests, else a page.
    (Form routes show their form again instead, for the errors a user can correct.)"""
    if request.wants_json:
        return json_response(err.status, json.dumps(error_payload(err), separators=(",", ":")),
                             headers=error_headers(err))
    title = "Service unavailable" if err.status >= 500 else "Something is not right"
    return respond(err.status, pages.message_page(title, err.message), headers=error_headers(err))


def error_payload(err: DashgateError) -> dict[str, Any]:
    """The SPEC's JSON error body."""
    payload: dict[str, Any] = {"error": err.code, "message": err.message}
    if isinstance(err, ValidationFailed):
        payload["fields"] = err.fields
    return payload


def error_headers(err: DashgateError) -> dict[str, str]:
    """Retry-After for throttling (RFC 9110 10.2.3), Allow for a wrong method (RFC 9110 15.5.6)."""
    if isinstance(err, Throttled):
        return {"Retry-After": str(err.retry_after)}
    if isinstance(err, MethodNotAllowed):
        return {"Allow": err.allow}
    return {}


# -- request reading helpers -----------------------------------------------------------------
def parse_cookies(pairs: list[str]) -> dict[str, str]:
    """payload 2.0 `cookies` ("a=b" strings, possibly several per entry) into a dict; first wins."""
    cookies: dict[str, str] = {}
    for entry in pairs:
        for pair in str(entry).split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name and name not in cookies:
                cookies[name] = value.strip().strip('"')
    return cookies


def prefers_json(accept: str) -> bool:
    """True when Accept ranks application/json above text/html (RFC 9110 12.5.1 q-values)."""
    ranks = {}
    for item in accept.split(","):
        media, *params = [p.strip() for p in item.split(";")]
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        ranks[media.lower()] = max(q, ranks.get(media.lower(), 0.0))
    json_q = ranks.get(JSON_TYPE, 0.0)
    html_q = max(ranks.get("text/html", 0.0), ranks.get("text/*", 0.0), ranks.get("*/*", 0.0) if json_q == 0 else 0.0)
    return json_q > 0 and json_q > html_q


def safe_next(value: object, default: str) -> str:
    """Follow `next` only to a local path (SPEC: CSRF and redirects); anything else is `default`."""
    if not isinstance(value, str) or not value or len(value) > MAX_NEXT_LENGTH:
        return default
    for candidate in (value, unquote(value)):
        if not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
            return default
        if "\\" in candidate or not candidate.isprintable():
            return default
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return default
    # Percent-encode anything outside ASCII so the Location header stays a valid, single line.
    return quote(value, safe="/?&=#%:@!$'()*+,;~-._")


# -- CSRF ---------------------------------------------------------------------------------------
def same_origin(request: Request, settings: Settings) -> bool:
    """True when Origin is absent, this host, or listed in ALLOWED_ORIGINS."""
    return is_ours(request.headers.get("origin"), request, settings)


def is_ours(url: str | None, request: Request, settings: Settings) -> bool:
    """True when `url` (an Origin or a Referer) is absent, on this host, or listed in ALLOWED_ORIGINS."""
    if url is None:
        return True
    parts = urlsplit(url.strip())
    origin = f"{parts.scheme}://{parts.netloc}"
    if origin in settings.allowed_origins:
        return True
    host = request.headers.get("host", "")
    scheme = request.headers.get("x-forwarded-proto") or ("https" if settings.session_cookie_secure else "http")
    return bool(host) and parts.netloc.lower() == host.lower() and parts.scheme == scheme


def is_same_origin_fetch(request: Request, settings: Settings) -> bool:
    """A request this site's own pages made: Fetch Metadata says same-origin, or (a client without it)
    neither Origin nor Referer names another site. A GET that changes state needs this."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.lower() == "same-origin"
    return is_ours(request.headers.get("origin"), request, settings) and \
        is_ours(request.headers.get("referer"), request, settings)


def is_null_origin_of_ours(request: Request) -> bool:
    """`Origin: null` on a request that Fetch Metadata says this site's own page made."""
    return request.headers.get("origin", "").strip() == "null" and \
        request.headers.get("sec-fetch-site", "").lower() == "same-origin"


def is_cross_site(request: Request) -> bool:
    """Fetch Metadata says another site started this request."""
    return request.headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site")


def is_user_navigation(request: Request, settings: Settings) -> bool:
    """A top-level navigation the user started on this site (a link or the address bar), not an
    <img>, a fetch or another site's link: the only browser GET allowed to change state (Fetch
    Metadata, W3C; a browser without it must not name another site in Origin or Referer)."""
    mode = request.headers.get("sec-fetch-mode", "navigate").lower()
    dest = request.headers.get("sec-fetch-dest", "document").lower()
    if mode != "navigate" or dest != "document":
        return False
    if request.headers.get("sec-fetch-site", "").lower() == "none":  # typed or bookmarked
        return True
    return is_same_origin_fetch(request, settings)


def require_csrf(request: Request, csrf_token: object, tokens: Tokens, settings: Settings, *,
                 null_origin: bool = False) -> None:
    """Refuse a POST from another site (Origin, Fetch Metadata) or a form without a matching token.

    `null_origin`: the form is on a page sent with `Referrer-Policy: no-referrer`, and a browser posts
    such a form with `Origin: null` (Fetch, "serializing a request origin"). It is accepted when Fetch
    Metadata, which no page can set, says same-origin; the token is still required."""
    if not same_origin(request, settings) and not (null_origin and is_null_origin_of_ours(request)):
        raise CsrfRejected()
    if is_cross_site(request) and request.headers.get("origin", "").rstrip("/") not in settings.allowed_origins:
        raise CsrfRejected()
    if request.content_type == JSON_TYPE:
        return  # a cross-site page cannot send application/json without a CORS preflight we never grant
    if not isinstance(csrf_token, str) or not tokens.csrf_matches(request.cookies.get(tokens.csrf_cookie_name),
                                                                 csrf_token):
        raise CsrfRejected()


@dataclass(frozen=True)
class PageContext:
    """What every form page needs: a CSRF token, flashed messages, cookies to send with it, and the
    error of a refused POST shown again (its message and, for fields, what is wrong with each)."""

    csrf_token: str
    messages: list[str]
    cookies: list[Cookie]
    alert: str | None = None
    errors: dict[str, str] | None = None


def page_context(request: Request, tokens: Tokens, err: DashgateError | None = None) -> PageContext:
    """Reuse the browser's CSRF cookie (or start one) and take the flashed messages, once."""
    cookies: list[Cookie] = []
    secret = request.cookies.get(tokens.csrf_cookie_name)
    if not secret or len(secret) > 128:
        secret = tokens.new_csrf_secret()
        cookies.append(tokens.csrf_cookie(secret))
    messages: list[str] = []
    flash = request.cookies.get(tokens.flash_cookie_name)
    if flash is not None:
        messages = tokens.flash_messages(flash)
        cookies.append(tokens.clear_flash_cookie())
    return PageContext(tokens.csrf_token(secret), messages, cookies, err.message if err else None,
                       getattr(err, "fields", None))


def form_response(request: Request, tokens: Tokens, render: Callable[[PageContext], str], *,
                  err: DashgateError | None = None, headers: dict[str, str] | None = None) -> Response:
    """An HTML form page with its CSRF token and flashed messages; shown again after a refused POST
    (`err`), with the error's status and headers (Retry-After...)."""
    ctx = page_context(request, tokens, err)
    return respond(err.status if err else 200, render(ctx), cookies=ctx.cookies,
                   headers={**(headers or {}), **(error_headers(err) if err else {})})
