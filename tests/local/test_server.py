"""`make run`: routes from template.yaml, real events, the $default proxy, the embedded database."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from dashgate.settings import MAX_BODY_BYTES
from localrun import postgres, server
from localrun.gateway import build_event, read_routes, read_schedules, response_parts, select_route
from tests.support import wait_for


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirects)


def fetch(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    """(status, headers as a list of pairs, body text) without following redirects."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(request, timeout=10) as response:
            return response.status, response.headers.items(), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.items(), error.read().decode()


# -- the gateway, in-process ------------------------------------------------------------------------
def test_routes_come_from_the_template_with_and_without_the_slash() -> None:
    routes = read_routes()

    for path, function in [("/register/", "RegisterFunction"), ("/login", "LoginFunction"),
                           ("/logout/", "LogoutFunction"), ("/healthcheck/", "HealthFunction")]:
        assert select_route(routes, "GET", path)[0].function == function
    assert select_route(routes, "GET", "/login/")[1] == {"proxy": ""}
    assert select_route(routes, "GET", "/dash/") is None  # $default
    # Every method of our paths reaches its function (which answers 405 with Allow), HEAD included.
    assert select_route(routes, "DELETE", "/login/")[0].function == "LoginFunction"
    assert select_route(routes, "HEAD", "/healthcheck")[0].function == "HealthFunction"


def test_events_are_built_as_api_gateway_builds_them() -> None:
    event = build_event("POST", "/login/", "next=%2Fdash%2F", [("Host", "127.0.0.1:3000"),
                        ("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", "a=1; b=2"),
                        ("X-Multi", "1"), ("X-Multi", "2")], b"email=a%40b.c",
                        source_ip="127.0.0.1", route_key="POST /login/{proxy+}")

    parsed = APIGatewayProxyEventV2(event)  # Powertools' reading of a real payload 2.0 event
    assert parsed.cookies == ["a=1", "b=2"] and "cookie" not in event["headers"]
    assert parsed.is_base64_encoded and parsed.decoded_body == "email=a%40b.c"
    assert parsed.request_context.http.source_ip == "127.0.0.1"
    assert parsed.query_string_parameters == {"next": "/dash/"}
    assert event["headers"]["x-multi"] == "1,2" and event["routeKey"] == "POST /login/{proxy+}"


def test_each_cookie_becomes_its_own_set_cookie_header() -> None:
    status, headers, body = response_parts({"statusCode": 303, "headers": {"Location": "/"}, "body": "",
                                            "cookies": ["a=1; Path=/", "b=2; Path=/"]})

    assert status == 303 and body == b""
    assert [v for k, v in headers if k == "Set-Cookie"] == ["a=1; Path=/", "b=2; Path=/"]


def test_without_postgres_binaries_it_says_what_to_install(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "DEBIAN_PG_ROOT", tmp_path / "nothing")
    monkeypatch.setattr(server, "LOCAL_DIR", tmp_path / "local")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SESSION_SECRETS", "k" * 40)

    assert server.main() == 1
    message = capsys.readouterr().err
    assert "initdb, pg_ctl" in message and "apt install postgresql" in message and "DATABASE_URL" in message


# -- the server, as a process -------------------------------------------------------------------------
def test_the_api_is_served_through_the_real_handlers(start_server, database_url: str, db) -> None:
    local = start_server(DATABASE_URL=database_url)
    user = {"email": "jane@example.com", "password": "correct horse battery", "first_name": "Jane", "last_name": "D"}

    created = fetch(f"{local.url}/register/", "POST", json.dumps(user).encode(), {"Content-Type": "application/json"})
    login = fetch(f"{local.url}/login", "POST", json.dumps(user).encode(), {"Content-Type": "application/json"})
    health = fetch(f"{local.url}/healthcheck/")
    form = fetch(f"{local.url}/login/?next=/dash/")

    assert created[0] == 201 and json.loads(created[2])["user"]["first_name"] == "Jane"
    assert login[0] == 200 and next(v for k, v in login[1] if k == "Set-Cookie").startswith("session=")
    assert health == (200, health[1], "The app and database are working fine")
    assert form[0] == 200 and 'name="next" value="/dash/"' in form[2]
    assert db.execute("SELECT last_login_ip FROM public.users").fetchone()[0] == "127.0.0.1"
    assert local.stop() == 0
    printed = "".join(local.lines)
    assert "POST /register/ 201" in printed and "RegisterFunction" in printed
    assert "GET /healthcheck/ 200" in printed and "Stopping." in printed


