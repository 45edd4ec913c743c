"""The HTTP edge through the real functions: 405 with Allow, HEAD, strict types, one parser for
duplicate keys and repeated fields, the same-origin rule of a JSON GET /logout/, and threads that
each serve their own event."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest

from localrun.gateway import LambdaContext
from tests.conftest import PASSWORD
from tests.support import ORIGIN, Browser, make_event

PATHS = {"/register/": ("register", "GET, HEAD, POST"), "/login/": ("login", "GET, HEAD, POST"),
         "/logout/": ("logout", "GET, HEAD, POST"), "/healthcheck/": ("health", "GET, HEAD")}


def call(handlers: dict, name: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = handlers[name].lambda_handler(make_event(method, path, **kwargs), LambdaContext())
    assert response["statusCode"] < 500, response
    return response


def live_sessions(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0]


def counters(db: psycopg.Connection) -> list[tuple]:
    return db.execute("SELECT key, hits FROM public.dashgate_throttle ORDER BY key").fetchall()


# -- methods ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
def test_other_methods_get_405_with_allow_from_the_function_itself(handlers: dict, alice: dict, db, path: str,
                                                                   method: str) -> None:
    name, allow = PATHS[path]
    sessions_before = live_sessions(db)

    for target in (path, path.rstrip("/")):
        page = call(handlers, name, method, target)
        api = call(handlers, name, method, target, headers={"accept": "application/json"},
                   json_body={"email": alice["email"], "password": PASSWORD})

        assert page["statusCode"] == 405 and page["headers"]["Allow"] == allow
        assert api["statusCode"] == 405 and api["headers"]["Allow"] == allow
        assert json.loads(api["body"])["error"] == "method_not_allowed"
    assert live_sessions(db) == sessions_before and "cookies" not in api


@pytest.mark.parametrize("path", ["/register/", "/login/", "/healthcheck/"])
def test_head_is_the_get_answer_without_a_body(handlers: dict, path: str) -> None:
    name, _ = PATHS[path]
    get = call(handlers, name, "GET", path)
    head = call(handlers, name, "HEAD", path)

    assert head["statusCode"] == get["statusCode"] == 200
    assert head["body"] == "" and get["body"] != ""
    assert head["headers"]["Content-Type"] == get["headers"]["Content-Type"]


def test_head_logout_is_safe_it_never_signs_out(handlers: dict, alice: dict, browser: Browser, db) -> None:
    browser.submit("/login/", {"email": alice["email"], "password": PASSWORD})

    head = call(handlers, "logout", "HEAD", "/logout/", cookies=[f"{k}={v}" for k, v in browser.jar.items()])

    assert head["statusCode"] == 200 and head["body"] == "" and live_sessions(db) == 1


def test_a_path_below_a_route_is_not_found(handlers: dict) -> None:
    assert call(handlers, "login", "GET", "/login/x")["statusCode"] == 404
    assert call(handlers, "login", "PUT", "/login/x")["statusCode"] == 404


# -- strict types ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [997, 1, 0, "yes", "true", None, [True], {}])
def test_logout_everywhere_must_be_a_boolean(handlers: dict, alice: dict, browser: Browser, db, value) -> None:
    browser.submit("/login/", {"email": alice["email"], "password": PASSWORD})
    other = Browser(handlers)
    other.submit("/login/", {"email": alice["email"], "password": PASSWORD})
    assert live_sessions(db) == 2

    response = call(handlers, "logout", "POST", "/logout/", json_body={"everywhere": value},
                    cookies=[f"{k}={v}" for k, v in browser.jar.items()], headers={"origin": ORIGIN})

    assert response["statusCode"] == 422
    assert json.loads(response["body"])["fields"] == {"everywhere": "Must be true or false."}
    assert live_sessions(db) == 2 and "cookies" not in response  # nobody was signed out


@pytest.mark.parametrize("value", ["yes", "y", 1, "true", None])
def test_remember_me_in_json_must_be_a_boolean_and_nothing_is_counted(handlers: dict, alice: dict, db,
                                                                      value) -> None:
    before = counters(db)
    response = call(handlers, "login", "POST", "/login/",
                    json_body={"email": alice["email"], "password": PASSWORD, "remember_me": value})

    assert response["statusCode"] == 422
    assert json.loads(response["body"])["fields"] == {"remember_me": "Must be true or false."}
    assert counters(db) == before and live_sessions(db) == 0


def test_remember_me_true_in_json_is_accepted(handlers: dict, alice: dict, db) -> None:
    response = call(handlers, "login", "POST", "/login/",
                    json_body={"email": alice["email"], "password": PASSWORD, "remember_me": True})

    assert response["statusCode"] == 200 and live_sessions(db) == 1


# -- one parser, one answer -------------------------------------------------------------------------
def test_a_duplicate_json_key_is_a_422_and_reads_no_user(handlers: dict, alice: dict, db) -> None:
    before = counters(db)
    body = f'{{"email": "mallory@example.com", "password": "{PASSWORD}", "email": "{alice["email"]}"}}'

    response = call(handlers, "login", "POST", "/login/", body=body, content_type="application/json")

    assert response["statusCode"] == 422
    assert json.loads(response["body"])["fields"] == {"email": "Send each field once."}
    assert counters(db) == before and live_sessions(db) == 0


def test_a_repeated_form_field_is_a_422_and_creates_nothing(browser: Browser, db) -> None:
    token = browser.csrf_token("/register/")
    fields = [("csrf_token", token), ("email", "one@example.com"), ("email", "two@example.com"),
              ("first_name", "Eve"), ("last_name", "Twin"), ("password", PASSWORD), ("password_confirm", PASSWORD)]

    page = browser.request("POST", "/register/", body=urlencode(fields).encode(),
                           content_type="application/x-www-form-urlencoded",
                           headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"})

    assert page["statusCode"] == 422
    assert 'id="email-error">Send this field once.' in page["body"]
    assert db.execute("SELECT count(*) FROM public.users").fetchone()[0] == 0


def test_a_repeated_query_parameter_is_a_422_naming_it(handlers: dict) -> None:
    # GIVEN two `next` values, which two readers could take differently (the first, the last)
    event = make_event("GET", "/login/", query="next=/dash/&next=//evil.example",
                       headers={"accept": "application/json"})

    # WHEN the login page is asked for
    answer = handlers["login"].lambda_handler(event, LambdaContext())

    # THEN it is refused, naming the parameter, as a repeated form field is
    assert answer["statusCode"] == 422
    assert json.loads(answer["body"])["fields"] == {"next": "Send this field once."}


def test_a_form_from_another_site_is_refused_as_such_even_with_invalid_fields(handlers: dict, db) -> None:
    response = call(handlers, "register", "POST", "/register/", form={"email": "not-an-email"},
                    headers={"origin": "https://evil.example"})

    assert response["statusCode"] == 403
    assert db.execute("SELECT count(*) FROM public.users").fetchone()[0] == 0


# -- JSON GET /logout/ --------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "logs_out"), [
    ({"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}, True),
    ({}, True),  # a client without fetch metadata that names no other site
    ({"origin": ORIGIN, "referer": f"{ORIGIN}/dash/"}, True),
    ({"origin": "http://evil.example"}, False),
    ({"referer": "https://evil.example/page"}, False),
    ({"origin": ORIGIN, "referer": "https://evil.example/page"}, False),
    ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}, False),
    ({"sec-fetch-site": "same-site", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}, False),
    ({"sec-fetch-site": "cross-site", "origin": ORIGIN}, False),  # fetch metadata wins over a claimed Origin
])
def test_a_json_get_logout_signs_out_only_when_same_origin(handlers: dict, alice: dict, browser: Browser, db,
                                                           headers: dict, logs_out: bool) -> None:
    browser.submit("/login/", {"email": alice["email"], "password": PASSWORD})

    response = call(handlers, "logout", "GET", "/logout/", headers={"accept": "application/json", **headers},
                    cookies=[f"{k}={v}" for k, v in browser.jar.items()])

    if logs_out:
        assert response["statusCode"] == 204 and live_sessions(db) == 0
    else:
        assert response["statusCode"] == 200 and live_sessions(db) == 1
        assert json.loads(response["body"]) == {"logged_out": False, "message": "POST to /logout/ to log out."}
        assert "cookies" not in response


def test_a_browser_get_logout_with_another_sites_referer_and_no_fetch_metadata_does_not_sign_out(
        handlers: dict, alice: dict, browser: Browser, db) -> None:
    browser.submit("/login/", {"email": alice["email"], "password": PASSWORD})

    response = call(handlers, "logout", "GET", "/logout/", headers={"referer": "https://evil.example/"},
                    cookies=[f"{k}={v}" for k, v in browser.jar.items()])

    assert response["statusCode"] == 200 and "Do you want to log out?" in response["body"]
    assert live_sessions(db) == 1


# -- threads --------------------------------------------------------------------------------------------
def test_environments_in_threads_each_serve_their_own_event(load, db) -> None:
    # Powertools keeps the current event on a class; `make run` and these tests run environments in
    # threads of one process, where each must still read its own request.
    environments = [load("register") for _ in range(6)]
    results: dict[str, dict] = {}

    def register(index: int) -> None:
        for round_ in range(5):
            email = f"thread{index}-{round_}@example.com"
            event = make_event("POST", "/register/", json_body={"email": email, "password": PASSWORD,
                                                                "first_name": f"T{index}", "last_name": "X"},
                               source_ip=f"198.51.100.{index}")
            results[email] = environments[index].lambda_handler(event, LambdaContext())

    threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 30
    for email, response in results.items():
        assert response["statusCode"] == 201, response
        assert json.loads(response["body"])["user"]["email"] == email
    assert db.execute("SELECT count(*) FROM public.users").fetchone()[0] == 30
