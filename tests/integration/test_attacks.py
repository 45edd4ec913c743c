"""Attacks on the real handlers through real payload 2.0 events: open redirects, CSRF, bad bodies,
cookie tampering, session fixation and header injection. Every refusal is a 4xx that writes nothing."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from itsdangerous import Signer, TimestampSigner

from dashgate.sessions import hash_session_id
from dashgate.settings import MAX_BODY_BYTES
from tests.conftest import ALICE, PASSWORD
from tests.support import CSRF_RE, OPEN_REDIRECT_VECTORS, ORIGIN, Browser, LambdaContext, make_event, response_cookies

SESSION = "__Host-session"
CSRF = "__Host-csrf"
EVIL = "https://evil.example"
SAME_ORIGIN = {"origin": ORIGIN, "sec-fetch-site": "same-origin"}


# -- helpers ---------------------------------------------------------------------------------
def assert_no_5xx(response: dict[str, Any]) -> dict[str, Any]:
    assert response["statusCode"] < 500, response
    return response


class CheckedBrowser(Browser):
    """A Browser that fails the test on any 5xx."""

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return assert_no_5xx(super().request(method, path, **kwargs))


@pytest.fixture
def browser(handlers: dict) -> CheckedBrowser:
    """Overrides conftest's browser (and so the one `alice` registers with)."""
    return CheckedBrowser(handlers)


@pytest.fixture
def new_browser(handlers: dict):
    return lambda: CheckedBrowser(handlers)


