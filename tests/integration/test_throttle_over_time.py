"""Throttling over time and under concurrency (SPEC), through the real login function and SQL: a
simulated day of an attacker with an injected clock, refused attempts counted nowhere, device
cookies, and parallel correct logins."""

from __future__ import annotations

import bisect
import json
import threading
from datetime import timedelta

import psycopg
import pytest

from dashgate.errors import ConfigurationError, ServiceUnavailable
from dashgate.settings import Settings, worst_case_verifications_per_day
from dashgate.store import Store, one_round_trip
from tests.conftest import ALICE, PASSWORD
from tests.integration.test_login import CREDENTIALS, count_hashing, login_json
from tests.support import ORIGIN, Browser, Clock, LambdaContext, make_event, response_cookies

DEVICE = "__Host-device"
CHEAP_HASH = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "1024"}
WRONG = {**CREDENTIALS, "password": "not the password"}


def hits(db: psycopg.Connection, key: str) -> int | None:
    row = db.execute("SELECT hits FROM public.dashgate_throttle WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def rotating_ip(n: int) -> str:
    """A new source address for every attempt: the attacker rents a botnet."""
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def most_in_any_day(moments: list) -> int:
    return max((bisect.bisect_left(moments, start + timedelta(days=1)) - i for i, start in enumerate(moments)),
               default=0)


# -- the daily budget -------------------------------------------------------------------------------
def test_two_days_of_optimally_paced_guesses_verify_at_most_100_passwords_a_day(load, alice: dict, db) -> None:
    # GIVEN the default settings, a clock we control, and an attacker on a new IP for every guess who
    # comes back the very second Retry-After says (the best pacing there is)
    module = load("login")
    clock = module.runtime.clock = Clock()
    counter = count_hashing(module)
    verified_at = []
    end, n = clock.now + timedelta(days=2), 0

    # WHEN they guess for two simulated days
    while clock.now < end:
        n += 1
        before = counter.verifies
        response = login_json(module, {**CREDENTIALS, "password": f"guess {n}"}, source_ip=rotating_ip(n))
        if counter.verifies > before:
            verified_at.append(clock.now)
        if response["statusCode"] == 429:
            clock.advance(int(response["headers"]["Retry-After"]))
        else:
            assert response["statusCode"] == 401

    # THEN no 24 hours saw more than 100 verifications (NIST SP 800-63B 5.2.2), as settings promise
    worst = most_in_any_day(verified_at)
    s = module.runtime.settings
    assert worst <= worst_case_verifications_per_day(s.login_max_failures_per_email, s.login_backoff_base_seconds,
                                                     s.login_backoff_max_seconds) <= 100
    assert len(verified_at) > worst  # the second day went on, more slowly: backoff never restarted


def test_waiting_out_a_backoff_does_not_restart_the_count(load, alice: dict, db) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="3", LOGIN_BACKOFF_BASE_SECONDS="60")
    clock = module.runtime.clock = Clock()
    for n in range(3):
        login_json(module, WRONG, source_ip=rotating_ip(n))

    # WHEN the attacker waits a quiet hour (the old code forgot failures after 15 minutes)
    clock.advance(3600)
    login_json(module, WRONG, source_ip=rotating_ip(10))
    refused = login_json(module, WRONG, source_ip=rotating_ip(11))

    # THEN the fourth failure already earned a backoff, and it doubled from the third
    assert refused["statusCode"] == 429
    assert int(refused["headers"]["Retry-After"]) == 120
    assert hits(db, "login-email:alice@example.com") == 4


def test_a_quiet_day_forgets_the_failures(load, alice: dict, db) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="2")
    clock = module.runtime.clock = Clock()
    for n in range(2):
        login_json(module, WRONG, source_ip=rotating_ip(n))

    clock.advance(24 * 3600)

    assert login_json(module, WRONG, source_ip=rotating_ip(5))["statusCode"] == 401
    assert hits(db, "login-email:alice@example.com") == 1


def test_backoff_doubles_with_each_further_failure_up_to_the_cap(load, alice: dict, db) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="2", LOGIN_BACKOFF_BASE_SECONDS="600",
                  LOGIN_BACKOFF_MAX_SECONDS="1000")
    clock = module.runtime.clock = Clock()
    for _ in range(2):
        login_json(module, WRONG)
    first_wait = int(login_json(module, CREDENTIALS)["headers"]["Retry-After"])
    clock.advance(first_wait)
    login_json(module, WRONG)

    second_wait = int(login_json(module, CREDENTIALS)["headers"]["Retry-After"])

    assert first_wait == 600
    assert second_wait == 1000  # 1200 s doubled, capped at LOGIN_BACKOFF_MAX_SECONDS


