"""Protections that must hold during operations: key rotation with warm environments and a running
guard, a database that goes silent mid-connection, migrations beside a live dashboard, housekeeping,
and the guard in a multi-threaded host. Each test builds the environment *before* the change."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from psycopg.conninfo import conninfo_to_dict

from dashgate import store as store_module
from dashgate.guard import DashgateGuard, current_user
from dashgate.settings import Settings
from dashgate.store import migrate
from tests.conftest import ALICE, PASSWORD
from tests.support import ORIGIN, Browser, Clock, LambdaContext, MonotonicClock, Relay, make_event, response_cookies

CREDENTIALS = {"email": "alice@example.com", "password": PASSWORD}
K1, K2 = "1" * 40, "2" * 40
SESSION = "__Host-session"


def use_clock(keys, clock: MonotonicClock) -> None:
    """Give a key ring an injected clock; it reads the keys now, so its TTL starts on that clock."""
    keys.clock = clock
    keys.forget()
    _ = keys.current


def sign_in(login_module) -> str:
    event = make_event("POST", "/login/", json_body=CREDENTIALS, headers={"origin": ORIGIN})
    response = login_module.lambda_handler(event, LambdaContext())
    assert response["statusCode"] == 200, response
    return response_cookies(response)[SESSION]["value"]


def get(module, path: str, token: str) -> dict:
    return module.lambda_handler(make_event("GET", path, cookies=[f"{SESSION}={token}"]), LambdaContext())


# -- signing keys: the two-step rotation --------------------------------------------------------------
@pytest.fixture
def keys_secret(aws, monkeypatch: pytest.MonkeyPatch, env: dict) -> str:
    """Signing keys in Secrets Manager (moto), as deployed: {"current": K1}."""
    arn = aws.create_secret(Name="dashgate-keys", SecretString=json.dumps({"current": K1}))["ARN"]
    monkeypatch.delenv("SESSION_SECRETS")
    monkeypatch.setenv("SESSION_SECRET_ARN", arn)
    return arn


@pytest.fixture
def dashboard() -> Iterator:
    """A Flask host behind the guard, built from the environment (as a host process starts)."""
    app = Flask("dashboard")

    @app.route("/dash/")
    def page():
        return f"Hello, {current_user(app_request_environ()).first_name}!"

    from flask import request as flask_request

    def app_request_environ():
        return flask_request.environ

    guard = DashgateGuard(app.wsgi_app)
    app.wsgi_app = guard
    yield app.test_client(), guard
    guard.store.close()


def test_the_two_step_rotation_signs_nobody_out_with_warm_environments_and_a_running_guard(
        load, aws, keys_secret: str, alice: dict, dashboard, db) -> None:
    # GIVEN execution environments and the dashboard's guard, all started before the rotation
    client, guard = dashboard
    warm_login, warm_logout = load("login"), load("logout")
    clock = MonotonicClock()
    for keys in (warm_login.runtime.keys, warm_logout.runtime.keys, guard.keys):
        use_clock(keys, clock)
    old_token = sign_in(warm_login)  # signed with K1

    # WHEN step 1 publishes the next key, and every environment has read it (one TTL later) ...
    aws.put_secret_value(SecretId=keys_secret, SecretString=json.dumps({"current": K1, "next": K2}))
    clock.advance(300)
    client.set_cookie(SESSION, old_token)
    assert client.get("/dash/").status_code == 200
    assert get(warm_login, "/login/", old_token)["statusCode"] == 303
    get(warm_logout, "/logout/", "x")  # any request reads the keys again
    # ... and step 2 promotes it, before any warm environment reads the secret again
    aws.put_secret_value(SecretId=keys_secret, SecretString=json.dumps({"current": K2, "previous": [K1]}))
    new_login = load("login")
    new_token = sign_in(new_login)  # signed with K2, by an environment started after the rotation

    # THEN the running guard lets the new cookie in (no loop between /dash/ and /login/) ...
    client.set_cookie(SESSION, new_token)
    page = client.get("/dash/")
    assert page.status_code == 200 and page.text == "Hello, Alice!"
    # ... the warm login environment sees the user signed in and sends them on ...
    assert get(warm_login, "/login/", new_token)["headers"]["Location"] == "/dash/"
    # ... the new environment accepts the old cookie ...
    assert get(new_login, "/login/", old_token)["statusCode"] == 303
    # ... and a logout served by a warm environment really ends the session
    assert warm_logout.lambda_handler(make_event("GET", "/logout/", cookies=[f"{SESSION}={new_token}"],
                                                 headers={"sec-fetch-site": "same-origin",
                                                          "sec-fetch-mode": "navigate",
                                                          "referer": f"{ORIGIN}/dash/"}),
                                      LambdaContext())["statusCode"] == 303
    revoked = db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NOT NULL").fetchone()[0]
    assert revoked == 1
    assert client.get("/dash/").status_code == 303


def test_warm_environments_read_the_keys_again_after_the_ttl(load, aws, keys_secret: str, alice: dict) -> None:
    login = load("login", SIGNING_KEYS_TTL_SECONDS="60")
    use_clock(login.runtime.keys, clock := MonotonicClock())
    aws.put_secret_value(SecretId=keys_secret, SecretString=json.dumps({"current": K2, "previous": [K1]}))

    before = login.runtime.tokens.keys
    clock.advance(59)
    still = login.runtime.tokens.keys
    clock.advance(2)
    after = login.runtime.tokens.keys

    assert before == still == (K1,)
    assert after == (K2, K1)


def test_secrets_manager_failing_later_keeps_the_keys_already_read(load, aws, keys_secret: str, alice: dict,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    login = load("login")
    use_clock(login.runtime.keys, clock := MonotonicClock())
    token = sign_in(login)

    # WHEN the secret cannot be read any more at the next TTL
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")  # boto3 finds no credentials
    aws.delete_secret(SecretId=keys_secret, ForceDeleteWithoutRecovery=True)
    clock.advance(301)

    # THEN sign-in goes on with the keys already read
    assert get(login, "/login/", token)["statusCode"] == 303


def test_a_malformed_secret_written_later_keeps_the_keys_already_read(load, aws, keys_secret: str,
                                                                     alice: dict) -> None:
    login = load("login")
    use_clock(login.runtime.keys, clock := MonotonicClock())
    token = sign_in(login)

    # WHEN a rotation writes a key that is too short
    aws.put_secret_value(SecretId=keys_secret, SecretString=json.dumps({"current": K1, "next": "short"}))
    clock.advance(301)

    # THEN the environment keeps signing in with what it had, and reads again later, not every time
    assert get(login, "/login/", token)["statusCode"] == 303
    assert login.runtime.keys.keys == (K1,)
    assert login.runtime.keys._read_again_at == clock.seconds + 30


# -- a database that goes silent mid-connection ------------------------------------------------------
@pytest.fixture
def relay(database_url: str) -> Iterator[Relay]:
    params = conninfo_to_dict(database_url)
    relay = Relay(params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
    yield relay
    relay.close()


def test_health_answers_503_within_five_seconds_when_the_database_goes_silent(load, relay: Relay,
                                                                             database_url: str) -> None:
    # GIVEN a warm health function whose connection goes through a relay
    health = load("health", DATABASE_URL=relay.url(database_url))
    assert health.lambda_handler(make_event("GET", "/healthcheck/"), LambdaContext())["statusCode"] == 200

    # WHEN the path goes silent: no answer, no reset
    relay.silence()
    started = time.monotonic()
    response = health.lambda_handler(make_event("GET", "/healthcheck/"), LambdaContext())
    elapsed = time.monotonic() - started

    assert response["statusCode"] == 503
    assert elapsed < 5


def test_login_answers_503_within_its_bound_when_the_database_goes_silent(load, relay: Relay, database_url: str,
                                                                          alice: dict) -> None:
    login = load("login", DATABASE_URL=relay.url(database_url), DB_STATEMENT_TIMEOUT_MS="1000")
    assert sign_in(login)
    bound = login.runtime.store.round_trip_timeout  # statement timeout + 1 s (README: Database timeouts)

    relay.silence()
    started = time.monotonic()
    event = make_event("POST", "/login/", json_body=CREDENTIALS, headers={"origin": ORIGIN})
    response = login.lambda_handler(event, LambdaContext())
    elapsed = time.monotonic() - started

    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"] == "service_unavailable"
    assert bound == 2.0 and elapsed < bound + 2  # the claim is the round trip that goes unanswered


# -- migrations beside a live dashboard -----------------------------------------------------------------
def forget_migrations(conn: psycopg.Connection) -> None:
    """As if none had run: every file runs again (they must be idempotent)."""
    conn.execute("DELETE FROM public.dashgate_schema_migrations")


def read_users_quickly(url: str) -> None:
    """A plain read of users, as the dashboard does, allowed one second."""
    with psycopg.connect(url, autocommit=True, options="-c statement_timeout=1000") as reader:
        reader.execute("SELECT count(*) FROM public.users").fetchone()


def test_migrations_with_nothing_to_change_take_no_lock_a_live_transaction_holds(empty_database: str) -> None:
    url = empty_database
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        forget_migrations(conn)
    # GIVEN the dashboard's app in the middle of a transaction that wrote to users
    with psycopg.connect(url) as flask_app:
        flask_app.execute("UPDATE public.users SET login_count = login_count WHERE false")
        flask_app.execute("LOCK TABLE public.users IN ROW EXCLUSIVE MODE")

        # WHEN every migration runs again, allowed to wait for a lock only 200 ms, once
        with psycopg.connect(url, autocommit=True) as conn:
            applied = migrate(conn, lock_timeout_ms=200, attempts=1)
        read_users_quickly(url)

    # THEN all of them ran without waiting for the app (no exclusive lock: nothing to change)
    assert len(applied) == len(list(store_module.MIGRATIONS_DIR.glob("*.sql")))


def test_a_migration_that_must_lock_waits_briefly_lets_reads_through_and_retries(empty_database: str) -> None:
    url = empty_database
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("ALTER TABLE public.users DROP COLUMN last_login_ip")
        forget_migrations(conn)
    result: dict = {}
    # GIVEN a transaction of the dashboard's app that holds users for a while
    with psycopg.connect(url) as flask_app:
        flask_app.execute("SELECT count(*) FROM public.users").fetchone()

        def run() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                result["applied"] = migrate(conn, lock_timeout_ms=200, attempts=50, pause=0.1)

        worker = threading.Thread(target=run)
        worker.start()
        # WHEN the dashboard keeps reading users meanwhile (each read allowed one second)
        for _ in range(8):
            read_users_quickly(url)
            time.sleep(0.1)
        assert worker.is_alive()  # still waiting for the app's transaction
    # ... and the app's transaction ends
    worker.join(30)

    # THEN every read got through, and the migration finished once the table was free
    with psycopg.connect(url, autocommit=True) as conn:
        columns = {r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = "
                                              "'public.users'::regclass AND attnum > 0")}
    assert "0001_users_sessions_throttle" in result["applied"]
    assert "last_login_ip" in columns


def test_each_migration_file_is_its_own_transaction(empty_database: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE public.good (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE public.bad (id int); SELECT 1/0;")
    monkeypatch.setattr(store_module, "MIGRATIONS_DIR", tmp_path)

    with psycopg.connect(empty_database, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(conn)
        versions = [r[0] for r in conn.execute("SELECT version FROM public.dashgate_schema_migrations")]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    assert versions == ["0001_good"]
    assert "good" in tables and "bad" not in tables


# -- addresses that differ only in letter case (an adopted table) --------------------------------------
@pytest.fixture
def case_duplicates(empty_database: str, load, monkeypatch: pytest.MonkeyPatch) -> str:
    """A users table an older app filled with Alice twice, in two letter cases, then migrated."""
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.users (id serial PRIMARY KEY, email varchar(120) UNIQUE NOT NULL, "
                     "password_hash varchar(200), first_name varchar(60), last_name varchar(60))")
        # the newer row first on disk, so an arbitrary pick would find it first
        conn.execute("INSERT INTO public.users (id, email, first_name) VALUES (2, 'alice@example.COM', 'Newer'), "
                     "(1, 'Alice@Example.com', 'Old')")
        conn.execute("SELECT setval('users_id_seq', 2)")
        migrate(conn)
    monkeypatch.setenv("DATABASE_URL", empty_database)
    return empty_database


def test_a_third_letter_case_variant_cannot_register(load, case_duplicates: str) -> None:
    register = load("register")
    event = make_event("POST", "/register/", json_body={**ALICE, "email": "ALICE@example.com"},
                       headers={"origin": ORIGIN})

    response = register.lambda_handler(event, LambdaContext())

    assert response["statusCode"] == 409
    assert json.loads(response["body"])["error"] == "email_taken"


def test_sign_in_always_picks_the_oldest_of_the_variants(load, case_duplicates: str) -> None:
    from dashgate.passwords import Passwords

    hashed = Passwords(Settings.from_env()).hash(PASSWORD)
    with psycopg.connect(case_duplicates, autocommit=True) as conn:
        conn.execute("UPDATE public.users SET password_hash = %s", (hashed,))
    login = load("login")

    users = {json.loads(login.lambda_handler(make_event("POST", "/login/", json_body=CREDENTIALS,
                                                        headers={"origin": ORIGIN}), LambdaContext())["body"]
                        )["user"]["first_name"] for _ in range(5)}

    assert users == {"Old"}


# -- housekeeping --------------------------------------------------------------------------------------
def test_housekeeping_prunes_the_dead_and_keeps_what_a_throttle_still_needs(load, alice: dict, db) -> None:
    # GIVEN a live session and three dead ones (each dead for one reason only: expired, revoked, idle),
    # and counters quiet for 23 hours and for 3 days
    sign_in(load("login"))
    db.execute("INSERT INTO public.dashgate_sessions (id_hash, user_id, remember, created_at, last_seen_at, "
               "expires_at, revoked_at) SELECT sha256(v::bytea), id, v <> 'idle', now() - interval '2 hours', "
               "CASE v WHEN 'idle' THEN now() - interval '2 hours' ELSE now() END, "
               "CASE v WHEN 'expired' THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END, "
               "CASE v WHEN 'revoked' THEN now() END "
               "FROM public.users, (VALUES ('expired'), ('revoked'), ('idle')) x(v)")
    db.execute("INSERT INTO public.dashgate_throttle VALUES ('login-email:recent@example.com', 9, "
               "now() - interval '23 hours', now() - interval '23 hours'), ('login-email:gone@example.com', 9, "
               "now() - interval '3 days', now() - interval '3 days')")
    # and one-time tokens: outstanding, expired, used
    db.execute("INSERT INTO public.dashgate_tokens (token_hash, purpose, user_id, email, created_at, expires_at, "
               "used_at) SELECT sha256(v::bytea), 'password_reset', id, email, now() - interval '2 hours', "
               "CASE v WHEN 'expired' THEN now() - interval '1 hour' ELSE now() + interval '1 hour' END, "
               "CASE v WHEN 'used' THEN now() END FROM public.users, (VALUES ('live'), ('expired'), ('used')) x(v)")
    housekeeping = load("housekeeping")

    result = housekeeping.lambda_handler({"source": "aws.scheduler"}, LambdaContext())

    assert result == {"sessions": 3, "counters": 1, "tokens": 2}
    assert db.execute("SELECT count(*) FROM public.dashgate_tokens WHERE used_at IS NULL "
                      "AND expires_at > now()").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL "
                      "AND expires_at > now()").fetchone()[0] == 1
    keys = {r[0] for r in db.execute("SELECT key FROM public.dashgate_throttle")}
    assert "login-email:recent@example.com" in keys  # still in its day: pruning it would reset the backoff
    assert "login-email:gone@example.com" not in keys


def test_sign_in_prunes_nothing(load, alice: dict, db) -> None:
    db.execute("INSERT INTO public.dashgate_throttle VALUES ('login-email:gone@example.com', 1, "
               "now() - interval '3 days', now() - interval '3 days')")

    sign_in(load("login"))

    assert db.execute("SELECT count(*) FROM public.dashgate_throttle WHERE key LIKE '%gone%'").fetchone()[0] == 1


def test_the_housekeeping_cutoff_follows_the_configured_windows(database_url: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": database_url, "LOGIN_FAILURE_WINDOW_SECONDS": str(3 * 86400),
                                  "REGISTER_WINDOW_SECONDS": "7200"})
    assert timedelta(seconds=settings.counter_memory_seconds) == timedelta(days=3)


# -- the guard in a multi-threaded host ----------------------------------------------------------------
def test_the_guard_serves_many_threads_from_a_pool(handlers: dict, env: dict, db) -> None:
    # GIVEN eight users, each signed in
    tokens = {}
    for n in range(8):
        email = f"user{n}@example.com"
        Browser(handlers).submit("/register/", {**ALICE, "email": email, "first_name": f"User{n}"})
        tokens[f"User{n}"] = sign_in_as(handlers["login"], email)
    seen: dict[str, str] = {}

    def app(environ, start_response):
        time.sleep(0.05)  # a slow page: the threads overlap
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [current_user(environ).first_name.encode()]

    guard = DashgateGuard(app, settings=Settings.from_env(), pool_size=4)

    def visit(name: str) -> None:
        environ = {"PATH_INFO": "/dash/", "REQUEST_METHOD": "GET", "HTTP_COOKIE": f"{SESSION}={tokens[name]}"}
        seen[name] = b"".join(guard(environ, lambda *a: None)).decode()

    # WHEN all of them load a page at once, many times over
    threads = [threading.Thread(target=visit, args=(name,)) for name in tokens for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = guard.store._pool.get_stats()
    guard.store.close()

    # THEN each saw their own user, over more than one connection and never more than the pool's
    assert seen == {name: name for name in tokens}
    assert 1 < stats["pool_size"] <= 4


def sign_in_as(login_module, email: str) -> str:
    event = make_event("POST", "/login/", json_body={"email": email, "password": PASSWORD}, headers={"origin": ORIGIN})
    return response_cookies(login_module.lambda_handler(event, LambdaContext()))[SESSION]["value"]


def test_runtime_now_is_the_injected_clock(handlers: dict) -> None:
    clock = handlers["login"].runtime.clock = Clock()
    assert handlers["login"].runtime.now() == clock.now


# -- the gateway's secrets: identity assertion keys and origin-verify values ----------------------------
def test_rotating_the_gateways_secrets_keeps_a_running_host_and_warm_authorizers_working(
        load, aws, monkeypatch: pytest.MonkeyPatch, env: dict, alice: dict, session_cookie_for_alice: str) -> None:
    i1, i2, o1, o2 = "a" * 40, "b" * 40, "c" * 40, "d" * 40
    identity = aws.create_secret(Name="identity", SecretString=json.dumps({"current": i1}))["ARN"]
    origin = aws.create_secret(Name="origin", SecretString=json.dumps({"current": o1}))["ARN"]
    monkeypatch.delenv("IDENTITY_SECRETS")
    monkeypatch.setenv("IDENTITY_SECRET_ARN", identity)
    monkeypatch.setenv("ORIGIN_VERIFY_SECRET_ARN", origin)
    # GIVEN a warm authorizer and a dashboard host locked to the gateway, both started before the rotation
    warm = load("authorizer")
    clock = MonotonicClock()
    host = Flask("dashboard")
    host.add_url_rule("/dash/", "page", lambda: "Hello!")
    guard = DashgateGuard(host.wsgi_app)
    for ring in (warm.assertions, guard.assertions, guard.origins, guard.keys):
        use_clock(ring, clock)
    client = host.test_client()
    host.wsgi_app = guard

    def through_gateway(authorizer, origin_value: str) -> int:
        event = make_event("GET", "/dash/", cookies=[f"{SESSION}={session_cookie_for_alice}"])
        event.update(type="REQUEST", routeKey="ANY /dash", identitySource=[f"{SESSION}=..."])
        answer = authorizer.lambda_handler(event, LambdaContext())
        return client.get("/dash/", headers={"X-Dashgate-Identity": answer["context"]["assertion"],
                                             "X-Dashgate-Origin-Verify": origin_value}).status_code

    # WHEN step 1 publishes the next values and everyone has read them ...
    aws.put_secret_value(SecretId=identity, SecretString=json.dumps({"current": i1, "next": i2}))
    aws.put_secret_value(SecretId=origin, SecretString=json.dumps({"current": o1, "next": o2}))
    clock.advance(300)
    assert through_gateway(warm, o1) == 200
    # ... and step 2 promotes them; the gateway is deployed again (it sends o2), a new authorizer starts
    aws.put_secret_value(SecretId=identity, SecretString=json.dumps({"current": i2, "previous": [i1]}))
    aws.put_secret_value(SecretId=origin, SecretString=json.dumps({"current": o2, "previous": [o1]}))
    fresh = load("authorizer")

    # THEN the running host takes both the new and the warm authorizer's assertions, by either value
    assert through_gateway(fresh, o2) == 200
    assert through_gateway(warm, o2) == 200
    assert through_gateway(fresh, o1) == 200  # a gateway deployment not yet replaced
    assert through_gateway(fresh, "x" * 40) == 403
    # ... and still once everyone has read the promotion (the warm authorizer now signs with i2, the
    # host accepts i1 and o1 as previous) ...
    clock.advance(300)
    assert through_gateway(warm, o2) == through_gateway(fresh, o1) == 200
    assert warm.assertions.keys == (i2, i1)
    # ... until step 3 retires them
    aws.put_secret_value(SecretId=origin, SecretString=json.dumps({"current": o2}))
    clock.advance(300)
    assert through_gateway(fresh, o1) == 403 and through_gateway(fresh, o2) == 200
    guard.store.close()


@pytest.fixture
def session_cookie_for_alice(handlers: dict, alice: dict) -> str:
    return sign_in(handlers["login"])