def test_the_built_in_dashboard_sends_signed_out_visitors_to_login(start_server, database_url: str) -> None:
    local = start_server(DATABASE_URL=database_url)

    dash = fetch(f"{local.url}/dash/?ticker=AAPL")
    home = fetch(f"{local.url}/")

    assert dash[0] == 303 and dict(dash[1])["Location"] == "/login/?next=%2Fdash%2F%3Fticker%3DAAPL"
    assert home[0] == 200 and 'href="/register/"' in home[2] and 'href="/login/"' in home[2]


@pytest.fixture
def upstream():
    """A stand-in dashboard host that records what reaches it."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                         "body": self.rfile.read(length)})
            self.send_response(201)
            self.send_header("Set-Cookie", "dash_a=1; Path=/")
            self.send_header("Set-Cookie", "dash_b=2; Path=/")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"from dash")

        do_GET = do_PUT = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    host = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{host.server_port}", seen
    host.shutdown()


def test_default_is_a_real_proxy_to_the_dashboard(start_server, database_url: str, upstream) -> None:
    dashboard_url, seen = upstream
    local = start_server(DATABASE_URL=database_url, DASHBOARD_URL=dashboard_url)

    status, headers, body = fetch(f"{local.url}/_dash-update-component?x=1&y=2", "PUT", b'{"a": 1}',
                                  {"Content-Type": "application/json", "X-Custom": "yes", "Cookie": "s=1"})

    assert (status, body) == (201, "from dash")
    assert [v for k, v in headers if k == "Set-Cookie"] == ["dash_a=1; Path=/", "dash_b=2; Path=/"]
    request = seen[0]
    assert (request["method"], request["path"], request["body"]) == ("PUT", "/_dash-update-component?x=1&y=2",
                                                                     b'{"a": 1}')
    assert request["headers"]["X-Custom"] == "yes" and request["headers"]["Cookie"] == "s=1"
    assert fetch(f"{local.url}/login/")[0] == 200  # our routes still go to the functions


def test_the_embedded_database_keeps_its_data_between_runs(start_server) -> None:
    user = {"email": "kept@example.com", "password": "correct horse battery", "first_name": "K", "last_name": "P"}
    # (a folder the `postgres` user can reach, as the repository's .local/ is; pytest's tmp_path is not)
    tmp_path = Path(tempfile.mkdtemp(prefix="dashgate-local-"))
    tmp_path.chmod(0o755)
    local_dir = str(tmp_path / "kept")
    first = start_server(DASHGATE_LOCAL_DIR=local_dir)
    assert fetch(f"{first.url}/register/", "POST", json.dumps(user).encode(),
                 {"Content-Type": "application/json"})[0] == 201
    assert first.stop() == 0
    assert not (tmp_path / "kept" / "postgres" / "data" / "postmaster.pid").exists()  # stopped with the server

    second = start_server(DASHGATE_LOCAL_DIR=local_dir)
    login = fetch(f"{second.url}/login/", "POST", json.dumps(user).encode(), {"Content-Type": "application/json"})

    assert login[0] == 200
    assert (tmp_path / "kept" / "session-key").exists()
    second.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_make_run_runs_the_scheduled_housekeeping_at_start(start_server, database_url: str, db) -> None:
    # GIVEN a counter forgotten long ago, as housekeeping in AWS would delete it
    db.execute("INSERT INTO public.dashgate_throttle VALUES ('login-email:gone@example.com', 3, "
               "now() - interval '3 days', now() - interval '3 days')")

    local = start_server(DATABASE_URL=database_url)

    # THEN the schedule of template.yaml ran the housekeeping function, as EventBridge would
    wait_for(lambda: any(line.startswith("schedule HousekeepingFunction:") for line in local.lines), timeout=30)
    assert db.execute("SELECT count(*) FROM public.dashgate_throttle").fetchone()[0] == 0
    assert [s.every_seconds for s in read_schedules()] == [3600]


# -- the edge of the local server, in raw HTTP -------------------------------------------------------------
def raw(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    """A request exactly as written (no client tidies its path or framing up)."""
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode() + body


def exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """Send the bytes, read one response: (status, headers, body, whether the server then closed)."""
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()  # raises RemoteDisconnected when the server hangs up without an answer
        body = response.read()
        sock.settimeout(1)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        return response.status, dict(response.getheaders()), body, closed


def test_the_built_in_dashboard_greets_only_at_dash_and_below(start_server, database_url: str) -> None:
    local = start_server(DATABASE_URL=database_url)
    user = {"email": "ann@example.com", "password": "correct horse battery", "first_name": "Ann", "last_name": "B"}
    fetch(f"{local.url}/register/", "POST", json.dumps(user).encode(), {"Content-Type": "application/json"})
    login = fetch(f"{local.url}/login/", "POST", json.dumps(user).encode(), {"Content-Type": "application/json"})
    cookie = next(v for k, v in login[1] if k == "Set-Cookie").split(";")[0]

    def get(path: str, *headers: str) -> tuple[int, dict[str, str], bytes, bool]:
        return exchange(local.url, raw("GET", path, "Connection: close", *headers))

    # Near misses of /dash are nobody's dashboard, signed in or not: a 404 page, not a dropped connection.
    for path in ["/dash;/", "/dash%00/", "/dashx", "/dash%3B/", "/x/../dash/"]:
        for headers in [(), (f"Cookie: {cookie}",)]:
            status, reply_headers, _, _ = get(path, *headers)
            assert (status, reply_headers["Content-Type"]) == (404, "text/html; charset=utf-8"), (path, headers)
    # PATH_INFO is percent-decoded (PEP 3333): encoded slashes and letters still meet the guard.
    for path in ["/dash", "/dash/", "/dash%2F..", "/%64ash/", "//dash/"]:
        status, reply_headers, _, _ = get(path)
        assert status == 303 and reply_headers["Location"].startswith("/login/?next="), path
    greeting = get("/dash/x", f"Cookie: {cookie}")
    assert greeting[0] == 200 and b"Hello, Ann!" in greeting[2]
    assert "Traceback" not in "".join(local.lines)


def test_an_exception_behind_the_server_is_answered_500_and_the_connection_kept() -> None:
    class Failing:
        def handle(self, *args: object) -> None:
            raise AttributeError("'NoneType' object has no attribute 'first_name'")

    host = server.LocalHTTPServer(("127.0.0.1", 0), server.make_handler(Failing()))
    threading.Thread(target=host.serve_forever, daemon=True).start()
    connection = http.client.HTTPConnection("127.0.0.1", host.server_port, timeout=10)

    answers = []
    for _ in range(2):  # the same keep-alive connection, twice
        connection.request("GET", "/dash;/")
        response = connection.getresponse()
        answers.append((response.status, response.getheader("Content-Type"), response.read()))

    assert answers == [(500, "text/plain; charset=utf-8", b"Internal Server Error")] * 2
    connection.close()
    host.shutdown()
    host.server_close()


def test_a_dashboard_host_that_does_not_speak_http_is_a_502(start_server, database_url: str) -> None:
    # GIVEN a dashboard host that answers garbage
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_garbage() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"garbage\r\n\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    local = start_server(DATABASE_URL=database_url, DASHBOARD_URL=f"http://127.0.0.1:{listener.getsockname()[1]}")

    status, _, body, _ = exchange(local.url, raw("GET", "/dash/", "Connection: close"))

    assert status == 502 and body.startswith(b"Bad gateway")
    listener.close()


def test_a_body_that_never_arrives_is_answered_408(start_server, database_url: str) -> None:
    local = start_server(DATABASE_URL=database_url, LOCAL_BODY_TIMEOUT_SECONDS="1")
    started = time.monotonic()

    status, headers, body, closed = exchange(local.url, raw("POST", "/login/", "Content-Length: 100",
                                                            "Content-Type: application/json", body=b'{"email":'))

    assert time.monotonic() - started < 5
    assert (status, headers["Connection"], closed) == (408, "close", True)
    assert json.loads(body)["error"] == "request_timeout"
    assert fetch(f"{local.url}/openapi.json")[0] == 200  # no thread was lost to it


def test_an_idle_keep_alive_connection_is_closed_quietly(start_server, database_url: str) -> None:
    local = start_server(DATABASE_URL=database_url, LOCAL_BODY_TIMEOUT_SECONDS="1")
    connection = http.client.HTTPConnection("127.0.0.1", local.port, timeout=10)
    connection.request("GET", "/openapi.json")
    first = connection.getresponse()
    first.read()

    time.sleep(2)  # idle past the timeout

    assert first.status == 200 and connection.sock.recv(1) == b""  # the server hung up
    assert fetch(f"{local.url}/openapi.json")[0] == 200
    connection.close()
    assert "Traceback" not in "".join(local.lines)


def test_bodies_over_the_limit_or_without_a_valid_length_are_refused_unread(start_server, database_url: str) -> None:
    local = start_server(DATABASE_URL=database_url)
    too_long = f"Content-Length: {MAX_BODY_BYTES + 1}"

    # The body is never sent: each answer comes without the server waiting for it.
    as_json = exchange(local.url, raw("POST", "/register/", too_long, "Content-Type: application/json"))
    as_text = exchange(local.url, raw("POST", "/dash/", too_long, "Content-Type: application/x-www-form-urlencoded"))
    invalid = [exchange(local.url, raw("POST", "/login/", header))[0]
               for header in ["Content-Length: abc", "Content-Length: -1", "Content-Length: +5",
                              "Content-Length: 5\r\nContent-Length: 6"]]
    chunked = exchange(local.url, raw("POST", "/login/", "Transfer-Encoding: chunked"))
    with socket.create_connection(("127.0.0.1", local.port), timeout=10) as sock:
        sock.sendall(raw("POST", "/login/", "Content-Length: 100", body=b"{}"))
        sock.shutdown(socket.SHUT_WR)  # and not a byte more
        cut_short = sock.recv(65536)
    at_the_limit = exchange(local.url, raw("POST", "/", f"Content-Length: {MAX_BODY_BYTES}", "Connection: close",
                                           body=b"a" * MAX_BODY_BYTES))

    assert as_json[0] == 413 and as_json[1]["Connection"] == "close" and as_json[3]
    message = "The request body is larger than 16 KiB."
    assert json.loads(as_json[2]) == {"error": "payload_too_large", "message": message}
    assert (as_text[0], as_text[1]["Content-Type"], as_text[2]) == (413, "text/plain; charset=utf-8", message.encode())
    assert invalid == [400] * 4
    assert chunked[0] == 411 and chunked[3]
    assert cut_short.startswith(b"HTTP/1.1 400 ")
    assert at_the_limit[0] == 200


def test_swagger_ui_is_served_offline_at_docs(start_server, database_url: str) -> None:
    local = start_server(DATABASE_URL=database_url)

    page = fetch(f"{local.url}/docs/")
    script = fetch(f"{local.url}/docs/swagger-ui-bundle.min.js")
    style = fetch(f"{local.url}/docs/swagger-ui.min.css")

    assert page[0] == 200 and dict(page[1])["Content-Type"] == "text/html; charset=utf-8"
    assert '"/openapi.json"' in page[2] and "/docs/swagger-ui-bundle.min.js" in page[2]
    assert "/docs/swagger-ui.min.css" in page[2]
    assert script[0] == 200 and dict(script[1])["Content-Type"] == "text/javascript; charset=utf-8"
    assert "SwaggerUIBundle" in script[2]
    assert style[0] == 200 and dict(style[1])["Content-Type"] == "text/css; charset=utf-8"
    assert fetch(f"{local.url}/docs")[0] == 200 and fetch(f"{local.url}/openapi.json")[0] == 200
