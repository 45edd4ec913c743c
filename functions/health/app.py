"""Lambda entry point for GET /healthcheck/: is the app up and can it reach its database?"""

from __future__ import annotations

from dashgate import http
from dashgate.errors import MethodNotAllowed, ServiceUnavailable
from dashgate.http import Request, Response
from dashgate.runtime import Runtime

HEALTHY = "The app and database are working fine"
UNHEALTHY = "The database is not reachable"

# Health needs no signing keys, and short timeouts so a monitor hears 503 well within 5 seconds.
runtime = Runtime("health", "/healthcheck", sessions=False, health_timeouts=True)


def health(request: Request) -> Response:
    """200 when the health query runs, else 503 with a plain message (the detail goes to the log)."""
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowed("GET, HEAD")
    try:
        latency_ms = runtime.store.ping(runtime.settings.healthcheck_sql)
    except ServiceUnavailable as err:
        runtime.count("HealthFailures")
        runtime.log_error(err)
        if request.wants_json:
            return http.json_response(503, {"status": "unavailable", "message": UNHEALTHY, "database": {"ok": False}})
        return Response(503, UNHEALTHY, "text/plain; charset=utf-8")
    if request.wants_json:
        return http.json_response(200, {"status": "ok", "database": {"ok": True, "latency_ms": round(latency_ms, 2)}})
    return Response(200, HEALTHY, "text/plain; charset=utf-8")


lambda_handler = runtime.handler(health)
