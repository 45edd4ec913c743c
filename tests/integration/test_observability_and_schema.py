"""Logs (JSON, correlation id, no secrets), metrics, and migrations applied once under a lock."""

from __future__ import annotations

import json
import threading

import psycopg

from dashgate.store import Store, migrate
from tests.conftest import ALICE, KEY, PASSWORD
from tests.support import Browser, capture_logs


def test_a_full_journey_logs_json_with_the_request_id_and_no_secret(browser: Browser, db, capsys) -> None:
    # GIVEN every function's log stream captured (the browser fixture has loaded the functions)
    streams = {}
    with capture_logs("register") as streams["register"], capture_logs("login") as streams["login"], \
            capture_logs("logout") as streams["logout"]:
        # WHEN a user registers, fails once, signs in, and signs out
        browser.submit("/register/", ALICE)
        browser.submit("/login/", {"email": ALICE["email"], "password": "wrong password"})
        browser.submit("/login/", {"email": ALICE["email"], "password": PASSWORD, "remember_me": "y"})
        session_cookie = browser.jar["__Host-session"]
        csrf_cookie = browser.jar["__Host-csrf"]
        browser.get("/logout/")
    lines = [line for s in streams.values() for line in s.getvalue().splitlines() if line.strip()]
    stdout = capsys.readouterr().out

    # THEN each line is JSON with the API Gateway request id as correlation id; a request that went
    # well has its line in the gateway's access log, not here (tests/deploy: the access log's format)
    records = [json.loads(line) for line in lines]
    assert records and all(r["correlation_id"].startswith("req-") for r in records)
    assert all(r["message"] != "request" for r in records)
    # AND the refused sign-in is logged, with its status and code and nothing about the account
    refusals = [r for r in records if r["message"] == "Refused"]
    assert [(r["service"], r["status"], r["error"]) for r in refusals] == [
        ("dashgate-login", 401, "invalid_credentials")]
    assert ALICE["email"] not in "\n".join(lines)
    # AND no password, hash, cookie, token or key appears anywhere in the output
    password_hash = db.execute("SELECT password_hash FROM public.users").fetchone()[0]
    secrets = [PASSWORD, "wrong password", password_hash, password_hash.split("$")[-1], session_cookie,
               session_cookie.split(".")[0], csrf_cookie, KEY]
    for text in ("\n".join(lines), stdout):
        for secret in secrets:
            assert secret not in text


def test_metrics_are_emitted_in_embedded_metric_format(browser: Browser, capsys) -> None:
    capsys.readouterr()
    browser.submit("/register/", ALICE)

    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]

    assert any(m.get("Registrations") == [1.0] for m in emitted)
    assert emitted[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "dashgate-tests"


def test_migrations_apply_once_and_concurrently_under_the_lock(empty_database: str) -> None:
    url = empty_database
    applied: list[list[str]] = []

    def run() -> None:
        store = Store(lambda: url)
        applied.append(store.migrate())
        store.close()

    # WHEN four processes migrate at once, and then once more
    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with psycopg.connect(url, autocommit=True) as conn:
        again = migrate(conn)
        versions = [row[0] for row in conn.execute("SELECT version FROM public.dashgate_schema_migrations")]

    # THEN each migration was applied exactly once (each file is its own transaction, so the four
    # may share the work), and nothing was left to do
    assert sorted(v for a in applied for v in a) == sorted(versions)
    assert again == []
    assert versions[0] == "0001_users_sessions_throttle"


def test_migrations_complete_a_users_table_made_by_the_flask_app(empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.users (id serial PRIMARY KEY, email varchar(60) UNIQUE NOT NULL, "
                     "password_hash varchar(256), first_name varchar(50), last_name varchar(50), "
                     "created_at timestamp DEFAULT now() NOT NULL)")
        conn.execute("INSERT INTO public.users (email, password_hash) VALUES ('old@example.com', 'pbkdf2:sha256:x')")

        migrate(conn)

        row = conn.execute("SELECT email, password_hash, login_count FROM public.users").fetchone()
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'")}

    assert row == ("old@example.com", "pbkdf2:sha256:x", None)
    assert {"last_login_at", "last_login_ip", "login_count"} <= columns


def test_addresses_differing_only_in_case_are_kept_by_the_migrations(empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.users (id serial PRIMARY KEY, email varchar(60) UNIQUE NOT NULL)")
        conn.execute("INSERT INTO public.users (email) VALUES ('Twin@example.com'), ('twin@example.com')")

        migrate(conn)

        emails = sorted(r[0] for r in conn.execute("SELECT email FROM public.users"))
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'users'")}

    assert emails == ["Twin@example.com", "twin@example.com"]  # nothing rewritten or dropped
    assert "users_lower_email_idx" in indexes and "users_lower_email_key" not in indexes
