"""Test helpers: real payload 2.0 events, a Lambda context, handler loading and a cookie-keeping browser."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import itertools
import json
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

from psycopg.conninfo import make_conninfo

from localrun.gateway import LambdaContext, build_event
from localrun.postgres import Cluster

ROOT = Path(__file__).resolve().parents[1]
HOST = "abc123xyz.execute-api.eu-west-1.amazonaws.com"
ORIGIN = f"https://{HOST}"
ROUTES = {"/register/": "register", "/login/": "login", "/logout/": "logout", "/healthcheck/": "health"}
_counter = itertools.count()
#: `next` values that must never be followed (SPEC: CSRF and redirects); the handlers' tests send
#: each through the login function, the unit tests add more through safe_next alone.
OPEN_REDIRECT_VECTORS = [
    "https://evil.example",
    "http://evil.example/dash/",
    "//evil.example",
    "////evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https:\\\\evil.example",
    "https:/evil.example",
    "/%09/evil.example",
    "/%2F/evil.example",
    "/%5Cevil.example",
    "javascript:alert(1)",
    "evil.example",
    "/dash/\r\nSet-Cookie: x=1",
    "/dash/%0d%0aSet-Cookie: x=1",
    "/\tevil",
    "",
    "/" + "a" * 5000,
]


def make_event(method: str, path: str, *, form: dict[str, Any] | None = None, json_body: Any = None,
               body: str | bytes | None = None, content_type: str | None = None, headers: dict[str, str] | None = None,
               cookies: list[str] | None = None, query: str = "", source_ip: str = "203.0.113.10",
               base64_body: bool | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event, built by the same code as `make run`'s gateway.

    Forms arrive base64-encoded and JSON as text (as API Gateway sends them) unless `base64_body`
    forces one or the other; the Cookie header moves to `cookies`; header names are lower-case.
    """
    raw: bytes | None = None
    if form is not None:
        raw, content_type = urlencode(form).encode(), content_type or "application/x-www-form-urlencoded"
    elif json_body is not None:
        raw, content_type = json.dumps(json_body).encode(), content_type or "application/json"
    elif body is not None:
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    hdrs = {
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "accept-encoding": "gzip, deflate, br",
        "host": HOST,
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) dashgate-tests",
        "x-amzn-trace-id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
        "x-forwarded-for": source_ip,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if content_type:
        hdrs["content-type"] = content_type
    if raw is not None:
        hdrs["content-length"] = str(len(raw))
    hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
    header_list = list(hdrs.items()) + ([("cookie", "; ".join(cookies))] if cookies else [])
    # The route that matched: a path with a trailing slash arrives on the greedy child route
    # (template.yaml explains why); the bare path on its own route.
    route = f"{path}{{proxy+}}" if path.endswith("/") and path != "/" else path
    event = build_event(method, path, query, header_list, raw, source_ip=source_ip, route_key=f"{method} {route}",
                        request_id=f"req-{next(_counter)}-{uuid.uuid4().hex[:8]}")
    if raw is not None and base64_body is not None:
        event["isBase64Encoded"] = base64_body
        event["body"] = base64.b64encode(raw).decode() if base64_body else (
            body if isinstance(body, str) else raw.decode("utf-8", "surrogatepass"))
    return event


