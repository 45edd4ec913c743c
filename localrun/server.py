"""The local server: HTTP in, the real Lambda handlers through payload 2.0 events, HTTP out."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aws_lambda_powertools
from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

from dashgate.guard import DashgateGuard
from dashgate.settings import MAX_BODY_BYTES
from localrun.dashboard import builtin_dashboard, call_wsgi, proxy
from localrun.gateway import (
    ROOT,
    Environments,
    LambdaContext,
    Schedule,
    build_event,
    read_queue_consumers,
    read_routes,
    read_schedules,
    response_parts,
    select_route,
)
from localrun.outbox import POLL_SECONDS, MailPump, OutboxPages
from localrun.postgres import Cluster, PostgresNotFound

#: The public API's description (OpenAPI 3.1), served at /openapi.json.
OPENAPI = ROOT / "openapi.json"
#: Swagger UI's script and style as Powertools bundles them (no CDN: /docs/ works offline).
SWAGGER_UI = Path(aws_lambda_powertools.__file__).parent / "event_handler" / "openapi" / "swagger_ui"
#: What /docs/ serves besides its page: Swagger UI's files, with their types (RFC 9239: text/javascript).
DOCS_ASSETS = {"/docs/swagger-ui-bundle.min.js": "text/javascript; charset=utf-8",
               "/docs/swagger-ui.min.css": "text/css; charset=utf-8"}
#: Seconds each read of a request (its line, headers, body) may wait for the client before 408 and
#: close; LOCAL_BODY_TIMEOUT_SECONDS changes it. Without it a short body holds a thread forever.
BODY_TIMEOUT_SECONDS = 10.0
#: How long Ctrl-C waits for a schedule's run or a mail batch under way to finish.
STOP_WAIT_SECONDS = 30.0
#: Where the embedded database and the development key live (git-ignored); DASHGATE_LOCAL_DIR moves it.
LOCAL_DIR = Path(os.environ.get("DASHGATE_LOCAL_DIR") or ROOT / ".local")
#: Local defaults; any of them can be overridden by the environment variable of the same name.
LOCAL_DEFAULTS = {
    "SESSION_COOKIE_SECURE": "false",  # plain http on 127.0.0.1: no Secure cookies, no __Host- prefix
    "POWERTOOLS_LOG_LEVEL": "WARNING",  # this server prints one line per request itself
    "POWERTOOLS_METRICS_DISABLED": "true",  # no EMF blobs on the console
}


class Gateway:
    """Routes by template.yaml, runs the functions, runs the scheduled ones, and answers $default."""

    def __init__(self, dashboard_url: str | None) -> None:
        self.routes = read_routes()
        concurrency = int(os.environ.get("LOCAL_FUNCTION_CONCURRENCY", "8"))
        self.environments = {r.function: Environments(r, concurrency) for r in self.routes}
        self.dashboard_url = dashboard_url
        self.builtin = None if dashboard_url else DashgateGuard(builtin_dashboard)
        self._stopping = threading.Event()
        #: The schedules' and the mail pump's threads: `close` waits for them to finish what they are doing.
        self._workers: list[threading.Thread] = []
        schedules = read_schedules()
        self.scheduled = {s.route.function: Environments(s.route, 1) for s in schedules}
        for schedule in schedules:
            self._start(self._run_on_schedule, schedule)
        # Mail: the request path spools each message under MAIL_OUTBOX_DIR; the mailer takes it from
        # there as SQS would hand it over, and writes each mail to the outbox, shown at /_outbox/.
        outbox = Path(os.environ.get("MAIL_OUTBOX_DIR") or LOCAL_DIR / "outbox")
        self.outbox = OutboxPages(outbox, os.environ.get("PUBLIC_BASE_URL") or "http://127.0.0.1")
        self.consumers = {route.function: Environments(route, 1) for route in read_queue_consumers()}
        if not os.environ.get("MAIL_QUEUE_URL"):  # a real SQS queue has its own consumer
            for environments in self.consumers.values():
                self._start(self._pump_mail, MailPump(outbox, environments))

    def _start(self, work: Callable[[Any], None], arg: Any) -> None:
        worker = threading.Thread(target=work, args=(arg,), daemon=True)
        worker.start()
        self._workers.append(worker)

    def _pump_mail(self, pump: MailPump) -> None:
        """What the SQS event source mapping does in AWS: the spooled messages to the mailer, in batches."""
        while not self._stopping.wait(POLL_SECONDS):
            try:
                while pump.pump_once():
                    pass
            except Exception:  # the next look tries again; the server keeps serving
                print(traceback.format_exc(), end="", flush=True)

    def _run_on_schedule(self, schedule: Schedule) -> None:
        """What EventBridge Scheduler does in AWS: the function at start, then at its rate."""
        while True:
            event = {"source": "localrun.scheduler", "detail-type": "Scheduled Event", "time": time.time()}
            try:
                result = self.scheduled[schedule.route.function].invoke(event, LambdaContext(schedule.route.function))
                print(f"schedule {schedule.route.function}: {result}", flush=True)
            except Exception as exc:  # the next run tries again, as in AWS
                print(f"schedule {schedule.route.function} failed: {type(exc).__name__}", flush=True)
            if self._stopping.wait(schedule.every_seconds):
                return

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None,
               client_ip: str) -> tuple[int, list[tuple[str, str]], bytes, str]:
        """One request: (status, headers, body, who answered)."""
        parts = urlsplit(target)
        if method in ("GET", "HEAD") and (local := serve_locally(parts.path)) is not None:
            return local
        if method in ("GET", "HEAD") and (parts.path == "/_outbox" or parts.path.startswith("/_outbox/")):
            return self.outbox.respond(parts.path)
        chosen = select_route(self.routes, method, parts.path)
        if chosen is None:
            if self.dashboard_url:
                return (*proxy(self.dashboard_url, method, target, headers, body), "$default → dashboard")
            return (*call_wsgi(self.builtin, method, target, headers, body, client_ip=client_ip), "$default (built-in)")
        route, params = chosen
        event = build_event(method, parts.path, parts.query, headers, body, source_ip=client_ip, route_key=route.key,
                            path_parameters={k: v for k, v in params.items() if v})
        context = LambdaContext(route.function, event["requestContext"]["requestId"])
        return (*response_parts(self.environments[route.function].invoke(event, context)), route.function)

    def close(self) -> None:
        """Stop the schedules and the mail pump (letting a run under way finish: a thread stopped in the
        middle of an import or a print aborts the interpreter's exit); close every environment's
        database connection, and the guard's."""
        self._stopping.set()
        for worker in self._workers:
            worker.join(timeout=STOP_WAIT_SECONDS)
        for environments in [*self.environments.values(), *self.scheduled.values(), *self.consumers.values()]:
            environments.close()
        if self.builtin is not None:
            self.builtin.store.close()


def serve_locally(path: str) -> tuple[int, list[tuple[str, str]], bytes, str] | None:
    """What only this server answers, not the API in AWS: /openapi.json, and Swagger UI at /docs/
    (and the outbox at /_outbox/, which Gateway.handle serves)."""
    if path == "/openapi.json":
        return 200, [("Content-Type", "application/json")], OPENAPI.read_bytes(), "openapi.json"
    if path in ("/docs", "/docs/"):
        return 200, [("Content-Type", "text/html; charset=utf-8")], docs_page().encode(), "docs"
    if path in DOCS_ASSETS:
        asset = SWAGGER_UI / path.removeprefix("/docs/")
        return 200, [("Content-Type", DOCS_ASSETS[path])], asset.read_bytes(), "docs"
    return None


def docs_page() -> str:
    """Powertools' Swagger UI page, reading /openapi.json, with its script and style from /docs/."""
    # The page writes `spec` into Swagger UI's options as JavaScript; with an empty spec Swagger UI
    # downloads `url` instead, so the page always shows the document /openapi.json serves.
    return generate_swagger_html('{}, url: "/openapi.json"', "/docs/swagger-ui-bundle.min.js",
                                 "/docs/swagger-ui.min.css", swagger_base_url="/docs", oauth2_config=None)


class Refused(Exception):
    """A request this server answers itself, without its body, and then closes the connection."""

    def __init__(self, status: HTTPStatus, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def reply(self, request_headers: Message) -> tuple[int, list[tuple[str, str]], bytes, str]:
        """JSON for a client that sends or wants JSON, else a line of text."""
        if any("application/json" in request_headers.get(name, "") for name in ("Content-Type", "Accept")):
            body = json.dumps({"error": self.error, "message": self.message}).encode()
            return self.status, [("Content-Type", "application/json")], body, "local server"
        return self.status, [("Content-Type", "text/plain; charset=utf-8")], self.message.encode(), "local server"


def declared_length(headers: Message) -> int:
    """The body's length as Content-Length declares it, or Refused: no length, an invalid one, or too long."""
    # API Gateway HTTP APIs accept chunked bodies; this server does not decode them (RFC 9110 15.5.12: 411).
    if "Transfer-Encoding" in headers:
        raise Refused(HTTPStatus.LENGTH_REQUIRED, "length_required", "Send the body with a Content-Length header.")
    values = {value.strip() for value in headers.get_all("Content-Length") or ["0"]}
    # RFC 9112 6.3: an invalid length (or several different ones) leaves no way to find the body's end.
    if len(values) != 1 or not (value := values.pop()).isascii() or not value.isdigit():
        raise Refused(HTTPStatus.BAD_REQUEST, "bad_request", "The Content-Length header is invalid.")
    # API Gateway refuses payloads over 10 MB; the functions take 16 KiB, so this server refuses early.
    if int(value) > MAX_BODY_BYTES:
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large",
                      f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB.")
    return int(value)


class LocalHTTPServer(ThreadingHTTPServer):
    """A thread per request, and a listen backlog for bursts (the default of 5 resets the 6th connect)."""

    daemon_threads = True
    request_queue_size = 128


def make_handler(gateway: Gateway, read_timeout: float = BODY_TIMEOUT_SECONDS) -> type[BaseHTTPRequestHandler]:
    """The HTTP request handler class bound to a gateway; `read_timeout` bounds each wait for the client."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        #: The socket's timeout, for the whole connection: a keep-alive client idle this long is
        #: disconnected (http.server closes quietly), one whose body stalls this long gets 408.
        timeout = read_timeout

        def _serve(self) -> None:
            started = time.perf_counter()
            try:
                body = self._read_body()
            except Refused as refused:
                self.close_connection = True  # an unread body must not be taken for the next request
                self._answer(*refused.reply(self.headers), started)
                return
            try:
                answer = gateway.handle(self.command, self.path, list(self.headers.items()), body,
                                        self.client_address[0])
            except Exception:  # answered, never a connection closed in silence
                print(traceback.format_exc(), end="", flush=True)
                answer = 500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal Server Error", "(failed)"
            self._answer(*answer, started)

        def _read_body(self) -> bytes | None:
            """The body, all of it, or Refused: a bad length (declared_length), or one that does not arrive."""
            length = declared_length(self.headers)
            try:
                body = self.rfile.read(length) if length else None
            except TimeoutError:
                raise Refused(HTTPStatus.REQUEST_TIMEOUT, "request_timeout",
                              "The request body did not arrive in time.") from None
            if body is not None and len(body) < length:  # the client closed its side early
                raise Refused(HTTPStatus.BAD_REQUEST, "bad_request", "The request body ended early.")
            return body

        def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes, who: str,
                    started: float) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            ms = (time.perf_counter() - started) * 1000
            print(f"{self.command} {urlsplit(self.path).path} {status} {ms:.1f} ms {who}", flush=True)

        def __getattr__(self, name: str):
            # Every method reaches the gateway (TRACE, PROPFIND...): it routes, or proxies $default.
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def log_message(self, *args: object) -> None:  # one line per request is printed by _serve
            pass

    return Handler


def prepare_environment(port: int = 3000) -> Cluster | None:
    """Local defaults, a development signing key, and a database: DATABASE_URL or the embedded one.
    Mail goes to the outbox (MAIL_OUTBOX_DIR, .local/outbox), its links to this server (PUBLIC_BASE_URL)."""
    for name, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    LOCAL_DIR.mkdir(exist_ok=True)
    os.environ.setdefault("MAIL_OUTBOX_DIR", str(LOCAL_DIR / "outbox"))
    os.environ.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    if not os.environ.get("SESSION_SECRETS") and not os.environ.get("SESSION_SECRET_ARN"):
        os.environ["SESSION_SECRETS"] = _development_key(LOCAL_DIR / "session-key")
    cluster = None
    if not os.environ.get("DATABASE_URL"):
        cluster = Cluster(LOCAL_DIR / "postgres")
        os.environ["DATABASE_URL"] = cluster.start()
    from dashgate.store import Store

    store = Store(lambda: os.environ["DATABASE_URL"])
    store.migrate()
    store.close()
    return cluster


def _development_key(path: Path) -> str:
    """A signing key generated once and kept with the local data, so sign-ins survive restarts."""
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Serve until Ctrl-C; stop the embedded database this process started."""
    # Powertools warns on every request that published no metric; locally metrics are off anyway.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    port = int(os.environ.get("PORT", "3000"))
    try:
        cluster = prepare_environment(port)
    except PostgresNotFound as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    gateway = Gateway(os.environ.get("DASHBOARD_URL") or None)
    read_timeout = float(os.environ.get("LOCAL_BODY_TIMEOUT_SECONDS", BODY_TIMEOUT_SECONDS))
    server = LocalHTTPServer(("127.0.0.1", port), make_handler(gateway, read_timeout))
    where = os.environ["DASHBOARD_URL"] if gateway.dashboard_url else "the built-in page at /dash/"
    print(f"dashgate is running at http://127.0.0.1:{port}/ (everything else goes to {where}). Ctrl-C stops it.",
          flush=True)
    if not os.environ.get("MAIL_QUEUE_URL"):
        print(f"Mail it sends is at http://127.0.0.1:{port}/_outbox/", flush=True)
    # Ctrl-C and TERM stop cleanly, even when started from a shell that ignores SIGINT for
    # background jobs (Python then would not install its own handler).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopping.", flush=True)
    finally:
        server.server_close()
        gateway.close()
        if cluster is not None:
            cluster.stop()
    return 0