def call(handlers: dict, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One event straight into the function that owns `path`."""
    name = {"/register/": "register", "/login/": "login", "/logout/": "logout"}[path]
    return assert_no_5xx(handlers[name].lambda_handler(make_event(method, path, **kwargs), LambdaContext()))


def call_event(handlers: dict, name: str, event: dict[str, Any]) -> dict[str, Any]:
    return assert_no_5xx(handlers[name].lambda_handler(event, LambdaContext()))


def count(db: psycopg.Connection, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0]


def session_id(token: str) -> str:
    return token.rsplit(".", 1)[0]


def session_row(db: psycopg.Connection, token: str) -> tuple | None:
    """(user_id, revoked_at) of the session a cookie value names."""
    return db.execute("SELECT user_id, revoked_at FROM public.dashgate_sessions WHERE id_hash = %s",
                      (hash_session_id(session_id(token)),)).fetchone()


def alice_row(db: psycopg.Connection) -> tuple:
    return db.execute("SELECT id, login_count, last_login_at FROM public.users WHERE email = %s",
                      ("alice@example.com",)).fetchone()


def sign_in(browser: Browser, **fields: Any) -> dict[str, Any]:
    """Sign in as Alice; the token comes from the register form, so this works when already signed in."""
    form = {"email": ALICE["email"], "password": PASSWORD, "csrf_token": token_of(browser), **fields}
    response = browser.post("/login/", form=form, headers=SAME_ORIGIN)
    assert response["statusCode"] == 303, response
    assert SESSION in browser.jar
    return response


def is_signed_in(browser: Browser) -> bool:
    """GET /login/ sends a signed-in browser on (303) and shows others the form (200)."""
    response = browser.get("/login/")
    if response["statusCode"] == 303:
        return True
    assert response["statusCode"] == 200
    assert CSRF_RE.search(response["body"])
    return False


def token_of(browser: Browser) -> str:
    """A valid CSRF token for this browser's CSRF cookie (from the register form, which GET never acts on)."""
    return browser.csrf_token("/register/")


def assert_clean_headers(response: dict[str, Any]) -> None:
    for name, value in response["headers"].items():
        assert "\r" not in name + value and "\n" not in name + value, (name, value)
    for cookie in response.get("cookies", []):
        assert "\r" not in cookie and "\n" not in cookie, cookie
    assert set(response_cookies(response)) <= {SESSION, CSRF, "__Host-flash", "__Host-device"}


NEW_USER = {"email": "mallory@example.com", "first_name": "Mallory", "last_name": "Mal",
            "password": "mallory's password", "password_confirm": "mallory's password"}
JSON_USER = {"email": "bob@example.com", "first_name": "Bob", "last_name": "Builder", "password": "bob's password"}


# -- open redirects through `next` -------------------------------------------------------------


@pytest.mark.parametrize("vector", OPEN_REDIRECT_VECTORS)
def test_login_post_ignores_a_foreign_next_in_the_query(browser: Browser, alice: dict, vector: str) -> None:
    response = browser.submit("/login/?" + urlencode({"next": vector}), {"email": alice["email"], "password": PASSWORD})
    assert response["statusCode"] == 303
    assert response["headers"]["Location"] == "/dash/"
    assert_clean_headers(response)


@pytest.mark.parametrize("vector", OPEN_REDIRECT_VECTORS)
def test_login_post_ignores_a_foreign_next_in_the_form(browser: Browser, alice: dict, vector: str) -> None:
    response = browser.submit("/login/", {"email": alice["email"], "password": PASSWORD, "next": vector})
    assert response["statusCode"] == 303
    assert response["headers"]["Location"] == "/dash/"
    assert_clean_headers(response)


def test_login_post_form_next_cannot_be_rescued_by_a_good_query_next(browser: Browser, alice: dict) -> None:
    response = browser.submit("/login/?next=%2Fdash%2Freports%2F", {"email": alice["email"], "password": PASSWORD,
                                                                    "next": "//evil.example"})
    assert response["headers"]["Location"] == "/dash/"


@pytest.mark.parametrize("vector", OPEN_REDIRECT_VECTORS)
def test_signed_in_get_login_ignores_a_foreign_next(browser: Browser, alice: dict, vector: str) -> None:
    sign_in(browser)
    response = browser.get("/login/", query=urlencode({"next": vector}))
    assert response["statusCode"] == 303
    assert response["headers"]["Location"] == "/dash/"
    assert_clean_headers(response)


@pytest.mark.parametrize("vector", ["//evil.example", "https://evil.example", "/\\evil.example"])
def test_the_login_form_does_not_carry_a_foreign_next(browser: Browser, vector: str) -> None:
    response = browser.get("/login/", query=urlencode({"next": vector}))
    assert response["statusCode"] == 200
    assert "evil.example" not in response["body"]
    assert 'name="next" value="/dash/"' in response["body"]


def test_a_failed_login_does_not_carry_a_foreign_next(browser: Browser, alice: dict) -> None:
    fields = {"email": alice["email"], "password": "wrong password", "next": "//evil.example"}
    response = browser.submit("/login/", fields)
    assert response["statusCode"] == 401
    assert "evil.example" not in response["body"]


@pytest.mark.parametrize(("next_url", "location"), [
    ("/dash/reports/?a=1&b=2", "/dash/reports/?a=1&b=2"),
    ("/dash/#x", "/dash/#x"),
    ("/dash/café", "/dash/caf%C3%A9"),
])
def test_login_follows_a_local_next(browser: Browser, alice: dict, next_url: str, location: str) -> None:
    fields = {"email": alice["email"], "password": PASSWORD}
    response = browser.submit("/login/?" + urlencode({"next": next_url}), fields)
    assert response["headers"]["Location"] == location


# -- header injection ----------------------------------------------------------------------------
CRLF_VECTORS = [
    "/dash/\r\nSet-Cookie: x=1",
    "/dash/\rSet-Cookie: x=1",
    "/dash/\nLocation: https://evil.example",
    "/dash/%0d%0aSet-Cookie: x=1",
    "/dash/%250d%250aSet-Cookie: x=1",
    "/dash/\u0085Set-Cookie: x=1",
    "/dash/\u2028Set-Cookie: x=1",
    "\r\n/dash/",
]


@pytest.mark.parametrize("vector", CRLF_VECTORS)
@pytest.mark.parametrize("where", ["query", "form", "signed-in get"])
def test_next_with_crlf_never_splits_a_header(browser: Browser, alice: dict, vector: str, where: str) -> None:
    if where == "query":
        fields = {"email": alice["email"], "password": PASSWORD}
        response = browser.submit("/login/?" + urlencode({"next": vector}), fields)
    elif where == "form":
        response = browser.submit("/login/", {"email": alice["email"], "password": PASSWORD, "next": vector})
    else:
        sign_in(browser)
        response = browser.get("/login/", query=urlencode({"next": vector}))
    assert response["statusCode"] == 303
    location = response["headers"]["Location"]
    assert "\r" not in location and "\n" not in location
    if "%25" in vector:  # doubly encoded: a harmless local path that merely names "%0d%0a" in its text
        assert location.startswith("/dash/%250d%250a")
    else:
        assert location == "/dash/"
    assert_clean_headers(response)


def test_a_raw_crlf_in_the_query_string_never_splits_a_header(browser: Browser, alice: dict) -> None:
    sign_in(browser)
    response = browser.get("/login/", query="next=/dash/\r\nSet-Cookie:%20x=1")
    assert response["statusCode"] == 303
    assert response["headers"]["Location"] == "/dash/"
    assert_clean_headers(response)


# -- CSRF: browser form posts --------------------------------------------------------------------
def _forged(victim: Browser) -> str:
    """A well-formed token for the victim's CSRF cookie, signed with a key we do not hold."""
    digest = hashlib.sha256(victim.jar[CSRF].encode()).hexdigest()
    return TimestampSigner("f" * 40, salt="dashgate.csrf", digest_method=hashlib.sha256).sign(digest).decode()


# attack name -> (how to build the csrf_token field, header overrides, whether to drop the CSRF cookie)
ATTACKS = {
    "no token": (lambda victim, other: None, {}, False),
    "empty token": (lambda victim, other: "", {}, False),
    "another browser's token": (lambda victim, other: token_of(other), {}, False),
    "forged token": (lambda victim, other: _forged(victim), {}, False),
    "garbage token": (lambda victim, other: "not-a-token.at-all", {}, False),
    "cookie value as token": (lambda victim, other: victim.jar[CSRF], {}, False),
    "token without its cookie": (lambda victim, other: token_of(victim), {}, True),
    "foreign origin": (lambda victim, other: token_of(victim), {"origin": EVIL}, False),
    "null origin": (lambda victim, other: token_of(victim), {"origin": "null"}, False),
    "look-alike origin": (lambda victim, other: token_of(victim), {"origin": ORIGIN + ".evil.example"}, False),
    "plain-http origin": (lambda victim, other: token_of(victim), {"origin": ORIGIN.replace("https", "http")}, False),
    "cross-site fetch": (lambda victim, other: token_of(victim),
                         {"origin": None, "sec-fetch-site": "cross-site"}, False),
    "cross-site fetch, own origin": (lambda victim, other: token_of(victim), {"sec-fetch-site": "cross-site"}, False),
}


def attack_post(victim: Browser, other: Browser, path: str, fields: dict[str, Any], attack: str) -> dict[str, Any]:
    make_token, header_overrides, drop_cookie = ATTACKS[attack]
    token_of(victim)  # the victim has visited the site: a CSRF cookie is in the jar
    token = make_token(victim, other)
    form = dict(fields)
    if token is not None:
        form["csrf_token"] = token
    headers = {**SAME_ORIGIN, **header_overrides}
    headers = {k: v for k, v in headers.items() if v is not None}
    cookies = [f"{k}={v}" for k, v in victim.jar.items() if not (drop_cookie and k == CSRF)]
    return victim.post(path, form=form, headers=headers, cookies=cookies)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_csrf_refused_at_register(new_browser, db: psycopg.Connection, attack: str) -> None:
    victim, other = new_browser(), new_browser()
    response = attack_post(victim, other, "/register/", NEW_USER, attack)
    assert response["statusCode"] == 403
    assert count(db, "users") == 0
    assert "__Host-flash" not in response_cookies(response)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_csrf_refused_at_login(new_browser, alice: dict, db: psycopg.Connection, attack: str) -> None:
    victim, other = new_browser(), new_browser()
    before = alice_row(db)
    response = attack_post(victim, other, "/login/", {"email": alice["email"], "password": PASSWORD}, attack)
    assert response["statusCode"] == 403
    assert SESSION not in response_cookies(response)
    assert count(db, "dashgate_sessions") == 0
    assert alice_row(db) == before  # no login recorded
    assert not is_signed_in(victim)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_csrf_refused_at_logout(new_browser, alice: dict, db: psycopg.Connection, attack: str) -> None:
    victim, other = new_browser(), new_browser()
    sign_in(victim)
    session = victim.jar[SESSION]
    response = attack_post(victim, other, "/logout/", {}, attack)
    assert response["statusCode"] == 403
    assert SESSION not in response_cookies(response)  # the cookie is not cleared
    assert session_row(db, session)[1] is None  # nor the session revoked
    assert is_signed_in(victim)


@pytest.mark.parametrize(("path", "fields"), [("/register/", NEW_USER), ("/login/", {"email": "alice@example.com",
                                                                                     "password": PASSWORD})])
def test_the_csrf_helper_succeeds_without_an_attack(new_browser, alice: dict, path: str, fields: dict) -> None:
    """Control: the same request with a valid token from the same origin goes through."""
    victim = new_browser()
    response = victim.post(path, form={**fields, "csrf_token": token_of(victim)}, headers=SAME_ORIGIN)
    assert response["statusCode"] == 303


def test_logout_control_with_a_valid_token(new_browser, alice: dict, db: psycopg.Connection) -> None:
    victim = new_browser()
    sign_in(victim)
    session = victim.jar[SESSION]
    response = victim.post("/logout/", form={"csrf_token": token_of(victim)}, headers=SAME_ORIGIN)
    assert response["statusCode"] == 303
    assert session_row(db, session)[1] is not None


def test_cross_site_get_logout_does_not_log_out(browser: Browser, alice: dict, db: psycopg.Connection) -> None:
    sign_in(browser)
    session = browser.jar[SESSION]
    response = browser.get("/logout/", headers={"sec-fetch-site": "cross-site"})
    assert response["statusCode"] == 200
    assert SESSION not in response_cookies(response)
    assert session_row(db, session)[1] is None


# -- CSRF: JSON posts ------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", [EVIL, "null", ORIGIN + ".evil.example", ORIGIN.replace("https", "http")])
def test_json_register_from_a_foreign_origin_is_refused(handlers: dict, db: psycopg.Connection, origin: str) -> None:
    response = call(handlers, "POST", "/register/", json_body=JSON_USER, headers={"origin": origin})
    assert response["statusCode"] == 403
    assert json.loads(response["body"])["error"] == "csrf_failed"
    assert count(db, "users") == 0


@pytest.mark.parametrize("origin", [EVIL, "null"])
def test_json_login_from_a_foreign_origin_is_refused(handlers: dict, alice: dict, db: psycopg.Connection,
                                                     origin: str) -> None:
    response = call(handlers, "POST", "/login/", json_body={"email": alice["email"], "password": PASSWORD},
                    headers={"origin": origin})
    assert response["statusCode"] == 403
    assert json.loads(response["body"])["error"] == "csrf_failed"
    assert "cookies" not in response
    assert count(db, "dashgate_sessions") == 0


@pytest.mark.parametrize("origin", [EVIL, "null"])
def test_json_logout_from_a_foreign_origin_is_refused(handlers: dict, browser: Browser, alice: dict,
                                                      db: psycopg.Connection, origin: str) -> None:
    sign_in(browser)
    session = browser.jar[SESSION]
    response = call(handlers, "POST", "/logout/", json_body={}, headers={"origin": origin},
                    cookies=[f"{SESSION}={session}"])
    assert response["statusCode"] == 403
    assert "cookies" not in response
    assert session_row(db, session)[1] is None


def test_json_from_a_foreign_origin_with_cross_site_fetch_is_refused(handlers: dict, db: psycopg.Connection) -> None:
    response = call(handlers, "POST", "/register/", json_body=JSON_USER, headers={"sec-fetch-site": "cross-site"})
    assert response["statusCode"] == 403
    assert count(db, "users") == 0


@pytest.mark.parametrize("headers", [{"origin": ORIGIN}, {}])
def test_json_register_from_this_origin_or_without_origin_succeeds(handlers: dict, db: psycopg.Connection,
                                                                   headers: dict) -> None:
    """Control for the refusals above."""
    response = call(handlers, "POST", "/register/", json_body=JSON_USER, headers=headers)
    assert response["statusCode"] == 201
    assert count(db, "users") == 1


def test_json_from_an_allowed_origin_passes_and_others_do_not(load, db: psycopg.Connection) -> None:
    register = load("register", ALLOWED_ORIGINS="https://app.example")
    handlers = {"register": register}
    evil = call(handlers, "POST", "/register/", json_body=JSON_USER, headers={"origin": EVIL})
    assert evil["statusCode"] == 403
    allowed = call(handlers, "POST", "/register/", json_body=JSON_USER, headers={"origin": "https://app.example"})
    assert allowed["statusCode"] == 201


# -- bad bodies --------------------------------------------------------------------------------------
ROUTES = ["/register/", "/login/", "/logout/"]


def assert_nothing_written(db: psycopg.Connection) -> None:
    assert count(db, "users") == 0
    assert count(db, "dashgate_sessions") == 0


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "multipart/form-data; boundary=x"])
def test_a_json_body_sent_as_another_media_type_is_415(handlers: dict, db: psycopg.Connection, path: str,
                                                       content_type: str) -> None:
    body = json.dumps(JSON_USER)
    response = call(handlers, "POST", path, body=body, content_type=content_type, headers={"origin": ORIGIN},
                    base64_body=False)
    assert response["statusCode"] == 415
    assert_nothing_written(db)


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("base64_body", [True, False])
def test_a_body_over_16_kib_is_413(handlers: dict, db: psycopg.Connection, path: str, base64_body: bool) -> None:
    form = {**NEW_USER, "padding": "x" * MAX_BODY_BYTES}
    response = call(handlers, "POST", path, form=form, headers=SAME_ORIGIN, base64_body=base64_body)
    assert response["statusCode"] == 413
    assert_nothing_written(db)


