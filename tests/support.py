"""Test helpers: real payload 2.0 events, a Lambda context, handler loading and a cookie-keeping browser."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
HOST = "abc123xyz.execute-api.eu-west-1.amazonaws.com"
ORIGIN = f"https://{HOST}"
ROUTES = {"/register/": "register", "/login/": "login", "/logout/": "logout", "/healthcheck/": "health"}
_counter = itertools.count()


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that Powertools reads."""

    function_name: str = "dashgate-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:dashgate-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def make_event(method: str, path: str, *, form: dict[str, Any] | None = None, json_body: Any = None,
               body: str | bytes | None = None, content_type: str | None = None, headers: dict[str, str] | None = None,
               cookies: list[str] | None = None, query: str = "", source_ip: str = "203.0.113.10",
               base64_body: bool = True) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event, as API Gateway builds it.

    Forms are base64-encoded (API Gateway encodes bodies it does not treat as text), the Cookie
    header moves to `cookies`, header names are lower-case.
    """
    raw: bytes | None = None
    if form is not None:
        raw, content_type = urlencode(form).encode(), content_type or "application/x-www-form-urlencoded"
    elif json_body is not None:
        raw, content_type = json.dumps(json_body).encode(), content_type or "application/json"
        base64_body = False if base64_body is True else base64_body
    elif body is not None:
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    request_id = f"req-{next(_counter)}-{uuid.uuid4().hex[:8]}"
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
    # The route that matched: a path with a trailing slash arrives on the greedy child route
    # (template.yaml explains why); the bare path on its own route.
    route = f"{path}{{proxy+}}" if path.endswith("/") and path != "/" else path
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123xyz",
            "domainName": HOST,
            "domainPrefix": "abc123xyz",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": hdrs["user-agent"]},
            "requestId": request_id,
            "routeKey": f"{method} {route}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        from urllib.parse import parse_qs

        event["queryStringParameters"] = {k: ",".join(v) for k, v in parse_qs(query, keep_blank_values=True).items()}
    if raw is not None:
        event["body"] = base64.b64encode(raw).decode() if base64_body else raw.decode("utf-8", "surrogatepass")
        event["isBase64Encoded"] = bool(base64_body)
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
def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, or in Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} was not found: install the postgresql package")
    return str(candidates[0])


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary folder (run as `postgres` when we are root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dashgate-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self.as_root else list(args)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        """initdb and start; return a URL for the `postgres` superuser."""
        if self.as_root:
            shutil.chown(self.dir, "postgres")
            self.dir.chmod(0o700)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the server and delete its files."""
        with contextlib.suppress(Exception):
            self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


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
