"""The local server: HTTP in, the real Lambda handlers through payload 2.0 events, HTTP out."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from dashgate.guard import DashgateGuard
from localrun.dashboard import builtin_dashboard, call_wsgi, proxy
from localrun.gateway import (
    ROOT,
    Environments,
    LambdaContext,
    Schedule,
    build_event,
    read_routes,
    read_schedules,
    response_parts,
    select_route,
)
from localrun.postgres import Cluster, PostgresNotFound

#: Where the embedded database and the development key live (git-ignored); DASHGATE_LOCAL_DIR moves it.
#: The public API's description (OpenAPI 3.1), served at /openapi.json.
OPENAPI = ROOT / "openapi.json"
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
        self.scheduled = {s.route.function: Environments(s.route, 1) for s in read_schedules()}
        for schedule in read_schedules():
            threading.Thread(target=self._run_on_schedule, args=(schedule,), daemon=True).start()

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
        if parts.path == "/openapi.json" and method in ("GET", "HEAD"):
            return 200, [("Content-Type", "application/json")], OPENAPI.read_bytes(), "openapi.json"
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
        """Stop the schedules; close every environment's database connection, and the guard's."""
        self._stopping.set()
        for environments in [*self.environments.values(), *self.scheduled.values()]:
            environments.close()
        if self.builtin is not None:
            self.builtin.store.close()


class LocalHTTPServer(ThreadingHTTPServer):
    """A thread per request, and a listen backlog for bursts (the default of 5 resets the 6th connect)."""

    daemon_threads = True
    request_queue_size = 128


def make_handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    """The HTTP request handler class bound to a gateway."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            started = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            status, headers, payload, who = gateway.handle(self.command, self.path, list(self.headers.items()), body,
                                                          self.client_address[0])
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
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


def prepare_environment() -> Cluster | None:
    """Local defaults, a development signing key, and a database: DATABASE_URL or the embedded one."""
    for name, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    LOCAL_DIR.mkdir(exist_ok=True)
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
    try:
        cluster = prepare_environment()
    except PostgresNotFound as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    gateway = Gateway(os.environ.get("DASHBOARD_URL") or None)
    port = int(os.environ.get("PORT", "3000"))
    server = LocalHTTPServer(("127.0.0.1", port), make_handler(gateway))
    where = os.environ["DASHBOARD_URL"] if gateway.dashboard_url else "the built-in page at /dash/"
    print(f"dashgate is running at http://127.0.0.1:{port}/ (everything else goes to {where}). Ctrl-C stops it.",
          flush=True)
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

