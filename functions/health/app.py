"""Lambda entry point for /healthcheck/: is the app up and can it reach its database?"""

from __future__ import annotations

from dashgate import http
from dashgate.edge import Edge
from dashgate.errors import ServiceUnavailable
from dashgate.models.health import DatabaseOut, HealthOut
from dashgate.runtime import Runtime

HEALTHY = "The app and database are working fine"
UNHEALTHY = "The database is not reachable"
TEXT = "text/plain; charset=utf-8"
PLAIN = {TEXT: {"schema": {"type": "string"}}}

# Health needs no signing keys, and short timeouts so a monitor hears 503 well within 5 seconds.
runtime = Runtime("health", sessions=False, health_timeouts=True)
edge = Edge(runtime)
app = edge.app


@edge.route("/healthcheck/", "GET", summary="Is the app up, and can it reach its database? (HEAD works too)",
            responses={200: {"description": "Healthy", "content": {**PLAIN, "application/json": {"model": HealthOut}}},
                       503: {"description": "The database is not reachable",
                             "content": {**PLAIN, "application/json": {"model": HealthOut}}}})
def health():
    """200 when the health query runs, else 503 with a plain message (the detail goes to the log)."""
    request = edge.request()
    try:
        latency_ms = runtime.store.ping(runtime.settings.healthcheck_sql)
    except ServiceUnavailable as err:
        runtime.count("HealthFailures")
        runtime.log_error(err)
        if request.wants_json:
            down = HealthOut(status="unavailable", message=UNHEALTHY, database=DatabaseOut(ok=False))
            return http.json_response(503, down.model_dump_json(exclude_none=True))
        return http.respond(503, UNHEALTHY, TEXT)
    if request.wants_json:
        up = HealthOut(status="ok", database=DatabaseOut(ok=True, latency_ms=round(latency_ms, 2)))
        return http.json_response(200, up.model_dump_json(exclude_none=True))
    return http.respond(200, HEALTHY, TEXT)


lambda_handler = runtime.handler(edge)
