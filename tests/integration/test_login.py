"""POST and GET /login/ through the real handler: sessions, cookies, timing parity, throttling, rehash."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import ALICE, PASSWORD
from tests.support import ORIGIN, Browser, LambdaContext, make_event, response_cookies


class CountingHasher:
    """Wraps argon2's PasswordHasher to count verifications and hashes (the expensive calls)."""

    def __init__(self, inner) -> None:
        self.inner, self.verifies, self.hashes = inner, 0, 0

    def verify(self, *args):
        self.verifies += 1
        return self.inner.verify(*args)

    def hash(self, *args):
        self.hashes += 1
        return self.inner.hash(*args)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def count_hashing(module) -> CountingHasher:
    counter = CountingHasher(module.runtime.passwords.hasher)
    module.runtime.passwords.hasher = counter
    return counter


def login_json(module, body: dict, source_ip: str = "203.0.113.10", cookies: list[str] | None = None) -> dict:
    event = make_event("POST", "/login/", json_body=body, headers={"origin": ORIGIN}, source_ip=source_ip,
                       cookies=cookies)
    return module.lambda_handler(event, LambdaContext())


def sessions(db) -> list[tuple]:
    return db.execute("SELECT remember, created_at, expires_at, revoked_at FROM public.dashgate_sessions "
                      "ORDER BY created_at").fetchall()


CREDENTIALS = {"email": "alice@example.com", "password": PASSWORD}


def test_success_records_the_login_and_sets_a_session_cookie(browser: Browser, alice: dict, db) -> None:
    db.execute("UPDATE public.users SET login_count = NULL")  # the Flask app left NULLs: they count as 0
    before = datetime.now(UTC)

    response = browser.submit("/login/", {**CREDENTIALS, "email": " ALICE@example.com "})

    assert response["statusCode"] == 303
    assert response["headers"]["Location"] == "/dash/"
    cookie = response_cookies(response)["__Host-session"]
    assert cookie["path"] == "/" and cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    assert "max-age" not in cookie and "domain" not in cookie  # a browser-session cookie
    last_login_at, ip, count = db.execute(
        "SELECT last_login_at, last_login_ip, login_count FROM public.users").fetchone()
    assert before <= last_login_at <= datetime.now(UTC)
    assert (ip, count) == ("203.0.113.10", 1)
    remember, created, expires, revoked = sessions(db)[0]
    assert not remember and revoked is None
    assert expires - created == timedelta(hours=8)  # SESSION_TTL_SECONDS default


def test_remember_me_sets_a_persistent_cookie_for_a_day(browser: Browser, alice: dict, db) -> None:
    response = browser.submit("/login/", {**CREDENTIALS, "remember_me": "y"})

    assert response_cookies(response)["__Host-session"]["max-age"] == "86400"
    remember, created, expires, _ = sessions(db)[0]
    assert remember and expires - created == timedelta(days=1)


def test_each_login_creates_a_new_session(browser: Browser, alice: dict, db) -> None:
    first = response_cookies(browser.submit("/login/", CREDENTIALS))["__Host-session"]["value"]
    # (signed in, the login page redirects: sign in again through the JSON API, same cookie jar)
    second = response_cookies(browser.post("/login/", json_body=CREDENTIALS, headers={"origin": ORIGIN}))
    second = second["__Host-session"]["value"]

    assert first != second
    rows = sessions(db)
    assert len(rows) == 2
    assert rows[0][3] is not None and rows[1][3] is None  # the presented session was revoked, not adopted
    assert db.execute("SELECT login_count FROM public.users").fetchone()[0] == 2


def test_json_login_answers_200_with_the_user(handlers: dict, alice: dict) -> None:
    response = login_json(handlers["login"], {**CREDENTIALS, "remember_me": True})

    assert response["statusCode"] == 200
    assert json.loads(response["body"])["user"]["email"] == "alice@example.com"
    assert response_cookies(response)["__Host-session"]["max-age"] == "86400"


def test_unknown_email_and_wrong_password_are_indistinguishable(handlers: dict, alice: dict, db) -> None:
    module = handlers["login"]
    counter = count_hashing(module)

    unknown = login_json(module, {"email": "nobody@example.com", "password": PASSWORD})
    unknown_verifies = counter.verifies
    wrong = login_json(module, {**CREDENTIALS, "password": "not the password"})

    assert unknown["statusCode"] == wrong["statusCode"] == 401
    assert unknown["body"] == wrong["body"] == json.dumps(
        {"error": "invalid_credentials", "message": "Invalid email or password"}, separators=(",", ":"))
    assert unknown["headers"] == wrong["headers"]
    assert unknown_verifies == 1 and counter.verifies == 2
    assert sessions(db) == []


def test_browser_failure_shows_the_form_again_with_the_message(browser: Browser, alice: dict) -> None:
    response = browser.submit("/login/", {**CREDENTIALS, "password": "wrong password"})

    assert response["statusCode"] == 401
    assert "Invalid email or password" in response["body"]
    assert 'name="email"' in response["body"] and 'value="alice@example.com"' in response["body"]