@pytest.mark.parametrize("path", ROUTES)
def test_a_json_body_over_16_kib_is_413(handlers: dict, db: psycopg.Connection, path: str) -> None:
    response = call(handlers, "POST", path, json_body={**JSON_USER, "padding": "x" * MAX_BODY_BYTES},
                    headers={"origin": ORIGIN})
    assert response["statusCode"] == 413
    assert json.loads(response["body"])["error"] == "payload_too_large"
    assert_nothing_written(db)


def test_a_huge_body_is_413_not_a_crash(handlers: dict, db: psycopg.Connection) -> None:
    event = make_event("POST", "/register/", content_type="application/x-www-form-urlencoded", headers=SAME_ORIGIN)
    event["body"], event["isBase64Encoded"] = "A" * (6 * 1024 * 1024), True
    assert call_event(handlers, "register", event)["statusCode"] == 413
    assert_nothing_written(db)


BAD_BODIES = {
    "invalid base64": ("application/x-www-form-urlencoded", "!!not*base64!!", True),
    "invalid base64 json": ("application/json", "eyJlbWFpbCI6!!", True),
    "invalid utf-8 form": ("application/x-www-form-urlencoded", base64.b64encode(b"email=\xff\xfe&x=1").decode(), True),
    "invalid utf-8 json": ("application/json", base64.b64encode(b'{"email": "\xc3\x28"}').decode(), True),
    "percent-encoded invalid utf-8": ("application/x-www-form-urlencoded", "email=%ff%fe&password=x", False),
    "malformed json": ("application/json", '{"email": "a@example.com",', False),
    "json with single quotes": ("application/json", "{'email': 'a@example.com'}", False),
    "json array": ("application/json", '["email", "a@example.com"]', False),
    "json string": ("application/json", '"a@example.com"', False),
    "json null": ("application/json", "null", False),
    "deep json": ("application/json", "[" * 15000, False),
}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_unreadable_bodies_are_400(handlers: dict, db: psycopg.Connection, path: str, case: str) -> None:
    content_type, body, is_base64 = BAD_BODIES[case]
    event = make_event("POST", path, content_type=content_type, headers={"origin": ORIGIN})
    event["body"], event["isBase64Encoded"] = body, is_base64
    response = call_event(handlers, path.strip("/"), event)
    assert response["statusCode"] == 400
    assert_nothing_written(db)


