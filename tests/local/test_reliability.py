"""Reliability through the local server: the OpenAPI document, fuzzing, a database outage, and load."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from samtranslator.yaml_helper import yaml_parse

from localrun.openapi import generate, render
from localrun.postgres import Cluster, free_port
from tests.local.test_server import fetch
from tests.support import ROOT

OPENAPI = json.loads((ROOT / "openapi.json").read_text())
USER = {"password": "correct horse battery", "first_name": "Load", "last_name": "Tester"}


def post_json(url: str, body: dict, cookie: str | None = None):
    headers = {"Content-Type": "application/json", **({"Cookie": cookie} if cookie else {})}
    return fetch(url, "POST", json.dumps(body).encode(), headers)


# -- the OpenAPI document ----------------------------------------------------------------------------
def test_the_committed_openapi_document_is_what_the_code_generates() -> None:
    # openapi.json is generated from the functions' resolvers (`make openapi`); a change to a route,
    # a model or a limit that is not regenerated fails here.
    assert (ROOT / "openapi.json").read_text() == render(generate())


def test_the_openapi_document_matches_the_routes_in_the_template() -> None:
    resources = yaml_parse((ROOT / "template.yaml").read_text())["Resources"]
    routed: dict[str, set[str]] = {}
    for resource in resources.values():
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            if event.get("Type") == "HttpApi":
                path = event["Properties"]["Path"].removesuffix("{proxy+}").rstrip("/") + "/"
                routed.setdefault(path, set()).add(event["Properties"]["Method"].lower())

    assert OPENAPI["openapi"].startswith("3.1")
    # Every documented path is routed, every method of it (the function answers 405 for the others).
    assert routed == {path: {"any"} for path in OPENAPI["paths"]}


def test_every_documented_body_is_strict_and_every_error_has_the_spec_shape() -> None:
    schemas = OPENAPI["components"]["schemas"]
    for path, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                json_body = response.get("content", {}).get("application/json", {}).get("schema", {})
                if int(status) >= 400 and path != "/healthcheck/":  # health answers 503 with its own status
                    assert json_body["$ref"].endswith("/ValidationErrorOut" if status == "422" else "/ErrorOut"), (
                        path, method, status)
            if "requestBody" in operation:
                content = operation["requestBody"]["content"]
                assert set(content) == {"application/json", "application/x-www-form-urlencoded"}
    assert schemas["LoginRequest"]["properties"]["remember_me"]["type"] == "boolean"
    assert schemas["LogoutRequest"]["properties"]["everywhere"]["type"] == "boolean"
    email = schemas["RegisterRequest"]["properties"]["email"]
    assert (email["type"], email["format"], email["maxLength"]) == ("string", "email", 254)


def test_make_run_serves_the_document(start_server, database_url: str) -> None:
    local = start_server(DATABASE_URL=database_url)

    status, _, body = fetch(f"{local.url}/openapi.json")

    assert status == 200 and json.loads(body) == OPENAPI


def test_fuzzing_finds_no_failure_and_no_warning_with_every_check(start_server, database_url: str,
                                                                  tmp_path: Path) -> None:
    local = start_server(DATABASE_URL=database_url, REGISTER_MAX_PER_IP="100000")

    # A fixed seed and a bounded number of examples: the same cases on every run. Every check
    # (negative data rejected, schema-valid data accepted, unsupported methods 405...) and, through
    # the config file, any warning (a schema looser or stricter than the API) fails the run.
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(Path(__file__).parent /
         "schemathesis.toml"), "run", f"{local.url}/openapi.json", "--checks", "all",
         "--seed", "20261127", "--max-examples", "40", "--workers", "2", "--phases", "examples,coverage,fuzzing",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)

    assert result.returncode == 0, result.stdout[-4000:]
    summary = result.stdout.split("SUMMARY")[-1]
    assert "No issues found" in summary and "warning" not in summary.lower(), summary


# -- a database outage --------------------------------------------------------------------------------
@pytest.fixture
def private_cluster():
    """A PostgreSQL only this test uses, so it can stop and start it."""
    directory = Path(tempfile.mkdtemp(prefix="dashgate-outage-"))
    cluster = Cluster(directory, port=free_port())
    url = cluster.start()
    yield cluster, url
    cluster.destroy()


def test_a_database_outage_gives_503s_loses_nothing_and_heals_itself(start_server, private_cluster) -> None:
    cluster, url = private_cluster
    local = start_server(DATABASE_URL=url)
    signup = {**USER, "email": "before@example.com"}
    assert post_json(f"{local.url}/register/", signup)[0] == 201

    # WHEN the database stops mid-run
    cluster.stop(force=True)
    started = time.monotonic()
    health = fetch(f"{local.url}/healthcheck/")
    health_seconds = time.monotonic() - started
    register = post_json(f"{local.url}/register/", {**USER, "email": "during@example.com"})
    login = post_json(f"{local.url}/login/", {"email": "before@example.com", "password": USER["password"]})

    # THEN every answer is a clear 503, health within 5 seconds
    assert health[0] == 503 and health_seconds < 5 and health[2] == "The database is not reachable"
    for status, _, body in (register, login):
        assert status == 503
        assert json.loads(body) == {"error": "service_unavailable",
                                    "message": "The service is temporarily unavailable. Please try again in a moment."}

    # WHEN it comes back: the same server, without a restart, serves again and nothing half-written exists
    cluster.start()
    assert fetch(f"{local.url}/healthcheck/")[0] == 200
    assert post_json(f"{local.url}/login/", {"email": "before@example.com", "password": USER["password"]})[0] == 200
    assert post_json(f"{local.url}/register/", {**USER, "email": "after@example.com"})[0] == 201
    with psycopg.connect(url) as conn:
        emails = [r[0] for r in conn.execute("SELECT email FROM public.users ORDER BY id")]
        assert emails == ["before@example.com", "after@example.com"]
        count = conn.execute("SELECT login_count FROM public.users WHERE email = 'before@example.com'").fetchone()[0]
        assert count == 1  # the login refused during the outage left no trace


# -- load -------------------------------------------------------------------------------------------
CLIENTS, SECONDS = 32, 15


def test_a_burst_of_mixed_traffic_loses_nothing(start_server, database_url: str, db) -> None:
    local = start_server(DATABASE_URL=database_url, REGISTER_MAX_PER_IP="1000000", LOGIN_MAX_FAILURES_PER_IP="1000000")
    ids = itertools.count()
    lock = threading.Lock()
    seen = {"statuses": [], "latencies": [], "registered": set(), "logins": {}, "reused_after_logout": 0}
    deadline = time.monotonic() + SECONDS

    def timed(call, *args, **kwargs):
        started = time.perf_counter()
        result = call(*args, **kwargs)
        with lock:
            seen["statuses"].append(result[0])
            seen["latencies"].append(time.perf_counter() - started)
        return result

    def client() -> None:
        email = f"load{next(ids)}@example.com"
        if timed(post_json, f"{local.url}/register/", {**USER, "email": email})[0] == 201:
            with lock:
                seen["registered"].add(email)
        while time.monotonic() < deadline:
            status, headers, _ = timed(post_json, f"{local.url}/login/", {"email": email, "password": USER["password"]})
            if status != 200:
                continue
            with lock:
                seen["logins"][email] = seen["logins"].get(email, 0) + 1
            cookie = next(v for k, v in headers if k == "Set-Cookie").split(";")[0]
            timed(fetch, f"{local.url}/healthcheck/")
            if timed(post_json, f"{local.url}/logout/", {}, cookie)[0] == 204:
                after = timed(fetch, f"{local.url}/login/", headers={"Accept": "application/json", "Cookie": cookie})
                if json.loads(after[2])["user"] is not None:
                    with lock:
                        seen["reused_after_logout"] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    # THEN no 5xx, every registration is a row, every login was counted, no session outlived its logout
    assert [s for s in seen["statuses"] if s >= 500] == []
    rows = dict(db.execute("SELECT email, login_count FROM public.users WHERE email LIKE 'load%'").fetchall())
    assert set(rows) == seen["registered"] and len(rows) == CLIENTS
    assert all(rows[email] == seen["logins"].get(email, 0) for email in rows)
    assert seen["reused_after_logout"] == 0
    assert db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0] == 0
    latencies = sorted(seen["latencies"])
    report = {"clients": CLIENTS, "seconds": round(elapsed, 1), "requests": len(latencies),
              "requests_per_second": round(len(latencies) / elapsed, 1),
              "p50_ms": round(statistics.median(latencies) * 1000, 1),
              "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
              "logins": sum(seen["logins"].values())}
    (ROOT / ".bench").mkdir(exist_ok=True)
    (ROOT / ".bench" / "load.json").write_text(json.dumps(report, indent=2))
    print("load:", json.dumps(report))
