"""POST and GET /register/ through the real handler, with rows checked in PostgreSQL."""

from __future__ import annotations

import json
import threading

import pytest

from tests.conftest import ALICE, PASSWORD
from tests.support import ORIGIN, Browser, LambdaContext, make_event, response_cookies


def register_json(handlers: dict, body: dict, source_ip: str = "203.0.113.10") -> dict:
    event = make_event("POST", "/register/", json_body=body, headers={"origin": ORIGIN}, source_ip=source_ip)
    return handlers["register"].lambda_handler(event, LambdaContext())


def user_rows(db) -> list[tuple]:
    return db.execute("SELECT email, first_name, last_name, password_hash, login_count FROM public.users").fetchall()


def test_get_shows_the_form_with_every_field_and_a_csrf_token(browser: Browser) -> None:
    response = browser.get("/register/")

    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"].startswith("text/html")
    for name in ("email", "first_name", "last_name", "password", "password_confirm", "csrf_token"):
        assert f'name="{name}"' in response["body"]
    # passwords are masked, and nothing stops pasting or a password manager (no scripts at all)
    assert 'name="password" type="password"' in response["body"]
    assert 'name="password_confirm" type="password"' in response["body"]
    assert 'autocomplete="new-password"' in response["body"] and "<script" not in response["body"]
    assert "__Host-csrf" in response_cookies(response)


def test_browser_registration_redirects_to_login_and_flashes_once(browser: Browser, db) -> None:
    response = browser.submit("/register/", ALICE)

    assert response["statusCode"] == 303
    assert response["headers"]["Location"] == "/login/"
    email, first, last, password_hash, count = user_rows(db)[0]
    assert (email, first, last, count) == ("alice@example.com", "Alice", "Liddell", 0)
    assert password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in password_hash
    # THEN the login page shows the flash once, and not on the next visit
    first_visit = browser.get("/login/")
    assert "You have successfully registered! You may now login." in first_visit["body"]
    assert response_cookies(first_visit)["__Host-flash"]["max-age"] == "0"
    assert "successfully registered" not in browser.get("/login/")["body"]


def test_json_registration_answers_201_with_the_user(handlers: dict, db) -> None:
    response = register_json(handlers, {"email": " Bob@Example.COM ", "password": PASSWORD,
                                        "first_name": " Bob ", "last_name": "Builder"})

    assert response["statusCode"] == 201
    user = json.loads(response["body"])["user"]
    assert set(user) == {"id", "email", "first_name", "last_name", "created_at", "email_confirmed"}
    assert (user["email"], user["first_name"], user["email_confirmed"]) == ("bob@example.com", "Bob", False)
    assert user_rows(db)[0][0] == "bob@example.com"


def test_an_address_registered_in_other_letter_case_is_refused(browser: Browser, handlers: dict, db) -> None:
    browser.submit("/register/", ALICE)

    page = browser.submit("/register/", {**ALICE, "email": "ALICE@example.COM"})
    api = register_json(handlers, {**ALICE, "email": "aLiCe@EXAMPLE.com"})

    assert page["statusCode"] == 409
    assert "That email address is already registered" in page["body"]
    assert api["statusCode"] == 409
    assert json.loads(api["body"]) == {
        "error": "email_taken", "message": "That email address is already registered"}
    assert len(user_rows(db)) == 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("email", "not-an-email", "Enter a valid email address."),
    ("email", "a@b", "Enter a valid email address."),
    ("email", "x" * 250 + "@example.com", "Email must be at most 254 characters."),
    ("password", "short", "Password must be 8 to 256 characters long."),
    ("password", "p" * 257, "Password must be 8 to 256 characters long."),
    ("password_confirm", "something else", "Passwords must match."),
    ("first_name", "   ", "First name is required."),
    ("first_name", "n" * 101, "First name must be at most 100 characters."),
    ("last_name", "Bell\x07", "Last name must not contain control characters."),
    ("last_name", "", "Last name is required."),
])
def test_each_invalid_field_is_named_next_to_the_field(browser: Browser, handlers: dict, db, field: str, value: str,
                                                        message: str) -> None:
    fields = {**ALICE, field: value}
    if field == "password":
        fields["password_confirm"] = value

    page = browser.submit("/register/", fields)
    api = register_json(handlers, fields)

    assert page["statusCode"] == 422
    assert f'id="{field}-error">{message}' in page["body"].replace("&#x27;", "'")
    assert api["statusCode"] == 422
    body = json.loads(api["body"])
    assert body["error"] == "validation_error" and body["fields"][field] == message
    assert user_rows(db) == []


def test_json_clients_may_omit_the_confirmation(handlers: dict, db) -> None:
    body = {k: v for k, v in ALICE.items() if k != "password_confirm"}

    assert register_json(handlers, body)["statusCode"] == 201


def test_the_form_keeps_entered_values_but_never_the_password(browser: Browser) -> None:
    page = browser.submit("/register/", {**ALICE, "password_confirm": "different!"})

    assert 'value="Alice@Example.com"' in page["body"]
    assert PASSWORD not in page["body"]


def test_concurrent_registrations_of_one_address_create_exactly_one_user(load, db) -> None:
    # GIVEN eight execution environments (Lambda runs concurrent requests in separate ones)
    modules = [load("register") for _ in range(8)]
    barrier = threading.Barrier(len(modules))
    results: list[int] = []

    def attempt(n: int) -> None:
        email = "Race@Example.com" if n % 2 else "race@example.com"
        event = make_event("POST", "/register/", json_body={**ALICE, "email": email}, headers={"origin": ORIGIN},
                           source_ip=f"198.51.100.{n}")
        barrier.wait()
        results.append(modules[n].lambda_handler(event, LambdaContext())["statusCode"])

    # WHEN they all register the same address at once
    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(len(modules))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN exactly one account exists and everyone else was told it is taken
    assert sorted(results) == [201] + [409] * 7
    assert db.execute("SELECT count(*) FROM public.users WHERE email = 'race@example.com'").fetchone()[0] == 1


def test_registrations_from_one_address_are_throttled_with_retry_after(load, db) -> None:
    handlers = {"register": load("register", REGISTER_MAX_PER_IP="3", REGISTER_WINDOW_SECONDS="600")}
    statuses = [register_json(handlers, {**ALICE, "email": f"user{n}@example.com"})["statusCode"] for n in range(3)]

    refused = register_json(handlers, {**ALICE, "email": "user9@example.com"})
    other_network = register_json(handlers, {**ALICE, "email": "user10@example.com"}, source_ip="192.0.2.77")

    assert statuses == [201, 201, 201]
    assert refused["statusCode"] == 429
    assert 590 <= int(refused["headers"]["Retry-After"]) <= 600
    assert db.execute("SELECT count(*) FROM public.users WHERE email = 'user9@example.com'").fetchone()[0] == 0
    assert other_network["statusCode"] == 201


def test_unsupported_methods_are_refused(handlers: dict, db) -> None:
    response = handlers["register"].lambda_handler(make_event("PUT", "/register/"), LambdaContext())

    assert response["statusCode"] == 405 and response["headers"]["Allow"] == "GET, HEAD, POST"
    assert user_rows(db) == []