def test_missing_fields_are_a_validation_error_without_hashing(handlers: dict, alice: dict) -> None:
    counter = count_hashing(handlers["login"])

    response = login_json(handlers["login"], {"email": "", "password": ""})

    assert response["statusCode"] == 422
    assert set(json.loads(response["body"])["fields"]) == {"email", "password"}
    assert counter.verifies == 0


def test_failures_for_one_email_are_throttled_without_running_the_hash(load, alice: dict, db) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="3", LOGIN_BACKOFF_BASE_SECONDS="30")
    counter = count_hashing(module)
    failures = [login_json(module, {**CREDENTIALS, "password": f"wrong-{n}"}, source_ip=f"198.51.100.{n}")
                for n in range(3)]

    # WHEN the right password comes next, from yet another address
    refused = login_json(module, CREDENTIALS, source_ip="192.0.2.1")

    assert [r["statusCode"] for r in failures] == [401, 401, 401]
    assert refused["statusCode"] == 429
    retry_after = int(refused["headers"]["Retry-After"])
    assert 1 <= retry_after <= 30
    message = json.loads(refused["body"])["message"]
    assert message == f"Too many failed login attempts. Try again in {retry_after} seconds."
    assert counter.verifies == 3  # the refused attempt never reached argon2
    assert sessions(db) == []


def test_backoff_ends_so_a_typo_does_not_lock_anyone_out_for_long(load, alice: dict, db) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="2", LOGIN_BACKOFF_BASE_SECONDS="30")
    for _ in range(2):
        login_json(module, {**CREDENTIALS, "password": "typo typo"})
    assert login_json(module, CREDENTIALS)["statusCode"] == 429

    # WHEN the backoff has passed (the last failure was 31 seconds ago)
    db.execute("UPDATE public.dashgate_throttle SET last_hit_at = last_hit_at - interval '31 seconds'")
    response = login_json(module, CREDENTIALS)

    # THEN the right password works and clears the account's counter
    assert response["statusCode"] == 200
    assert db.execute("SELECT hits FROM public.dashgate_throttle WHERE key LIKE 'login-email:%'").fetchone()[0] == 0


def test_failures_from_one_ip_are_throttled_across_emails(load, alice: dict) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_IP="3")
    for n in range(3):
        login_json(module, {"email": f"guess{n}@example.com", "password": "password1"}, source_ip="192.0.2.99")

    from_that_ip = login_json(module, CREDENTIALS, source_ip="192.0.2.99")
    from_elsewhere = login_json(module, CREDENTIALS, source_ip="192.0.2.100")

    assert from_that_ip["statusCode"] == 429 and "Retry-After" in from_that_ip["headers"]
    assert from_elsewhere["statusCode"] == 200


def test_browser_throttling_shows_the_form_with_the_message(load, alice: dict, handlers: dict) -> None:
    browser = Browser({**handlers, "login": load("login", LOGIN_MAX_FAILURES_PER_EMAIL="1")})
    browser.submit("/login/", {**CREDENTIALS, "password": "wrong password"})

    response = browser.submit("/login/", CREDENTIALS)

    assert response["statusCode"] == 429
    assert "Too many failed login attempts. Try again in" in response["body"]
    assert int(response["headers"]["Retry-After"]) > 0


def test_a_hash_made_with_weaker_parameters_is_rehashed_at_login(load, db) -> None:
    weak = Browser({"register": load("register", ARGON2_TIME_COST="1", ARGON2_MEMORY_COST="8192")})
    weak.submit("/register/", ALICE)
    old_hash = db.execute("SELECT password_hash FROM public.users").fetchone()[0]
    module = load("login", ARGON2_TIME_COST="2", ARGON2_MEMORY_COST="19456")  # the defaults

    response = login_json(module, CREDENTIALS)

    new_hash = db.execute("SELECT password_hash FROM public.users").fetchone()[0]
    assert response["statusCode"] == 200
    assert old_hash.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert login_json(module, CREDENTIALS)["statusCode"] == 200  # the new hash verifies


def test_a_current_hash_is_not_rewritten(handlers: dict, alice: dict, db) -> None:
    old_hash = db.execute("SELECT password_hash FROM public.users").fetchone()[0]
    counter = count_hashing(handlers["login"])

    login_json(handlers["login"], CREDENTIALS)

    assert db.execute("SELECT password_hash FROM public.users").fetchone()[0] == old_hash
    assert counter.hashes == 0


def test_signed_in_get_redirects_to_next_or_the_default(browser: Browser, alice: dict) -> None:
    browser.submit("/login/", CREDENTIALS)

    default = browser.get("/login/")
    onward = browser.get("/login/", query="next=%2Fdash%2Freports%3Fticker%3DAAPL")

    assert default["statusCode"] == 303 and default["headers"]["Location"] == "/dash/"
    assert onward["headers"]["Location"] == "/dash/reports?ticker=AAPL"


