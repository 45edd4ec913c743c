"""The API Gateway part: routes read from template.yaml, payload 2.0 events built as the gateway builds them."""

from __future__ import annotations

import base64
import importlib.util
import itertools
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parents[1]
#: Content types API Gateway passes as text; other bodies (forms included) arrive base64-encoded.
TEXT_TYPES = ("application/json", "text/")
_instances = itertools.count()


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that the handlers (Powertools) read."""

    function_name: str = "dashgate-local"
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:dashgate"
    timeout_seconds: float = 60.0
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the invocation's timeout, as Lambda's context says."""
        return max(0, int((self.started + self.timeout_seconds - time.monotonic()) * 1000))


@dataclass(frozen=True)
class Route:
    """One HttpApi event of a function in template.yaml."""

    method: str
    path: str
    function: str  # the logical id, e.g. LoginFunction
    code_dir: Path
    handler: str  # e.g. app.lambda_handler

    @property
    def key(self) -> str:
        """The route key, as in the event's routeKey."""
        return f"{self.method} {self.path}"

    def matches(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when this route takes the request, else None (greedy {proxy+} included)."""
        if self.method not in (method, "ANY"):
            return None
        if self.path.endswith("/{proxy+}"):
            prefix = self.path.removesuffix("{proxy+}")
            return {"proxy": path[len(prefix):]} if path.startswith(prefix) else None
        return {} if path == self.path else None


def template_functions(template: Path) -> Iterator[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(logical id, properties, events) of every function in the SAM template."""
    from samtranslator.yaml_helper import yaml_parse  # parses CloudFormation's !Ref and friends

    for logical_id, resource in yaml_parse(template.read_text())["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            props = resource["Properties"]
            yield logical_id, props, list((props.get("Events") or {}).values())


def code_route(logical_id: str, props: dict[str, Any]) -> Route:
    """A route that only names a function's code (method and path empty): schedules, queue consumers."""
    return Route("", "", logical_id, ROOT / props["CodeUri"], props["Handler"])


def read_routes(template: Path = ROOT / "template.yaml") -> list[Route]:
    """Every HttpApi route of every function in the SAM template: the one route table there is."""
    return [Route(event["Properties"]["Method"].upper(), event["Properties"]["Path"], logical_id,
                  ROOT / props["CodeUri"], props["Handler"])
            for logical_id, props, events in template_functions(template)
            for event in events if event.get("Type") == "HttpApi"]


#: Seconds in each unit of an EventBridge `rate()` expression.
RATE_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


@dataclass(frozen=True)
class Schedule:
    """A function that a Schedule or ScheduleV2 event of template.yaml runs at a fixed rate."""

    route: Route  # method and path are empty: only the function's code is used
    every_seconds: int


def read_schedules(template: Path = ROOT / "template.yaml") -> list[Schedule]:
    """Every `rate(...)` schedule of every function in the SAM template."""
    schedules = []
    for logical_id, props, events in template_functions(template):
        for event in events:
            settings = event.get("Properties") or {}
            expression = settings.get("ScheduleExpression") or settings.get("Schedule") or ""
            if event.get("Type") in ("Schedule", "ScheduleV2") and expression.startswith("rate("):
                count, unit = expression.removeprefix("rate(").removesuffix(")").split()
                schedules.append(Schedule(code_route(logical_id, props), int(count) * RATE_UNITS[unit]))
    return schedules


def read_queue_consumers(template: Path = ROOT / "template.yaml") -> list[Route]:
    """Every function that an SQS event of the SAM template feeds (the mailer); method and path are empty."""
    return [code_route(logical_id, props) for logical_id, props, events in template_functions(template)
            if any(event.get("Type") == "SQS" for event in events)]


def select_route(routes: Iterable[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """API Gateway's choice: an exact route first, then the longest greedy match; None means $default."""
    candidates = [(route, params) for route in routes if (params := route.matches(method, path)) is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda rp: (not rp[0].path.endswith("{proxy+}"), len(rp[0].path)))


def build_event(method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes | None, *,
                source_ip: str, route_key: str, path_parameters: dict[str, str] | None = None,
                request_id: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """A payload 2.0 event: lower-case headers (repeats joined by commas), cookies moved out of the
    Cookie header, base64 bodies unless textual, and the request context API Gateway adds."""
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
        else:
            merged[name] = f"{merged[name]},{value}" if name in merged else value
    now = now or datetime.now(UTC)
    domain = merged.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": merged,
        "requestContext": {
            "accountId": "123456789012", "apiId": domain.split(".")[0], "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": merged.get("user-agent", "")},
            "requestId": request_id or uuid.uuid4().hex,
            "routeKey": route_key, "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"), "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in parse_qs(query, keep_blank_values=True).items()}
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body is not None:
        textual = merged.get("content-type", "").lower().startswith(TEXT_TYPES)
        event["body"] = body.decode("utf-8", "surrogateescape") if textual else base64.b64encode(body).decode()
        event["isBase64Encoded"] = not textual
    return event


def response_parts(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """A Lambda result as HTTP: status, headers (each cookie its own Set-Cookie), body bytes."""
    if not isinstance(result, dict) or "statusCode" not in result:  # payload 2.0's bare-value shortcut
        import json

        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    headers += [("Set-Cookie", cookie) for cookie in result.get("cookies") or []]
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return int(result["statusCode"]), headers, raw


class Environments:
    """Warm execution environments of one function: reused when idle, a new one per concurrent request,
    as Lambda scales (each has its own module state and database connection)."""

    def __init__(self, route: Route, max_concurrency: int = 8) -> None:
        self.route = route
        self._idle: queue.SimpleQueue[ModuleType] = queue.SimpleQueue()
        # Like a function's reserved concurrency: bounds environments, and so database connections
        # (PostgreSQL's default max_connections is 100); further requests wait for a free one.
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self.all: list[ModuleType] = []

    def acquire(self) -> ModuleType:
        """An idle environment, or a cold start."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            module_name, _ = self.route.handler.split(".")
            path = self.route.code_dir / f"{module_name}.py"
            spec = importlib.util.spec_from_file_location(f"localrun_{self.route.function}_{next(_instances)}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.all.append(module)
            return module

    def release(self, module: ModuleType) -> None:
        """Back to the idle pool."""
        self._idle.put(module)

    def invoke(self, event: dict[str, Any], context: Any) -> Any:
        """Run one event in an environment of this function."""
        with self._slots:
            module = self.acquire()
            try:
                return getattr(module, self.route.handler.split(".")[1])(event, context)
            finally:
                self.release(module)

    def close(self) -> None:
        """Close every environment's database connection."""
        for module in self.all:
            runtime = getattr(module, "runtime", None)
            if runtime is not None:
                runtime.store.close()