@pytest.mark.parametrize(("path", "status"), [("/register/", 422), ("/login/", 422), ("/logout/", 204)])
def test_an_empty_json_body_is_no_fields_not_an_error(handlers: dict, db: psycopg.Connection, path: str,
                                                      status: int) -> None:
    event = make_event("POST", path, content_type="application/json", headers={"origin": ORIGIN})
    event["body"], event["isBase64Encoded"] = "", False

    assert call_event(handlers, path.strip("/"), event)["statusCode"] == status
    assert_nothing_written(db)


@pytest.mark.parametrize(("field", "value"), [
    ("email", 123), ("email", ["bob@example.com"]), ("email", {"a": "b"}), ("email", True),
    ("password", 12345678901), ("password", ["bob's password"]), ("first_name", {"x": 1}), ("last_name", 1.5),
    ("password_confirm", ["bob's password"]), ("email", "bob\ud800@example.com"),
])
def test_json_register_with_wrong_field_types_is_422(handlers: dict, db: psycopg.Connection, field: str,
                                                     value: Any) -> None:
    body = json.dumps({**JSON_USER, field: value})  # json.dumps escapes a lone surrogate as \ud800
    response = call(handlers, "POST", "/register/", body=body, content_type="application/json",
                    headers={"origin": ORIGIN}, base64_body=False)
    assert response["statusCode"] == 422
    payload = json.loads(response["body"])
    assert payload["error"] == "validation_error"
    assert field in payload["fields"]
    assert count(db, "users") == 0


