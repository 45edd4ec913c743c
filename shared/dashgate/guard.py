"""Guard: WSGI middleware that puts dashgate's sign-in in front of a Flask or Dash host, in one line.

    from dashgate.guard import DashgateGuard
    app.wsgi_app = DashgateGuard(app.wsgi_app)          # Flask; for Dash: server.wsgi_app

It verifies the session cookie, or, behind the gateway's authorizer, the signed identity assertion
the gateway adds (no database query); gives the app the user in `environ["dashgate.user"]`; sends
signed-out page requests to `/login/?next=<the page>` (the seed's `login_required`); and answers
background requests (Dash's `/_dash-update-component`, XHR, JSON) with 401 JSON, so an expired
session returns the page to the login form instead of failing quietly. When origin-verify values are
configured, it refuses every request that did not come through the gateway (403).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from dashgate.assertions import SignedInUser, assertion_keys, origin_matches, origin_values
from dashgate.errors import ServiceUnavailable
from dashgate.http import parse_cookies, prefers_json
from dashgate.sessions import KeyRing
from dashgate.settings import Settings
from dashgate.store import Store
from dashgate.users import Users

__all__ = ["DashgateGuard", "SignedInUser", "current_user"]

#: The signed identity assertion the gateway's authorizer routes add (every other route removes it).
IDENTITY = "HTTP_X_DASHGATE_IDENTITY"
#: The gateway adds this to every request it proxies; its value is a secret the host checks.
ORIGIN_VERIFY = "HTTP_X_DASHGATE_ORIGIN_VERIFY"
#: Headers the app never sees: the assertion, the origin secret, and the unsigned identity headers of
#: earlier versions (a client could still send them; `x_dashgate_user_id` reaches WSGI as the same
#: key on servers that accept underscores).
STRIPPED = (IDENTITY, ORIGIN_VERIFY, "HTTP_X_DASHGATE_USER_ID", "HTTP_X_DASHGATE_EMAIL",
            "HTTP_X_DASHGATE_FIRST_NAME", "HTTP_X_DASHGATE_IDENTITY_VERIFY")
#: Dash's background endpoints (dash/dash.py routes), answered with 401 JSON, never a redirect.
DASH_BACKGROUND = ("/_dash-", "/_reload-hash", "/_favicon")
#: What a Dash app whose routes live at the root (`routes_pathname_prefix="/"`: an app at "/", or one
#: behind a proxy that strips its prefix) serves there: its layout, its callbacks' wiring and the
#: callbacks themselves. Protected with the pages by default (`protect_dash_root=False` turns it off,
#: for a public Dash app at the root).
DASH_ROOT_ENDPOINTS = ("/_dash-layout", "/_dash-dependencies", "/_dash-update-component", "/_reload-hash")

MANY_SLASHES = re.compile("/{2,}")

#: Database connections the guard may hold: one per host thread serving a protected page at once.
POOL_SIZE = 8

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def current_user(environ: dict[str, Any]) -> SignedInUser | None:
    """The signed-in user of this request (None when signed out); in Flask: `current_user(request.environ)`."""
    return environ.get("dashgate.user")


class DashgateGuard:
    """Sign-in in front of the paths under `protect` (default `/dash`, and Dash's root endpoints);
    other paths pass through."""

    def __init__(self, app: WSGIApp, *, protect: tuple[str, ...] = ("/dash",), login_path: str = "/login/",
                 settings: Settings | None = None, pool_size: int = POOL_SIZE, protect_dash_root: bool = True,
                 exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.protect = protect + (DASH_ROOT_ENDPOINTS if protect_dash_root and protect else ())
        #: Paths served without the origin check (a load balancer's own health check of the host).
        self.exempt = exempt
        self.login_path = login_path
        s = self.settings = settings or Settings.from_env()
        #: Each read again every SIGNING_KEYS_TTL_SECONDS, like the functions' (a rotation reaches a running host).
        self.keys = KeyRing.for_sessions(s)
        self.assertions = assertion_keys(s)
        self.origins = origin_values(s)
        wanted = [self.keys] + [self.assertions] * s.has_identity_keys + [self.origins] * s.enforces_origin
        for ring in wanted:
            _ = ring.current  # fail at start-up, not at the first request, when a secret cannot be read
        #: A pool: WSGI servers call the guard from many threads, and a connection serves one at a time.
        self.store = Store.from_settings(s, application_name="dashgate-guard", pool_size=pool_size)

    @property
    def users(self) -> Users:
        """The service layer over the guard's store and current keys."""
        return Users(self.settings, self.store, self.keys.current)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Check the origin, identify, then pass on, redirect to the login page, or answer 401."""
        # Routers merge repeated slashes (Werkzeug routes "//dash/" to "/dash/"): so must the check.
        path = MANY_SLASHES.sub("/", environ.get("PATH_INFO", ""))
        protected = any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.protect)
        try:
            if (self.settings.enforces_origin and path not in self.exempt
                    and not origin_matches(environ.get(ORIGIN_VERIFY, ""), self.origins.current)):
                return _reply(start_response, "403 Forbidden", "text/plain; charset=utf-8",
                              b"This host serves requests through its gateway only.")
            trusted = self._from_gateway(environ)
            for name in STRIPPED:  # the app never sees identity headers it could not trust, nor the secret
                environ.pop(name, None)
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
        """The user of a signed, unexpired identity assertion from the gateway's authorizer."""
        assertion = environ.get(IDENTITY)
        if not assertion or not self.settings.has_identity_keys:
            return None
        return self.assertions.current.verify(assertion, datetime.now(UTC))

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
