"""Fixtures: a real PostgreSQL (DATABASE_URL's server, or a throwaway cluster), fresh handlers, a browser."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dashgate.store import Store
from tests.support import Browser, ThrowawayCluster, load_handler

KEY = "k" * 40  # a current signing key
OLD_KEY = "o" * 40  # a previous one, still accepted
IDENTITY_KEY = "i" * 40  # signs the authorizer's identity assertions
TEST_ENV = {
    "SESSION_SECRETS": KEY,
    "IDENTITY_SECRETS": IDENTITY_KEY,
    "POWERTOOLS_METRICS_NAMESPACE": "dashgate-tests",
    "POWERTOOLS_SERVICE_NAME": "dashgate",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "PUBLIC_BASE_URL": "https://dash.example.test",
    "MAIL_FROM": "Dashboard <no-reply@example.test>",
}


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A superuser URL: DATABASE_URL's server when set, else a cluster started (and stopped) here."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    cluster = ThrowawayCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh database on that server, migrated, dropped at the end."""
    name = f"dashgate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_server)
    params["dbname"] = name
    url = make_conninfo(**params)
    store = Store(lambda: url)
    store.migrate()
    store.close()
    try:
        yield url
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database(pg_server: str) -> Iterator[str]:
    """A URL to a new, empty database (no migrations), dropped after the test."""
    name = f"dashgate_scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(pg_server, dbname=name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    """Secrets Manager, in-process (moto): the only AWS API dashgate calls."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection for assertions; every table starts empty."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE public.users, public.dashgate_sessions, public.dashgate_throttle, "
                     "public.dashgate_tokens RESTART IDENTITY CASCADE")
        yield conn


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path) -> dict[str, str]:
    """The environment a deployed function would have, pointed at the test database (mail goes to a
    spool and outbox under the test's own directory)."""
    values = {**TEST_ENV, "DATABASE_URL": database_url, "MAIL_OUTBOX_DIR": str(tmp_path / "outbox")}
    for name in list(os.environ):
        if name.startswith(("SESSION_", "ARGON2_", "LOGIN_", "REGISTER_", "COOKIE_", "DB_", "HEALTHCHECK_",
                            "IDENTITY_", "ORIGIN_", "MAIL_", "PUBLIC_BASE_URL", "PASSWORD_RESET_", "EMAIL_CONFIRM_",
                            "REQUIRE_CONFIRMED_", "FORGOT_", "SES_")):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def load(env: dict[str, str], db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch):
    """load("login", ARGON2_TIME_COST="3", ...) imports a handler afresh under extra settings."""
    loaded = []

    def _load(name: str, **overrides: str):
        for key, value in overrides.items():
            monkeypatch.setenv(key, value)
        module = load_handler(name)
        loaded.append(module)
        return module

    yield _load
    for module in loaded:
        module.runtime.store.close()


@pytest.fixture
def handlers(load) -> dict:
    """The four functions, as four execution environments."""
    return {name: load(name) for name in ("register", "login", "logout", "health")}


@pytest.fixture
def browser(handlers: dict) -> Browser:
    """A browser with an empty cookie jar."""
    return Browser(handlers)


PASSWORD = "correct horse battery"
ALICE = {"email": "Alice@Example.com", "first_name": "Alice", "last_name": "Liddell",
         "password": PASSWORD, "password_confirm": PASSWORD}


@pytest.fixture
def alice(browser: Browser) -> dict:
    """A registered user (through the real register function)."""
    response = browser.submit("/register/", ALICE)
    assert response["statusCode"] == 303, response
    return {**ALICE, "email": "alice@example.com"}