def test_signed_out_get_carries_next_through_the_form(browser: Browser, alice: dict) -> None:
    page = browser.get("/login/", query="next=/dash/reports")

    assert page["statusCode"] == 200
    assert 'name="next" value="/dash/reports"' in page["body"]
    response = browser.submit("/login/?next=/dash/reports", CREDENTIALS)
    assert response["headers"]["Location"] == "/dash/reports"


def test_next_from_the_form_field_is_followed(browser: Browser, alice: dict) -> None:
    response = browser.submit("/login/", {**CREDENTIALS, "next": "/dash/prices"})

    assert response["headers"]["Location"] == "/dash/prices"


@pytest.mark.parametrize("vector", [
    "https://evil.example", "//evil.example", "////evil.example", "/\\evil.example", "\\\\evil.example",
    "https:\\\\evil.example", "/%09/evil.example", "javascript:alert(1)", "/dash/\r\nSet-Cookie: x=1",
])
def test_open_redirect_vectors_fall_back_to_the_default(browser: Browser, alice: dict, vector: str) -> None:
    from urllib.parse import quote

    via_form = browser.submit("/login/", {**CREDENTIALS, "next": vector})
    browser.jar.pop("__Host-session")  # signed out again, to use the form once more
    via_query = browser.submit(f"/login/?next={quote(vector)}", CREDENTIALS)
    signed_in_get = browser.get("/login/", query=f"next={quote(vector)}")

    for response in (via_form, via_query, signed_in_get):
        assert response["statusCode"] == 303
        assert response["headers"]["Location"] == "/dash/"


def test_round_trips_stay_within_budget(handlers: dict, alice: dict, db) -> None:
    store = handlers["login"].runtime.store

    def trips(call) -> int:
        before = store.round_trips
        call()
        return store.round_trips - before

    assert trips(lambda: login_json(handlers["login"], CREDENTIALS)) == 2
    # a failure was counted when the attempt was claimed: nothing more to write
    assert trips(lambda: login_json(handlers["login"], {**CREDENTIALS, "password": "wrong password"})) == 1
    assert trips(lambda: login_json(handlers["login"], {"email": "nobody@example.com", "password": "x" * 9})) == 1
    register_store = handlers["register"].runtime.store
    before = register_store.round_trips
    handlers["register"].lambda_handler(make_event("POST", "/register/", json_body={**ALICE, "email": "b@example.com"},
                                                   headers={"origin": ORIGIN}), LambdaContext())
    assert register_store.round_trips - before == 1


def test_a_refused_attempt_costs_one_round_trip(load, alice: dict) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="1")
    login_json(module, {**CREDENTIALS, "password": "wrong password"})
    before = module.runtime.store.round_trips

    assert login_json(module, CREDENTIALS)["statusCode"] == 429
    assert module.runtime.store.round_trips - before == 1


def test_a_child_path_of_the_route_is_not_found(handlers: dict) -> None:
    # The gateway routes /login/{proxy+} here so that /login/ arrives; /login/anything is not ours.
    response = handlers["login"].lambda_handler(make_event("GET", "/login/extra"), LambdaContext())

    assert response["statusCode"] == 404


def test_parallel_guesses_cannot_slip_past_the_limit(load, alice: dict, db) -> None:
    # GIVEN twelve execution environments guessing Alice's password at the same moment
    modules = [load("login", LOGIN_MAX_FAILURES_PER_EMAIL="3") for _ in range(12)]
    counters = [count_hashing(m) for m in modules]
    barrier = threading.Barrier(len(modules))
    statuses: list[int] = []

    def guess(n: int) -> None:
        event = make_event("POST", "/login/", json_body={**CREDENTIALS, "password": f"guess {n}"},
                           headers={"origin": ORIGIN}, source_ip=f"198.51.100.{n}")
        barrier.wait()
        statuses.append(modules[n].lambda_handler(event, LambdaContext())["statusCode"])

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(len(modules))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN exactly the limit reached argon2; every other guess was refused without a hash
    assert sorted(statuses) == [401] * 3 + [429] * 9
    assert sum(c.verifies for c in counters) == 3


def test_a_successful_login_does_not_count_against_the_network(load, alice: dict, db) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_IP="2")

    statuses = [login_json(module, CREDENTIALS)["statusCode"] for _ in range(4)]

    assert statuses == [200] * 4
    assert db.execute("SELECT hits FROM public.dashgate_throttle WHERE key LIKE 'login-ip:%'").fetchone()[0] == 0


def test_ipv6_clients_are_counted_by_their_64_network(load, alice: dict) -> None:
    module = load("login", LOGIN_MAX_FAILURES_PER_IP="2")
    for host in ("1", "2"):
        login_json(module, {"email": f"x{host}@example.com", "password": "password1"},
                   source_ip=f"2001:db8:1:2::{host}")

    same_network = login_json(module, CREDENTIALS, source_ip="2001:db8:1:2::99")
    other_network = login_json(module, CREDENTIALS, source_ip="2001:db8:1:3::1")

    assert same_network["statusCode"] == 429 and other_network["statusCode"] == 200