@pytest.mark.parametrize(("setting", "value"), [
    ("LOGIN_BACKOFF_MAX_SECONDS", "900"),  # 104 a day
    ("LOGIN_MAX_FAILURES_PER_EMAIL", "60"),
    ("LOGIN_FAILURE_WINDOW_SECONDS", "900"),  # the old default: 478 a day
])
def test_settings_refuse_limits_that_allow_more_than_100_guesses_a_day(database_url: str, setting: str,
                                                                      value: str) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        Settings.from_env({"DATABASE_URL": database_url, setting: value})


def test_settings_built_in_code_are_checked_too(database_url: str) -> None:
    with pytest.raises(ConfigurationError, match="LOGIN_FAILURE_WINDOW_SECONDS"):
        Settings(database_url=database_url, login_failure_window_seconds=900).check()
    with pytest.raises(ConfigurationError, match="allow 1000000000 password guesses"):
        Settings(database_url=database_url, login_max_failures_per_email=10**9).check()


def test_the_default_limits_allow_81_guesses_a_day(database_url: str) -> None:
    s = Settings.from_env({"DATABASE_URL": database_url})
    assert worst_case_verifications_per_day(s.login_max_failures_per_email, s.login_backoff_base_seconds,
                                            s.login_backoff_max_seconds) == 81


# -- refused means counted nowhere -----------------------------------------------------------------
def test_a_network_in_backoff_cannot_push_an_accounts_counter(load, alice: dict, db) -> None:
    # GIVEN a shared NAT address whose failures put it in backoff
    module = load("login", LOGIN_MAX_FAILURES_PER_IP="3")
    nat = "198.51.100.77"
    for n in range(3):
        login_json(module, {"email": f"someone{n}@example.com", "password": "password1"}, source_ip=nat)

    # WHEN an attacker behind it keeps trying Alice's account
    refused = [login_json(module, WRONG, source_ip=nat)["statusCode"] for _ in range(20)]

    # THEN every try was refused, none counted on Alice, and Alice signs in from home
    assert set(refused) == {429}
    assert hits(db, "login-email:alice@example.com") == 0
    assert login_json(module, CREDENTIALS, source_ip="203.0.113.50")["statusCode"] == 200


def test_an_account_in_backoff_cannot_push_a_networks_counter(load, alice: dict, db) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="2")
    for n in range(2):
        login_json(module, WRONG, source_ip=rotating_ip(n))

    refused = [login_json(module, WRONG, source_ip="192.0.2.33")["statusCode"] for _ in range(10)]

    assert set(refused) == {429}
    assert hits(db, "login-ip:192.0.2.33") == 0


# -- device cookies -----------------------------------------------------------------------------------
@pytest.fixture
def owners_device(load, alice: dict) -> tuple:
    """The login function, its clock, and the device cookie of Alice's own browser (from a past login)."""
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="3")
    clock = module.runtime.clock = Clock()
    cookie = response_cookies(login_json(module, CREDENTIALS, source_ip="203.0.113.50"))[DEVICE]
    assert cookie["max-age"] == str(90 * 86400) and cookie["httponly"] and cookie["secure"]
    return module, clock, f"{DEVICE}={cookie['value']}"


def hold_in_backoff(module) -> None:
    for n in range(4):
        login_json(module, WRONG, source_ip=rotating_ip(n))
    assert login_json(module, CREDENTIALS, source_ip=rotating_ip(99))["statusCode"] == 429


def test_the_owners_device_gets_in_while_an_attacker_holds_the_account_in_backoff(owners_device, db) -> None:
    module, _, device = owners_device
    hold_in_backoff(module)

    response = login_json(module, CREDENTIALS, source_ip="203.0.113.50", cookies=[device])

    assert response["statusCode"] == 200
    assert hits(db, "login-email:alice@example.com") == 3  # the attacker's backoff stands


def test_a_device_has_a_backoff_of_its_own(owners_device, db) -> None:
    module, _, device = owners_device
    statuses = [login_json(module, WRONG, cookies=[device])["statusCode"] for _ in range(4)]

    assert statuses == [401, 401, 401, 429]
    assert hits(db, "login-email:alice@example.com") == 0  # counted on the device, not the account


