"""The $default route locally: a real HTTP proxy to DASHBOARD_URL, or a small built-in dashboard."""

from __future__ import annotations

import http.client
import io
from html import escape
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from dashgate import pages
from dashgate.guard import current_user

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
    except (OSError, http.client.HTTPException) as exc:  # unreachable, or not answering HTTP
        return 502, [("Content-Type", "text/plain; charset=utf-8")], f"Bad gateway: {exc}".encode()
    finally:
        connection.close()


def builtin_dashboard(environ: dict, start_response) -> list[bytes]:
    """The stand-in dashboard host (a WSGI app, behind DashgateGuard like a real one): `/` links to
    sign-up and sign-in; `/dash` and `/dash/...` greet the signed-in user; anything else is 404."""
    path = environ.get("PATH_INFO", "/")
    # Exactly the paths the guard protects (`/dash;/`, `/dash%00/` or `/dashx` are not): only there
    # is a signed-in user certain.
    user = current_user(environ) if path == "/dash" or path.startswith("/dash/") else None
    if path == "/":
        status, headers, body = _html(200, pages.layout("dashgate (local)", (
            "<p>The dashboard's front door, running on this machine.</p>"
            '<p><a href="/register/">Create an account</a> · <a href="/login/">Log in</a> · '
            '<a href="/dash/">Dashboard</a></p>')))
    elif user is not None:
        status, headers, body = _html(200, pages.layout("Dashboard", (
            f"<p>Hello, {escape(user.first_name or user.email)}!</p>"
            "<p>This is the built-in stand-in for your dashboard (set DASHBOARD_URL to proxy a real one).</p>"
            '<p class="alt"><a href="/logout/">Log out</a></p>')))
    else:
        status, headers, body = _html(404, pages.message_page("Not found", "There is nothing here."))
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [body]


def call_wsgi(app, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None, *,
              client_ip: str) -> Reply:
    """Serve one request with a WSGI app (PEP 3333 environ), as the dashboard host would."""
    parts = urlsplit(target)
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": unquote(parts.path), "QUERY_STRING": parts.query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "3000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": client_ip,
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body or b""),
        "wsgi.errors": io.StringIO(), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body or b"")),
    }
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key != "CONTENT_LENGTH":
            environ[f"HTTP_{key}"] = value
    answer: dict = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info=None) -> None:
        answer.update(status=int(status.split(maxsplit=1)[0]), headers=response_headers)

    chunks = app(environ, start_response)
    return answer["status"], answer["headers"], b"".join(chunks)


def _html(status: int, body: str) -> Reply:
    return status, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")], body.encode()
