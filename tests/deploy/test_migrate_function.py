"""The deploy-time migration step: a custom resource that migrates and always answers CloudFormation."""

from __future__ import annotations

import time

import psycopg
import pytest

from dashgate.store import MIGRATION_LOCK_KEY, MIGRATIONS_DIR, migrate
from tests.support import LambdaContext, load_handler


def custom_resource_event(request_type: str, url: str) -> dict:
    return {"RequestType": request_type, "ResponseURL": url, "StackId": "arn:aws:cloudformation:eu-west-1:1:stack/s/x",
            "RequestId": "req-1", "LogicalResourceId": "SchemaMigrations", "ResourceType": "Custom::DashgateMigrations",
            "ResourceProperties": {"ServiceToken": "arn", "LayerVersion": "arn:layer:1"}}


def test_create_migrates_and_reports_success(monkeypatch, cloudformation, empty_database: str) -> None:
    url, received = cloudformation
    monkeypatch.setenv("DATABASE_URL", empty_database)
    module = load_handler("migrate")

    module.lambda_handler(custom_resource_event("Create", url), LambdaContext())
    module.lambda_handler(custom_resource_event("Update", url), LambdaContext())
    module.lambda_handler(custom_resource_event("Delete", url), LambdaContext())

    assert [r["body"]["Status"] for r in received] == ["SUCCESS"] * 3
    versions = sorted(path.stem for path in MIGRATIONS_DIR.glob("*.sql"))
    assert received[0]["body"]["Data"] == {"Applied": ",".join(versions)}
    assert received[1]["body"]["Data"] == {"Applied": "none"}
    assert {r["body"]["PhysicalResourceId"] for r in received} == {"dashgate-schema"}
    assert received[0]["content_type"] == ""
    with psycopg.connect(empty_database) as conn:  # Delete dropped nothing
        assert conn.execute("SELECT count(*) FROM public.dashgate_schema_migrations").fetchone()[0] == len(versions)


def test_a_database_failure_is_reported_not_left_hanging(monkeypatch, cloudformation) -> None:
    url, received = cloudformation
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    module = load_handler("migrate")

    module.lambda_handler(custom_resource_event("Create", url), LambdaContext())

    assert received[0]["body"]["Status"] == "FAILED"
    assert "OperationalError" in received[0]["body"]["Reason"]


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("DB_CONNECT_TIMEOUT", "soon", "DB_CONNECT_TIMEOUT"),
    ("DATABASE_URL", "", "DB_SECRET_ARN"),  # no database configured at all
])
def test_a_setting_that_fails_to_parse_is_answered_failed_with_its_name(monkeypatch, cloudformation, setting: str,
                                                                        value: str, named: str) -> None:
    url, received = cloudformation
    monkeypatch.setenv(setting, value)
    monkeypatch.delenv("DB_SECRET_ARN", raising=False)

    module = load_handler("migrate")  # the import itself reads nothing
    module.lambda_handler(custom_resource_event("Create", url), LambdaContext())

    assert received[0]["body"]["Status"] == "FAILED"
    assert "ConfigurationError" in received[0]["body"]["Reason"] and named in received[0]["body"]["Reason"]


def test_a_lock_held_too_long_is_answered_failed_well_before_the_timeout(monkeypatch, cloudformation,
                                                                         empty_database: str) -> None:
    # GIVEN a schema that lacks a column, and the dashboard's app holding users in a long transaction
    url, received = cloudformation
    with psycopg.connect(empty_database, autocommit=True) as conn:
        migrate(conn)
        conn.execute("ALTER TABLE public.users DROP COLUMN last_login_ip")
        conn.execute("DELETE FROM public.dashgate_schema_migrations")
    monkeypatch.setenv("DATABASE_URL", empty_database)
    module = load_handler("migrate")
    context = LambdaContext(timeout_seconds=28)  # 8 s of work, 20 s kept to answer

    with psycopg.connect(empty_database) as flask_app:
        flask_app.execute("SELECT count(*) FROM public.users").fetchone()
        started = time.monotonic()
        module.lambda_handler(custom_resource_event("Update", url), context)
        elapsed = time.monotonic() - started

    # THEN CloudFormation heard FAILED, with the reason, long before the function's own timeout
    assert received[0]["body"]["Status"] == "FAILED"
    assert "MigrationTimeout" in received[0]["body"]["Reason"]
    assert "0001_users_sessions_throttle" in received[0]["body"]["Reason"]
    assert elapsed < 28 - 10


def test_another_migration_holding_the_advisory_lock_is_answered_before_the_timeout(
        monkeypatch, cloudformation, empty_database: str) -> None:
    # GIVEN another migrating process (a second stack on the database, a retried invocation) holding the lock
    url, received = cloudformation
    monkeypatch.setenv("DATABASE_URL", empty_database)
    module = load_handler("migrate")

    with psycopg.connect(empty_database, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        started = time.monotonic()
        module.lambda_handler(custom_resource_event("Create", url), LambdaContext(timeout_seconds=28))
        elapsed = time.monotonic() - started

    assert received[0]["body"]["Status"] == "FAILED"
    assert elapsed < 28 - 10