def load_handler(name: str) -> ModuleType:
    """Import functions/<name>/app.py afresh, as a new execution environment would (cold start)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"dashgate_fn_{name}_{next(_counter)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_set_cookie(value: str) -> dict[str, Any]:
    """One Set-Cookie value into {"name", "value", attribute names lower-case...}."""
    first, *attrs = [p.strip() for p in value.split(";")]
    name, _, val = first.partition("=")
    cookie: dict[str, Any] = {"name": name, "value": val}
    for attr in attrs:
        key, _, v = attr.partition("=")
        cookie[key.lower()] = v if v else True
    return cookie


def response_cookies(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The response's cookies by name."""
    return {c["name"]: c for c in map(parse_set_cookie, response.get("cookies", []))}


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """Drives the four handlers the way a browser drives API Gateway: keeps cookies, reads forms."""

    def __init__(self, handlers: dict[str, ModuleType], source_ip: str = "203.0.113.10") -> None:
        self.handlers = handlers
        self.jar: dict[str, str] = {}
        self.source_ip = source_ip
        self.last: dict[str, Any] = {}

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Send one request; update the jar from the response's cookies."""
        kwargs.setdefault("source_ip", self.source_ip)
        if self.jar and "cookies" not in kwargs:
            kwargs["cookies"] = [f"{k}={v}" for k, v in self.jar.items()]
        route = path if path.endswith("/") else path + "/"
        module = self.handlers[ROUTES[route]]
        response = module.lambda_handler(make_event(method, path, **kwargs), LambdaContext())
        for cookie in response_cookies(response).values():
            if cookie.get("max-age") == "0":
                self.jar.pop(cookie["name"], None)
            else:
                self.jar[cookie["name"]] = cookie["value"]
        self.last = response
        return response

    def get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """GET."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """POST."""
        return self.request("POST", path, **kwargs)

    def csrf_token(self, path: str) -> str:
        """GET the form page and read its hidden csrf_token."""
        response = self.get(path)
        match = CSRF_RE.search(response["body"])
        assert match, f"no csrf_token on {path}: {response['statusCode']}"
        return match.group(1)

    def submit(self, path: str, fields: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Fill and submit the form at `path`, as a browser does (same-origin, with the token)."""
        token = self.csrf_token(path if "?" not in path else path.split("?", maxsplit=1)[0])
        headers = {"origin": ORIGIN, "sec-fetch-site": "same-origin", **kwargs.pop("headers", {})}
        path_only, _, query = path.partition("?")
        return self.post(path_only, form={"csrf_token": token, **fields}, headers=headers, query=query, **kwargs)


# -- PostgreSQL -----------------------------------------------------------------------------------
class ThrowawayCluster:
    """A private PostgreSQL in a temporary folder, deleted by stop() (the same code as `make run`'s)."""

    def __init__(self) -> None:
        self.cluster = Cluster(Path(tempfile.mkdtemp(prefix="dashgate-pg-")))

    def start(self) -> str:
        """Start it; return a URL for the `postgres` superuser's database."""
        return self.cluster.start().rsplit("/", 1)[0] + "/postgres"

    def stop(self) -> None:
        """Stop the server and delete its files."""
        self.cluster.destroy()


def wait_for(check, timeout: float = 5.0) -> None:
    """Poll `check` until it is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)





@contextlib.contextmanager
def capture_logs(function: str):
    """Collect the JSON log lines a function's Powertools logger writes (its handler's stream)."""
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(f"dashgate-{function}")
    if logger.handlers:  # Powertools' JSON formatter, once the function has been loaded
        handler.setFormatter(logger.handlers[0].formatter)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


class Clock:
    """An injected clock (Django's `_now()` hook, freezegun-style): `runtime.clock = clock`, then
    `clock.advance(seconds)` moves the time every request reads; nothing is patched."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += timedelta(seconds=seconds)


class MonotonicClock:
    """The same for monotonic seconds (the signing keys' TTL, `KeyRing.clock`)."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.seconds += seconds


class Relay:
    """A TCP relay to a database that can go silent: after `silence()` it keeps every connection open
    and reads what arrives (so TCP acknowledges it), but forwards nothing either way and never closes.
    That is a database host or network path that stops answering mid-connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.silent = threading.Event()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, base_url: str) -> str:
        """`base_url` pointed at this relay."""
        return make_conninfo(base_url, host="127.0.0.1", port=str(self.port))

    def silence(self) -> None:
        """From now on, nothing gets through and nothing is closed."""
        self.silent.set()

    def close(self) -> None:
        """Close everything."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                if not self.silent.is_set():
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                return
            if not self.silent.is_set():
                with contextlib.suppress(OSError):
                    sink.sendall(data)


@contextlib.contextmanager
def json_endpoint(reply: Callable[[BaseHTTPRequestHandler], tuple[int, Any]]) -> Iterator[int]:
    """A local HTTP server that answers every GET with `reply(request)`: a status and a body to send as
    JSON (AWS's container credentials endpoint, the secrets extension); yields its port."""

    class Endpoint(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, payload = reply(self)
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
