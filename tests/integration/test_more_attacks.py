"""Attacks the SPEC implies beyond the CSRF and redirect vectors: sizes, injection, fixation."""

from __future__ import annotations

import json

from tests.conftest import ALICE, PASSWORD
from tests.integration.test_login import count_hashing
from tests.support import ORIGIN, Browser, LambdaContext, make_event, response_cookies


def test_a_one_megabyte_password_is_refused_before_hashing(handlers: dict, alice: dict, db) -> None:
    register_hasher, login_hasher = count_hashing(handlers["register"]), count_hashing(handlers["login"])
    huge = "p" * (1024 * 1024)

    signup = handlers["register"].lambda_handler(make_event(
        "POST", "/register/", json_body={**ALICE, "email": "big@example.com", "password": huge},
        headers={"origin": ORIGIN}), LambdaContext())
    login = handlers["login"].lambda_handler(make_event(
        "POST", "/login/", json_body={"email": "alice@example.com", "password": huge}, headers={"origin": ORIGIN}),
        LambdaContext())

    assert signup["statusCode"] == login["statusCode"] == 413
    assert register_hasher.hashes == login_hasher.verifies == 0
    assert db.execute("SELECT count(*) FROM public.users").fetchone()[0] == 1


def test_a_long_password_within_the_body_limit_is_refused_before_hashing(handlers: dict, alice: dict) -> None:
    hasher = count_hashing(handlers["login"])

    response = handlers["login"].lambda_handler(make_event(
        "POST", "/login/", json_body={"email": "alice@example.com", "password": "p" * 10_000},
        headers={"origin": ORIGIN}), LambdaContext())

    assert response["statusCode"] == 422 and hasher.verifies == 0


def test_names_cannot_inject_headers_or_markup(browser: Browser, handlers: dict, db) -> None:
    injected = {**ALICE, "first_name": "Eve\r\nSet-Cookie: admin=1", "last_name": "<script>alert(1)</script>"}

    crlf = browser.submit("/register/", injected)
    markup = browser.submit("/register/", {**injected, "first_name": "Eve"})

    assert crlf["statusCode"] == 422 and "admin" not in json.dumps(crlf["headers"])
    assert all("admin=1" not in c for c in crlf.get("cookies", []))
    assert markup["statusCode"] == 303  # stored as text, and escaped wherever it is shown:
    browser.submit("/login/", {"email": "alice@example.com", "password": PASSWORD})
    page = handlers["login"].lambda_handler(make_event("GET", "/login/", headers={"accept": "application/json"},
                                                       cookies=[f"__Host-session={browser.jar['__Host-session']}"]),
                                            LambdaContext())
    assert json.loads(page["body"])["user"]["last_name"] == "<script>alert(1)</script>"
    error_page = browser.submit("/register/", {**injected, "first_name": "Eve", "password_confirm": "x"})
    assert "<script>" not in error_page["body"] and "&lt;script&gt;" in error_page["body"]


def test_huge_and_many_headers_and_cookies_do_not_break_anything(handlers: dict, alice: dict) -> None:
    cookies = [f"c{n}={'x' * 100}" for n in range(300)] + ["__Host-session=" + "A" * 20_000]
    headers = {"x-big": "y" * 60_000, "accept": "application/json;" + "q=0.5," * 2000}

    for name, path in (("login", "/login/"), ("logout", "/logout/"), ("register", "/register/")):
        response = handlers[name].lambda_handler(make_event("GET", path, cookies=cookies, headers=headers),
                                                 LambdaContext())
        assert response["statusCode"] < 500


def test_a_session_cookie_planted_before_login_is_never_adopted(browser: Browser, alice: dict, db) -> None:
    # GIVEN an attacker who planted a cookie of their choosing in the victim's browser
    browser.jar["__Host-session"] = "attacker-chosen-value"

    response = browser.submit("/login/", {"email": "alice@example.com", "password": PASSWORD})

    issued = response_cookies(response)["__Host-session"]["value"]
    assert issued != "attacker-chosen-value" and len(issued) > 43
    assert db.execute("SELECT count(*) FROM public.dashgate_sessions").fetchone()[0] == 1