@pytest.mark.parametrize(("field", "value"), [("email", 123), ("email", ["alice@example.com"]),
                                              ("password", 12345678901), ("password", {"p": PASSWORD})])
def test_json_login_with_wrong_field_types_is_422(handlers: dict, alice: dict, db: psycopg.Connection, field: str,
                                                  value: Any) -> None:
    body = {"email": alice["email"], "password": PASSWORD, field: value}
    response = call(handlers, "POST", "/login/", json_body=body, headers={"origin": ORIGIN})
    assert response["statusCode"] == 422
    assert field in json.loads(response["body"])["fields"]
    assert "cookies" not in response
    assert count(db, "dashgate_sessions") == 0


def test_json_register_with_a_1000_deep_email_is_a_4xx(handlers: dict, db: psycopg.Connection) -> None:
    deep = '{"a":' * 1000 + '"x"' + "}" * 1000
    body = '{"email": ' + deep + ', "first_name": "Bob", "last_name": "B", "password": "bob\'s password"}'
    assert len(body) <= MAX_BODY_BYTES
    response = call(handlers, "POST", "/register/", body=body, content_type="application/json",
                    headers={"origin": ORIGIN}, base64_body=False)
    # The parser may manage 1000 levels (then `email` is simply not a string: 422) or not (400).
    assert response["statusCode"] in (400, 422)
    assert json.loads(response["body"])["error"] in ("bad_request", "validation_error")
    assert count(db, "users") == 0


