"""SnapStart: the hooks each function registers with the Lambda runtime, called the way the runtime calls them."""

from __future__ import annotations

import json
import random
import sys
import types
from types import SimpleNamespace

import pytest

from dashgate import snapstart
from dashgate.sessions import Tokens
from dashgate.settings import Settings
from tests.conftest import KEY
from tests.support import ORIGIN, LambdaContext, make_event, response_cookies, wait_for

FUNCTIONS = ("register", "login", "logout", "health")
NEW_KEY = "n" * 40


@pytest.fixture
def lambda_runtime(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Lambda's `snapshot_restore_py` (only its managed runtimes ship it), recording what is registered."""
    hooks = SimpleNamespace(before=[], after=[])
    module = types.ModuleType("snapshot_restore_py")
    module.register_before_snapshot = lambda func, *args, **kwargs: hooks.before.append(func)
    module.register_after_restore = lambda func, *args, **kwargs: hooks.after.append(func)
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", module)
    return hooks


def take_snapshot(hooks: SimpleNamespace) -> None:
    """Run the before-snapshot hooks as Lambda does: in reverse order of registration."""
    for hook in reversed(hooks.before):
        hook()


def restore(hooks: SimpleNamespace) -> None:
    """Run the after-restore hooks as Lambda does: in order of registration."""
    for hook in hooks.after:
        hook()


def health_check(health) -> int:
    """GET /healthcheck/: the status."""
    return health.lambda_handler(make_event("GET", "/healthcheck/"), LambdaContext())["statusCode"]


def test_outside_lambda_there_is_nothing_to_register_with() -> None:
    assert snapstart.register_hooks(lambda: None, lambda: None) is False


def test_every_function_registers_both_hooks(lambda_runtime: SimpleNamespace, load) -> None:
    for name in FUNCTIONS:
        load(name)

    assert len(lambda_runtime.before) == len(lambda_runtime.after) == len(FUNCTIONS)


def test_the_snapshot_holds_no_database_connection(lambda_runtime: SimpleNamespace, load, db) -> None:
    # GIVEN a function whose connection is open (say, a request was served while publishing)
    health = load("health")
    assert health_check(health) == 200
    pid = health.runtime.store.backend_pid

    # WHEN Lambda takes the snapshot
    take_snapshot(lambda_runtime)

    # THEN the connection is closed on both ends, and the first request after a restore opens its own
    assert health.runtime.store.backend_pid is None
    wait_for(lambda: db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() is None)
    restore(lambda_runtime)
    assert health_check(health) == 200
    assert health.runtime.store.backend_pid not in (None, pid)


def test_a_restored_environment_draws_its_own_random_state(lambda_runtime: SimpleNamespace, load) -> None:
    login = load("login")
    dummy, state = login.runtime.passwords._dummy, random.getstate()

    restore(lambda_runtime)

    redrawn = login.runtime.passwords._dummy
    assert redrawn != dummy
    assert redrawn.rsplit("$", 2)[0] == dummy.rsplit("$", 2)[0]  # same algorithm and parameters: same cost
    assert random.getstate() != state


def test_a_restored_environment_reads_rotated_signing_keys(lambda_runtime: SimpleNamespace, load, aws,
                                                           monkeypatch: pytest.MonkeyPatch, alice: dict) -> None:
    # GIVEN a snapshot taken while the secret held the old key
    arn = aws.create_secret(Name="dashgate/session", SecretString=json.dumps({"current": KEY}))["ARN"]
    monkeypatch.delenv("SESSION_SECRETS")
    login = load("login", SESSION_SECRET_ARN=arn)
    take_snapshot(lambda_runtime)
    # WHEN the key is rotated, and only later an environment is restored from that snapshot
    aws.put_secret_value(SecretId=arn, SecretString=json.dumps({"current": NEW_KEY, "previous": [KEY]}))
    restore(lambda_runtime)
    response = login.lambda_handler(make_event("POST", "/login/", headers={"origin": ORIGIN}, json_body={
        "email": alice["email"], "password": alice["password"]}), LambdaContext())

    # THEN its new sessions are signed with the new key
    token = response_cookies(response)["__Host-session"]["value"]
    assert response["statusCode"] == 200
    assert Tokens(Settings(), (NEW_KEY,)).session_id(token) is not None
    assert Tokens(Settings(), (KEY,)).session_id(token) is None
