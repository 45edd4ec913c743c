"""The $default route locally: a real HTTP proxy to DASHBOARD_URL, or a small built-in dashboard."""

from __future__ import annotations

import http.client
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote, urlsplit

from dashgate import pages
from dashgate.http import parse_cookies
from dashgate.users import Users

#: Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded by a proxy.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}

Reply = tuple[int, list[tuple[str, str]], bytes]


def proxy(base_url: str, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None) -> Reply:
    """Forward the request to the dashboard host and its answer back, Set-Cookie headers included."""
    upstream = urlsplit(base_url)
    connection_class = http.client.HTTPSConnection if upstream.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(upstream.netloc, timeout=30)
    forwarded = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", upstream.netloc)
        for name, value in forwarded:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body or b"")))
        connection.endheaders(body or b"")
        response = connection.getresponse()
        reply_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        return response.status, reply_headers, response.read()
    except OSError as exc:
        return 502, [("Content-Type", "text/plain; charset=utf-8")], f"Bad gateway: {exc}".encode()
    finally:
        connection.close()


class BuiltInDashboard:
    """`/` links to sign-up and sign-in; `/dash/` greets the signed-in user; others go to the login page."""

    def __init__(self, users: Users) -> None:
        self.users = users

    def handle(self, method: str, path: str, query: str, headers: list[tuple[str, str]]) -> Reply:
        """Serve the built-in pages."""
        if path == "/":
            return _html(200, pages.layout("dashgate (local)", (
                "<p>The dashboard's front door, running on this machine.</p>"
                '<p><a href="/register/">Create an account</a> · <a href="/login/">Log in</a> · '
                '<a href="/dash/">Dashboard</a></p>')))
        if not path.startswith("/dash"):
            return _html(404, pages.message_page("Not found", "There is nothing here."))
        cookie_header = ";".join(v for k, v in headers if k.lower() == "cookie")
        token = parse_cookies([cookie_header]).get(self.users.tokens.session_cookie_name)
        user = self.users.current_user(token, now=datetime.now(UTC))
        if user is None:
            target = path + (f"?{query}" if query else "")
            return 303, [("Location", f"/login/?next={quote(target, safe='')}")], b""
        return _html(200, pages.layout("Dashboard", (
            f"<p>Hello, {escape(user.first_name or user.email)}!</p>"
            "<p>This is the built-in stand-in for your dashboard (set DASHBOARD_URL to proxy a real one).</p>"
            '<p class="alt"><a href="/logout/">Log out</a></p>')))


def _html(status: int, body: str) -> Reply:
    return status, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")], body.encode()