def test_json_register_nested_beyond_the_parser_is_400(handlers: dict, db: psycopg.Connection) -> None:
    body = '{"email": ' + "[" * 12000 + "]" * 4000 + "}"
    assert len(body) <= MAX_BODY_BYTES
    response = call(handlers, "POST", "/register/", body=body, content_type="application/json",
                    headers={"origin": ORIGIN}, base64_body=False)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"] == "bad_request"
    assert count(db, "users") == 0


# -- NUL bytes and control characters -----------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("email", "mallory\x00@example.com"), ("email", "mallory@example.com\x00"), ("first_name", "Mal\x00lory"),
    ("last_name", "\x00"), ("first_name", "Mal\x1blory"),
])
def test_nul_bytes_in_a_registration_form_are_refused(browser: Browser, db: psycopg.Connection, field: str,
                                                      value: str) -> None:
    response = browser.submit("/register/", {**NEW_USER, field: value})
    # the field's own validation message, not any 4xx (a CSRF 403 must not pass this test)
    assert response["statusCode"] == 422
    assert f'id="{field}-error"' in response["body"]
    assert count(db, "users") == 0


@pytest.mark.parametrize(("field", "value"), [
    ("email", "bob\x00@example.com"), ("first_name", "Bo\x00b"), ("last_name", "B\x00"),
])
def test_nul_bytes_in_a_json_registration_are_refused(handlers: dict, db: psycopg.Connection, field: str,
                                                      value: str) -> None:
    response = call(handlers, "POST", "/register/", json_body={**JSON_USER, field: value}, headers={"origin": ORIGIN})
    assert response["statusCode"] == 422
    payload = json.loads(response["body"])
    assert payload["error"] == "validation_error" and set(payload["fields"]) == {field}
    assert count(db, "users") == 0


