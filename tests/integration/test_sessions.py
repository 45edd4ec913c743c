"""Session validity, signing keys (rotation, Secrets Manager), the connection's life, and outages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dashgate.sessions import Tokens, hash_session_id
from dashgate.settings import Settings
from tests.conftest import ALICE, KEY, OLD_KEY, PASSWORD
from tests.support import ORIGIN, Browser, LambdaContext, capture_logs, json_endpoint, make_event

CREDENTIALS = {"email": "alice@example.com", "password": PASSWORD}


def signed_in_as(login_module, token: str) -> bool:
    """GET /login/ with a session cookie: a redirect means the session was accepted."""
    event = make_event("GET", "/login/", cookies=[f"__Host-session={token}"])
    return login_module.lambda_handler(event, LambdaContext())["statusCode"] == 303


def plant_session(db, key: str, *, remember: bool = False, created: datetime | None = None,
                  expires_in: timedelta = timedelta(hours=1), revoked: bool = False) -> str:
    """A session row for the first user, and its cookie value signed with `key`."""
    session_id, token = Tokens(Settings(), (key,)).new_session()
    now = created or datetime.now(UTC)
    db.execute(
        "INSERT INTO public.dashgate_sessions (id_hash, user_id, remember, created_at, last_seen_at, expires_at, "
        "revoked_at) SELECT %s, id, %s, %s, %s, %s, %s FROM public.users LIMIT 1",
        (hash_session_id(session_id), remember, now, now, now + expires_in, now if revoked else None),
    )
    return token


def test_a_live_session_is_signed_in(handlers: dict, alice: dict, db) -> None:
    assert signed_in_as(handlers["login"], plant_session(db, KEY))


def test_a_tampered_cookie_means_signed_out(handlers: dict, alice: dict, db) -> None:
    token = plant_session(db, KEY)
    # (flip a character that carries whole bits: the last base64 character may carry padding only)
    tampered = ("A" if token[0] != "A" else "B") + token[1:]
    signature_flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]

    assert not signed_in_as(handlers["login"], tampered)
    assert not signed_in_as(handlers["login"], signature_flipped)
    assert not signed_in_as(handlers["login"], "garbage")
    assert not signed_in_as(handlers["login"], "")


def test_an_expired_session_means_signed_out(handlers: dict, alice: dict, db) -> None:
    token = plant_session(db, KEY, created=datetime.now(UTC) - timedelta(hours=2), expires_in=timedelta(hours=1))

    assert not signed_in_as(handlers["login"], token)


def test_a_revoked_session_means_signed_out(handlers: dict, alice: dict, db) -> None:
    assert not signed_in_as(handlers["login"], plant_session(db, KEY, revoked=True))


def test_a_cookie_signed_with_a_foreign_key_means_signed_out(handlers: dict, alice: dict, db) -> None:
    assert not signed_in_as(handlers["login"], plant_session(db, "f" * 40))


def test_a_session_of_a_deleted_user_means_signed_out(handlers: dict, alice: dict, db) -> None:
    token = plant_session(db, KEY)
    db.execute("DELETE FROM public.users")

    assert not signed_in_as(handlers["login"], token)


def test_an_idle_browser_session_ends_but_a_remembered_one_does_not(handlers: dict, alice: dict, db) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=2)  # SESSION_IDLE_SECONDS defaults to one hour
    idle = plant_session(db, KEY, created=long_ago, expires_in=timedelta(hours=8))
    remembered = plant_session(db, KEY, created=long_ago, expires_in=timedelta(days=1), remember=True)

    assert not signed_in_as(handlers["login"], idle)
    assert signed_in_as(handlers["login"], remembered)


def test_use_is_recorded_at_most_every_few_minutes(handlers: dict, alice: dict, db) -> None:
    token = plant_session(db, KEY, created=datetime.now(UTC) - timedelta(minutes=10))
    signed_in_as(handlers["login"], token)
    first_seen = db.execute("SELECT last_seen_at FROM public.dashgate_sessions").fetchone()[0]

    signed_in_as(handlers["login"], token)

    assert datetime.now(UTC) - first_seen < timedelta(seconds=30)  # touched: it was 10 minutes old
    assert db.execute("SELECT last_seen_at FROM public.dashgate_sessions").fetchone()[0] == first_seen  # not again


def test_a_token_signed_with_the_previous_key_still_verifies(load, alice: dict, db) -> None:
    login = load("login", SESSION_SECRETS=f"{'n' * 40},{OLD_KEY}")
    token = plant_session(db, OLD_KEY)

    assert signed_in_as(login, token)


def test_new_tokens_are_signed_with_the_current_key(load, alice: dict, db) -> None:
    rotated = load("login", SESSION_SECRETS=f"{'n' * 40},{KEY}")
    response = rotated.lambda_handler(make_event("POST", "/login/", json_body=CREDENTIALS, headers={"origin": ORIGIN}),
                                      LambdaContext())
    token = response["cookies"][0].split(";")[0].split("=", 1)[1]

    only_current = load("login", SESSION_SECRETS="n" * 40)
    only_old = load("login", SESSION_SECRETS=KEY)
    assert signed_in_as(only_current, token)
    assert not signed_in_as(only_old, token)


# -- signing keys from Secrets Manager --------------------------------------------------------------
@pytest.mark.parametrize("secret_string", [
    json.dumps({"current": "c" * 40, "previous": KEY}),
    json.dumps({"current": "c" * 40, "previous": [KEY]}),
    f"{'c' * 40},{KEY}",
])
def test_keys_come_from_secrets_manager_when_an_arn_is_set(load, aws, monkeypatch, alice: dict, db,
                                                           secret_string: str) -> None:
    arn = aws.create_secret(Name="dashgate/session", SecretString=secret_string)["ARN"]
    monkeypatch.delenv("SESSION_SECRETS")

    login = load("login", SESSION_SECRET_ARN=arn)

    assert signed_in_as(login, plant_session(db, KEY))  # the previous key from the secret
    assert signed_in_as(login, plant_session(db, "c" * 40))  # the current one
    assert not signed_in_as(login, plant_session(db, "z" * 40))


def test_secrets_manager_failing_at_cold_start_gives_503_then_recovers(load, aws, monkeypatch, alice: dict) -> None:
    arn = "dashgate/session"  # Secrets Manager takes a name or an ARN; this one does not exist yet
    monkeypatch.delenv("SESSION_SECRETS")
    with capture_logs("login") as logs:
        login = load("login", SESSION_SECRET_ARN=arn)  # the secret does not exist (yet): no crash at import

    refused = login.lambda_handler(make_event("POST", "/login/", json_body=CREDENTIALS, headers={"origin": ORIGIN}),
                                   LambdaContext())
    assert refused["statusCode"] == 503
    assert json.loads(refused["body"])["error"] == "service_unavailable"
    assert "Could not read the session signing keys" in logs.getvalue()
    # WHEN the secret appears, the same execution environment recovers without a restart
    aws.create_secret(Name="dashgate/session", SecretString=json.dumps({"current": KEY}))
    recovered = login.lambda_handler(make_event("POST", "/login/", json_body=CREDENTIALS, headers={"origin": ORIGIN}),
                                     LambdaContext())
    assert recovered["statusCode"] == 200


def test_without_any_keys_start_up_stops_naming_both_variables(load, monkeypatch) -> None:
    monkeypatch.delenv("SESSION_SECRETS")

    from dashgate.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"SESSION_SECRET_ARN.*SESSION_SECRETS"):
        load("login")


def test_the_database_can_come_from_an_rds_style_secret(load, aws, monkeypatch, database_url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(database_url)
    secret = {"host": params.get("host", "127.0.0.1"), "port": int(params.get("port", 5432)),
              "username": params.get("user", "postgres"), "password": "unused-with-trust",
              "dbname": params["dbname"], "engine": "postgres"}
    arn = aws.create_secret(Name="dashgate/db", SecretString=json.dumps(secret))["ARN"]
    monkeypatch.delenv("DATABASE_URL")

    health = load("health", DB_SECRET_ARN=arn)

    assert health.lambda_handler(make_event("GET", "/healthcheck/"), LambdaContext())["statusCode"] == 200


# -- the connection ---------------------------------------------------------------------------------
def test_one_connection_is_reused_and_reopened_after_the_server_drops_it(handlers: dict, alice: dict, db) -> None:
    login = handlers["login"]
    browser = Browser(handlers)
    browser.get("/login/", cookies=["__Host-session=x"])
    assert signed_in_as(login, plant_session(db, KEY))
    pid = login.runtime.store.backend_pid
    assert signed_in_as(login, plant_session(db, KEY))
    assert login.runtime.store.backend_pid == pid  # reused

    # WHEN the server terminates that backend between requests
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    ok = login.lambda_handler(make_event("POST", "/login/", json_body=CREDENTIALS, headers={"origin": ORIGIN}),
                              LambdaContext())

    # THEN the next request succeeds on a new connection
    assert ok["statusCode"] == 200
    assert login.runtime.store.backend_pid not in (None, pid)


CLOSED = "postgresql://postgres@127.0.0.1:1/postgres"


def test_registration_during_an_outage_is_503_and_writes_nothing(load, db) -> None:
    register = load("register", DATABASE_URL=CLOSED)
    browser = Browser({"register": register})

    api = register.lambda_handler(make_event("POST", "/register/", json_body=ALICE, headers={"origin": ORIGIN}),
                                  LambdaContext())
    page = browser.submit("/register/", ALICE)

    assert api["statusCode"] == page["statusCode"] == 503
    assert json.loads(api["body"]) == {"error": "service_unavailable", "message":
                                       "The service is temporarily unavailable. Please try again in a moment."}
    assert "temporarily unavailable" in page["body"] and "127.0.0.1" not in page["body"]
    assert db.execute("SELECT count(*) FROM public.users").fetchone()[0] == 0


def test_login_during_an_outage_is_503(load, alice: dict) -> None:
    login = load("login", DATABASE_URL=CLOSED)

    response = login.lambda_handler(make_event("POST", "/login/", json_body=CREDENTIALS, headers={"origin": ORIGIN}),
                                    LambdaContext())
    token = Tokens(Settings(), (KEY,)).new_session()[1]  # well signed: the lookup needs the database
    page = login.lambda_handler(make_event("GET", "/login/", cookies=[f"__Host-session={token}"]), LambdaContext())

    assert response["statusCode"] == 503 and page["statusCode"] == 503
    assert "psycopg" not in response["body"] and "port" not in response["body"]


def test_behind_rds_proxy_nothing_pins_the_connection(load, database_url: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    # DB_HOST names an RDS Proxy: no server-side prepared statements, no startup parameters
    login = load("login", DB_HOST=conninfo_to_dict(database_url).get("host", "127.0.0.1"))
    for _ in range(8):  # psycopg would prepare from the 5th run of a statement
        signed_in_as(login, Tokens(Settings(), (KEY,)).new_session()[1])
    conn = login.runtime.store._connection

    assert conn.prepare_threshold is None
    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
    assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"


@pytest.fixture
def secrets_extension(monkeypatch: pytest.MonkeyPatch):
    """A stand-in for the Parameters and Secrets Lambda extension on a local port."""
    from urllib.parse import parse_qs, urlsplit

    secrets = {"dashgate/session": json.dumps({"current": "e" * 40})}
    seen: list[dict] = []

    def reply(request) -> tuple[int, dict]:
        parts = urlsplit(request.path)
        secret_id = parse_qs(parts.query)["secretId"][0]
        seen.append({"path": parts.path, "token": request.headers.get("X-Aws-Parameters-Secrets-Token")})
        return 200, {"Name": secret_id, "SecretString": secrets[secret_id]}

    with json_endpoint(reply) as port:
        monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", str(port))
        monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
        yield seen


def test_keys_come_through_the_secrets_extension_without_boto3(load, secrets_extension, monkeypatch, alice: dict,
                                                               db) -> None:
    import subprocess
    import sys

    monkeypatch.delenv("SESSION_SECRETS")
    login = load("login", SESSION_SECRET_ARN="dashgate/session")

    assert signed_in_as(login, plant_session(db, "e" * 40))
    assert secrets_extension == [{"path": "/secretsmanager/get", "token": "session-token"}]
    # and a cold start that reads it never imports boto3
    probe = ("import sys; from dashgate.sessions import load_signing_keys; from dashgate.settings import Settings; "
             "load_signing_keys(Settings.from_env()); print('boto3' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=str(Path(__file__).resolve().parents[2] / "shared"))
    assert result.stdout.strip() == "False"


def test_without_a_ready_extension_the_sdk_reads_the_secret(load, aws, monkeypatch, alice: dict, db) -> None:
    from localrun.postgres import free_port

    arn = aws.create_secret(Name="dashgate/session", SecretString=json.dumps({"current": "s" * 40}))["ARN"]
    monkeypatch.delenv("SESSION_SECRETS")
    monkeypatch.setenv("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", str(free_port()))  # nothing listens

    login = load("login", SESSION_SECRET_ARN=arn)

    assert signed_in_as(login, plant_session(db, "s" * 40))


def test_rotated_database_credentials_are_read_again(load, aws, monkeypatch, database_url: str, db) -> None:
    from psycopg.conninfo import conninfo_to_dict

    # GIVEN a function connected with credentials from an RDS-style secret
    params = conninfo_to_dict(database_url)
    db.execute("DROP ROLE IF EXISTS dashgate_rotating")
    db.execute("CREATE ROLE dashgate_rotating LOGIN SUPERUSER")
    secret = {"host": params.get("host", "127.0.0.1"), "port": int(params.get("port", 5432)),
              "username": "dashgate_rotating", "password": "old", "dbname": params["dbname"]}
    arn = aws.create_secret(Name="dashgate/db-rotating", SecretString=json.dumps(secret))["ARN"]
    monkeypatch.delenv("DATABASE_URL")
    health = load("health", DB_SECRET_ARN=arn)
    assert health.lambda_handler(make_event("GET", "/healthcheck/"), LambdaContext())["statusCode"] == 200

    # WHEN the secret rotates to other credentials and the old ones stop working
    aws.put_secret_value(SecretId=arn, SecretString=json.dumps({**secret, "username": "postgres", "password": "new"}))
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'dashgate_rotating'")
    db.execute("DROP ROLE dashgate_rotating")

    # THEN the next request reads the secret again and succeeds
    assert health.lambda_handler(make_event("GET", "/healthcheck/"), LambdaContext())["statusCode"] == 200


def test_a_connection_closed_for_idleness_is_reopened(handlers: dict, database_url: str, db) -> None:
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(database_url)["dbname"]
    db.execute(f'ALTER DATABASE "{name}" SET idle_session_timeout = 300')  # 0.3 s, for new connections
    try:
        health = handlers["health"]
        health.runtime.store.close()
        assert health.lambda_handler(make_event("GET", "/healthcheck/"), LambdaContext())["statusCode"] == 200
        import time

        time.sleep(0.6)  # the server closes the idle session (SQLSTATE 57P05)
        again = health.lambda_handler(make_event("GET", "/healthcheck/"), LambdaContext())
    finally:
        db.execute(f'ALTER DATABASE "{name}" RESET idle_session_timeout')
        handlers["health"].runtime.store.close()

    assert again["statusCode"] == 200


def test_unreadable_keys_give_503_even_where_an_error_page_needs_them(load, aws, monkeypatch) -> None:
    # A refused form is shown again with a fresh CSRF token, which needs the signing keys: when they
    # cannot be read, that answer is a 503 too, never an exception out of the function.
    monkeypatch.delenv("SESSION_SECRETS")
    login = load("login", SESSION_SECRET_ARN="dashgate/missing")

    invalid_form = login.lambda_handler(make_event("POST", "/login/", form={"email": ""},
                                                   headers={"origin": ORIGIN}), LambdaContext())
    page = login.lambda_handler(make_event("GET", "/login/"), LambdaContext())

    assert invalid_form["statusCode"] == 503 and page["statusCode"] == 503
    assert "The service is temporarily unavailable" in invalid_form["body"]