@pytest.mark.parametrize("stolen", ["another account", "bad signature", "expired"])
def test_a_stolen_looking_device_token_counts_as_no_device(owners_device, handlers: dict, stolen: str) -> None:
    module, clock, device = owners_device
    if stolen == "another account":  # the attacker's own device, signed in to their own account
        bob = {"email": "bob@example.com", "password": PASSWORD}
        register(handlers, bob)
        device = f"{DEVICE}={response_cookies(login_json(module, bob))[DEVICE]['value']}"
    elif stolen == "bad signature":
        device = device[:-2] + ("AA" if not device.endswith("AA") else "BB")
    else:
        clock.advance(90 * 86400 + 1)
    hold_in_backoff(module)

    response = login_json(module, CREDENTIALS, source_ip="203.0.113.50", cookies=[device])

    assert response["statusCode"] == 429


def register(handlers: dict, credentials: dict) -> None:
    body = {**credentials, "first_name": "Bob", "last_name": "B"}
    event = make_event("POST", "/register/", json_body=body, headers={"origin": ORIGIN})
    assert handlers["register"].lambda_handler(event, LambdaContext())["statusCode"] == 201


# -- concurrency ---------------------------------------------------------------------------------------
def test_parallel_correct_logins_from_one_address_all_succeed(load, db) -> None:
    # GIVEN four execution environments signing Alice in from one address, over and over (a
    # double-clicked button, many times; a cheap hash so that they overlap often). The old
    # statements locked the two counters in opposite orders: this run saw 503s every time.
    Browser({"register": load("register", **CHEAP_HASH)}).submit("/register/", ALICE)
    modules = [load("login", **CHEAP_HASH) for _ in range(4)]
    statuses: list[int] = []

    def sign_in(module) -> None:
        statuses.extend(login_json(module, CREDENTIALS)["statusCode"] for _ in range(100))

    threads = [threading.Thread(target=sign_in, args=(m,)) for m in modules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 400
    assert db.execute("SELECT login_count FROM public.users").fetchone()[0] == 400


def test_a_deadlocked_transaction_is_retried(database_url: str, db) -> None:
    # GIVEN a transaction elsewhere that holds counter "b" and will ask for "a" (and waits long
    # before checking for deadlock, so the server picks our side to abort)
    for key in ("a", "b"):
        db.execute("INSERT INTO public.dashgate_throttle VALUES (%s, 0, now(), now())", (key,))
    store = Store(lambda: database_url)
    attempts = []

    def work(conn: psycopg.Connection) -> None:
        attempts.append(1)
        with conn.transaction():
            conn.execute("UPDATE public.dashgate_throttle SET hits = hits + 1 WHERE key = 'a'")
            if len(attempts) == 1:
                holder_waits.set()
            conn.execute("UPDATE public.dashgate_throttle SET hits = hits + 1 WHERE key = 'b'")

    holder_waits = threading.Event()
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SET deadlock_timeout = '10s'")
        with other.transaction():
            other.execute("UPDATE public.dashgate_throttle SET hits = hits + 10 WHERE key = 'b'")
            worker = threading.Thread(target=store._run, args=(work,))
            worker.start()
            holder_waits.wait(5)
            # WHEN it asks for "a": a deadlock, which the server resolves by aborting our transaction
            other.execute("UPDATE public.dashgate_throttle SET hits = hits + 10 WHERE key = 'a'")
        worker.join(10)
    store.close()

    # THEN our work ran again after the other committed, and both changes landed exactly once
    assert len(attempts) == 2
    assert dict(db.execute("SELECT key, hits FROM public.dashgate_throttle").fetchall()) == {"a": 11, "b": 11}


def test_a_transaction_in_one_round_trip_is_all_or_nothing_and_leaves_the_connection_usable(
        database_url: str, db) -> None:
    store = Store(lambda: database_url)

    def work(conn: psycopg.Connection) -> None:
        with one_round_trip(conn):
            conn.execute("INSERT INTO public.dashgate_throttle VALUES ('x', 1, now(), now())")
            conn.execute("SELECT 1 / 0")

    with pytest.raises(ServiceUnavailable):
        store._run(work)
    pid = store.backend_pid

    assert db.execute("SELECT count(*) FROM public.dashgate_throttle").fetchone()[0] == 0
    assert store.ping("select 1") >= 0 and store.backend_pid == pid
    store.close()


def test_a_refused_json_attempt_says_why(load, alice: dict) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="1")
    login_json(module, WRONG)

    body = json.loads(login_json(module, CREDENTIALS)["body"])

    assert body["error"] == "too_many_requests"