@pytest.mark.parametrize(("field", "value", "status", "reason"), [
    ("email", "alice\x00@example.com", 422, 'id="email-error"'),
    ("email", "alice@example.com\x00", 422, 'id="email-error"'),
    ("password", PASSWORD + "\x00", 401, "Invalid email or password"),  # simply not the password
    ("password", "\x00" * 10, 401, "Invalid email or password"),
])
def test_nul_bytes_at_login_are_refused(browser: Browser, alice: dict, db: psycopg.Connection, field: str,
                                        value: str, status: int, reason: str) -> None:
    fields = {"email": alice["email"], "password": PASSWORD, field: value}
    response = CheckedBrowser(browser.handlers).submit("/login/", fields)
    assert response["statusCode"] == status
    assert reason in response["body"]
    assert SESSION not in response_cookies(response)
    assert count(db, "dashgate_sessions") == 0


def test_nul_bytes_in_a_json_login_are_refused(handlers: dict, alice: dict, db: psycopg.Connection) -> None:
    response = call(handlers, "POST", "/login/", json_body={"email": "alice@example.com\x00", "password": PASSWORD},
                    headers={"origin": ORIGIN})
    assert response["statusCode"] == 422
    assert json.loads(response["body"])["fields"] == {"email": "Enter a valid email address."}
    assert count(db, "dashgate_sessions") == 0


# -- password length boundary --------------------------------------------------------------------------
def test_a_256_character_password_registers_and_signs_in(browser: Browser, db: psycopg.Connection) -> None:
    password = "p" * 255 + "!"
    response = browser.submit("/register/", {**NEW_USER, "password": password, "password_confirm": password})
    assert response["statusCode"] == 303
    assert count(db, "users") == 1
    other = CheckedBrowser(browser.handlers)
    assert other.submit("/login/", {"email": NEW_USER["email"], "password": password})["statusCode"] == 303


def test_a_257_character_password_is_422(browser: Browser, db: psycopg.Connection) -> None:
    password = "p" * 257
    response = browser.submit("/register/", {**NEW_USER, "password": password, "password_confirm": password})
    assert response["statusCode"] == 422
    assert count(db, "users") == 0


@pytest.mark.parametrize(("length", "status"), [(256, 201), (257, 422)])
def test_json_password_length_boundary(handlers: dict, db: psycopg.Connection, length: int, status: int) -> None:
    response = call(handlers, "POST", "/register/", json_body={**JSON_USER, "password": "é" * length},
                    headers={"origin": ORIGIN})
    assert response["statusCode"] == status
    assert count(db, "users") == (1 if status == 201 else 0)


# -- cookie tampering -------------------------------------------------------------------------------------
def _flip(token: str, index: int) -> str:
    chars = list(token)
    chars[index] = "A" if chars[index] != "A" else "B"
    return "".join(chars)


