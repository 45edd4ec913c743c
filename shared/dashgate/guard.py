"""Guard: WSGI middleware that puts dashgate's sign-in in front of a Flask or Dash host, in one line.

    from dashgate.guard import DashgateGuard
    app.wsgi_app = DashgateGuard(app.wsgi_app)          # Flask; for Dash: server.wsgi_app

It verifies the session cookie (or, behind the gateway's authorizer, the identity headers the
gateway adds, once the origin-verify secret matches), gives the app the user in
`environ["dashgate.user"]`, sends signed-out page requests to `/login/?next=<the page>` (the seed's
`login_required`), and answers background requests (Dash's `/_dash-update-component`, XHR, JSON)
with 401 JSON, so an expired session returns the page to the login form instead of failing quietly.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from dashgate.errors import ServiceUnavailable
from dashgate.http import parse_cookies, prefers_json
from dashgate.sessions import KeyRing
from dashgate.settings import Settings
from dashgate.store import Store
from dashgate.users import Users

#: The identity headers the gateway's authorizer route adds (and every other route removes).
USER_ID, EMAIL, FIRST_NAME = "HTTP_X_DASHGATE_USER_ID", "HTTP_X_DASHGATE_EMAIL", "HTTP_X_DASHGATE_FIRST_NAME"
#: Set by the gateway, with the secret, only on the routes its authorizer checked. The identity
#: headers are trusted only beside it: a client could smuggle an identity header past the gateway's
#: removal (`x_dashgate_user_id` reaches WSGI as the same key on servers that accept underscores),
#: but never this header's value, which it cannot know.
IDENTITY_VERIFY = "HTTP_X_DASHGATE_IDENTITY_VERIFY"
IDENTITY_HEADERS = (USER_ID, EMAIL, FIRST_NAME, IDENTITY_VERIFY)
#: Dash's background endpoints (dash/dash.py routes), answered with 401 JSON, never a redirect.
DASH_BACKGROUND = ("/_dash-", "/_reload-hash", "/_favicon")

#: Database connections the guard may hold: one per host thread serving a protected page at once.
POOL_SIZE = 8

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class SignedInUser:
    """Who is signed in, as the host app sees it."""

    id: int
    email: str
    first_name: str | None


def current_user(environ: dict[str, Any]) -> SignedInUser | None:
    """The signed-in user of this request (None when signed out); in Flask: `current_user(request.environ)`."""
    return environ.get("dashgate.user")


class DashgateGuard:
    """Sign-in in front of the paths under `protect` (default `/dash`); other paths pass through."""

    def __init__(self, app: WSGIApp, *, protect: tuple[str, ...] = ("/dash",), login_path: str = "/login/",
                 settings: Settings | None = None, pool_size: int = POOL_SIZE) -> None:
        self.app = app
        self.protect = protect
        self.login_path = login_path
        self.settings = settings or Settings.from_env()
        #: Read again every SIGNING_KEYS_TTL_SECONDS, like the functions' (a rotation reaches a running host).
        self.keys = KeyRing(self.settings)
        _ = self.keys.tokens  # fail at start-up, not at the first request, when no key can be read
        #: A pool: WSGI servers call the guard from many threads, and a connection serves one at a time.
        self.store = Store.from_settings(self.settings, application_name="dashgate-guard", pool_size=pool_size)

    @property
    def users(self) -> Users:
        """The service layer over the guard's store and current keys."""
        return Users(self.settings, self.store, self.keys.tokens)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Identify, then pass on, redirect to the login page, or answer 401."""
        trusted = self._from_gateway(environ)
        for name in IDENTITY_HEADERS:  # the app never sees identity headers it could not trust
            environ.pop(name, None)
        path = environ.get("PATH_INFO", "")
        protected = any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.protect)
        try:
            # Cookies are looked up (one query) only where they matter, not for every static asset.
            user = trusted or (self._from_cookie(environ) if protected else None)
        except ServiceUnavailable:
            return _reply(start_response, "503 Service Unavailable", "text/plain; charset=utf-8",
                          b"The sign-in service is temporarily unavailable.")
        environ["dashgate.user"] = user
        if user is not None or not protected:
            return self.app(environ, start_response)
        return self._signed_out(environ, start_response)

    def _from_gateway(self, environ: dict[str, Any]) -> SignedInUser | None:
        """Identity headers, only when the request proves the gateway's authorizer checked it."""
        secret = self.settings.origin_verify_secret
        presented = environ.get(IDENTITY_VERIFY, "")
        if not secret or not presented or not hmac.compare_digest(presented.encode(), secret.encode()):
            return None
        user_id = environ.get(USER_ID, "")
        if not user_id.isdigit():
            return None
        return SignedInUser(int(user_id), environ.get(EMAIL, ""), environ.get(FIRST_NAME) or None)

    def _from_cookie(self, environ: dict[str, Any]) -> SignedInUser | None:
        users = self.users
        token = parse_cookies([environ.get("HTTP_COOKIE", "")]).get(users.tokens.session_cookie_name)
        if token is None:
            return None
        user = users.current_user(token, now=datetime.now(UTC))
        return SignedInUser(user.id, user.email, user.first_name) if user else None

    def _signed_out(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        page = quote(environ.get("PATH_INFO", "/"), safe="/")
        if environ.get("QUERY_STRING"):
            page += "?" + environ["QUERY_STRING"]
        login_url = f"{self.login_path}?next={quote(page, safe='')}"
        if _is_background(environ):
            body = json.dumps({"error": "unauthenticated", "message": "Your session has ended. Please log in again.",
                               "login_url": login_url}).encode()
            return _reply(start_response, "401 Unauthorized", "application/json", body)
        start_response("303 See Other", [("Location", login_url), ("Cache-Control", "no-store"),
                                         ("Content-Length", "0")])
        return [b""]


def _is_background(environ: dict[str, Any]) -> bool:
    """Dash callbacks, XHR and JSON requests: a redirect would fail silently there."""
    path = environ.get("PATH_INFO", "")
    return (any(marker in path for marker in DASH_BACKGROUND)
            or environ.get("HTTP_X_REQUESTED_WITH", "").lower() == "xmlhttprequest"
            or environ.get("CONTENT_TYPE", "").startswith("application/json")
            or prefers_json(environ.get("HTTP_ACCEPT", "")))


def _reply(start_response: Callable[..., Any], status: str, content_type: str, body: bytes) -> Iterable[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]