TAMPERINGS = {
    "first char of the id": lambda t: _flip(t, 0),
    "middle of the id": lambda t: _flip(t, len(session_id(t)) // 2),
    "middle of the signature": lambda t: _flip(t, len(t) - 10),
    "first char of the signature": lambda t: _flip(t, len(session_id(t)) + 1),
    "signature removed": session_id,
    "signature only": lambda t: t.rsplit(".", 1)[1],
    "extra dot": lambda t: t + ".",
    "appended text": lambda t: t + "A",
    "re-signed with another key": lambda t: Signer("x" * 40, salt="dashgate.session",
                                                   digest_method=hashlib.sha256).sign(session_id(t)).decode(),
    "quoted": lambda t: f'"{t}x"',
    "non-ascii": lambda t: t[:-1] + "é",
    "huge": lambda t: t * 100,
    "empty": lambda t: "",
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_session_cookie_reads_as_signed_out(browser: Browser, new_browser, alice: dict,
                                                       db: psycopg.Connection, tampering: str) -> None:
    sign_in(browser)
    good = browser.jar[SESSION]
    bad = TAMPERINGS[tampering](good)
    assert bad != good
    mallory = new_browser()
    mallory.jar[SESSION] = bad
    response = mallory.get("/login/")
    assert response["statusCode"] == 200
    assert CSRF_RE.search(response["body"])
    as_json = mallory.get("/login/", headers={"accept": "application/json"})
    assert as_json["statusCode"] == 200
    assert json.loads(as_json["body"]) == {"user": None}
    # Logging out with the tampered cookie does not revoke the real session.
    mallory.jar[SESSION] = bad
    assert mallory.post("/logout/", json_body={}, headers={"origin": ORIGIN},
                        cookies=[f"{SESSION}={bad}"])["statusCode"] == 204
    assert session_row(db, good)[1] is None
    assert is_signed_in(browser)


def test_a_correctly_signed_cookie_for_an_unknown_session_reads_as_signed_out(handlers: dict, new_browser) -> None:
    _, token = handlers["login"].runtime.tokens.new_session()
    mallory = new_browser()
    mallory.jar[SESSION] = token
    assert not is_signed_in(mallory)


# -- session fixation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("planted", ["attacker-chosen-value", "fixed.session", "signed"])
def test_a_client_chosen_session_is_never_adopted(browser: Browser, alice: dict, handlers: dict,
                                                  db: psycopg.Connection, planted: str) -> None:
    if planted == "signed":  # even a correctly signed id the attacker knows
        planted = handlers["login"].runtime.tokens.new_session()[1]
    browser.jar[SESSION] = planted
    response = sign_in(browser)
    issued = response_cookies(response)[SESSION]["value"]
    assert issued != planted
    assert session_id(issued) != session_id(planted)
    assert count(db, "dashgate_sessions") == 1
    assert session_row(db, issued)[1] is None
    assert session_row(db, planted) is None
    assert is_signed_in(browser)
    stranger = CheckedBrowser(handlers)
    stranger.jar[SESSION] = planted
    assert not is_signed_in(stranger)


def test_a_session_presented_at_login_is_revoked(browser: Browser, alice: dict, handlers: dict,
                                                 db: psycopg.Connection) -> None:
    sign_in(browser)
    first = browser.jar[SESSION]
    response = sign_in(browser)
    second = response_cookies(response)[SESSION]["value"]
    assert second != first
    assert session_row(db, first)[1] is not None  # revoked_at set
    assert session_row(db, second)[1] is None
    old = CheckedBrowser(handlers)
    old.jar[SESSION] = first
    assert not is_signed_in(old)
    assert is_signed_in(browser)


def test_an_attackers_session_planted_in_a_victims_browser_is_revoked_at_login(
        browser: Browser, alice: dict, new_browser, db: psycopg.Connection) -> None:
    attacker = new_browser()
    assert attacker.submit("/register/", NEW_USER)["statusCode"] == 303
    credentials = {"email": NEW_USER["email"], "password": NEW_USER["password"]}
    assert attacker.submit("/login/", credentials)["statusCode"] == 303
    planted = attacker.jar[SESSION]
    victim = new_browser()
    victim.jar[SESSION] = planted
    response = sign_in(victim)
    issued = response_cookies(response)[SESSION]["value"]
    assert issued != planted
    assert session_row(db, planted)[1] is not None
    assert session_row(db, issued)[0] == alice_row(db)[0]  # the new session is the victim's own


def test_a_json_login_also_issues_a_new_session(handlers: dict, browser: Browser, alice: dict,
                                                db: psycopg.Connection) -> None:
    sign_in(browser)
    first = browser.jar[SESSION]
    response = call(handlers, "POST", "/login/", json_body={"email": alice["email"], "password": PASSWORD},
                    headers={"origin": ORIGIN}, cookies=[f"{SESSION}={first}"])
    assert response["statusCode"] == 200
    second = response_cookies(response)[SESSION]["value"]
    assert second != first
    assert session_row(db, first)[1] is not None
