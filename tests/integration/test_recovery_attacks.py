"""Attacks on account recovery through the real handlers: address enumeration, host-header poisoning,
account pre-hijacking, CSRF, other methods, bad bodies, and secrets in the logs. Every refusal is a
4xx that changes nothing."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import ALICE, PASSWORD
from tests.integration import test_recovery_routes as routes
from tests.integration.test_recovery_routes import (
    BASE,
    FUNCTIONS,
    NEW_PASSWORD,
    SAME_ORIGIN,
    SENT,
    SESSION,
    Outbox,
    call,
    live_sessions,
    open_reset_link,
    password_hash,
    post_form,
    post_json,
    reset_link,
    sign_in,
    signed_in_user,
    token_in,
    tokens_table,
    users_table,
)
from tests.support import ORIGIN, Browser, capture_logs, response_cookies

# The same fixtures as the routes' tests (a conftest would offer them to every test of the folder).
clock, recovery, fns, mailer = routes.clock, routes.recovery, routes.fns, routes.mailer
outbox, new_browser = routes.outbox, routes.new_browser

EVIL = "https://evil.example"
RECOVERY_PATHS = ["/password/forgot/", "/password/reset/", "/password/change/", "/email/confirm/"]


def without_values(response: dict[str, Any]) -> list[dict[str, Any]]:
    """Set-Cookie names and attributes, without the values (a fresh CSRF or flash value differs)."""
    return sorted(({**c, "value": None} for c in response_cookies(response).values()), key=lambda c: c["name"])


# -- enumeration -----------------------------------------------------------------------------------------
@pytest.fixture
def three_addresses(new_browser, outbox: Outbox, db: psycopg.Connection) -> dict[str, str]:
    """An unconfirmed account, a confirmed one, and an address without an account."""
    for email, first in (("alice@example.com", "Alice"), ("bob@example.com", "Bob")):
        post_form(new_browser(), "/register/", {**ALICE, "email": email, "first_name": first})
    db.execute("UPDATE public.users SET email_confirmed_at = now() WHERE email = 'bob@example.com'")
    outbox.deliver()
    return {"unconfirmed": "alice@example.com", "confirmed": "bob@example.com", "unknown": "nobody@example.com"}


def test_every_address_gets_the_same_browser_answer_after_the_same_work(new_browser, fns: dict, outbox: Outbox,
                                                                       three_addresses: dict) -> None:
    answers = {}
    for kind, email in three_addresses.items():
        browser = new_browser()
        browser.get("/password/forgot/")
        store = fns["forgot"].runtime.store
        before, queued = store.round_trips, len(outbox.files())
        response = post_form(browser, "/password/forgot/", {"email": email})
        answers[kind] = (response["statusCode"], response["headers"], response["body"], without_values(response),
                         store.round_trips - before, len(outbox.files()) - queued)

    assert answers["unconfirmed"] == answers["confirmed"] == answers["unknown"]
    status, headers, _, cookies, _, queued = answers["unknown"]
    assert (status, headers["Location"], queued) == (303, "/login/", 1)  # exactly one message each
    assert [c["name"] for c in cookies] == ["__Host-flash"]


def test_every_address_gets_the_same_json_answer(fns: dict, outbox: Outbox, three_addresses: dict) -> None:
    answers = {}
    for kind, email in three_addresses.items():
        response = post_json(fns, "/password/forgot/", {"email": email})
        answers[kind] = (response["statusCode"], response["headers"], response["body"], response.get("cookies"))

    assert answers["unconfirmed"] == answers["confirmed"] == answers["unknown"]
    assert answers["unknown"][0] == 202 and json.loads(answers["unknown"][2]) == {"message": SENT}
    assert answers["unknown"][3] is None
    assert len(outbox.queued()) == 3
    # only the accounts are sent a link
    assert sorted(mail.email for mail in outbox.deliver()) == ["alice@example.com", "bob@example.com"]


def test_the_per_address_limits_are_silent(fns: dict, outbox: Outbox, three_addresses: dict) -> None:
    answers = [post_json(fns, "/password/forgot/", {"email": "alice@example.com"}) for _ in range(3)]

    assert all((a["statusCode"], json.loads(a["body"])) == (202, {"message": SENT}) for a in answers)
    assert len(outbox.deliver()) == 1  # one mail a minute per address; the others are dropped, silently


# -- host-header poisoning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"host": "evil.example"},
    {"x-forwarded-host": "evil.example"},
    {"host": "evil.example", "x-forwarded-host": "evil.example", "x-forwarded-proto": "http",
     "forwarded": "host=evil.example;proto=http"},
])
def test_links_are_built_from_public_base_url_whatever_the_host(fns: dict, outbox: Outbox, new_browser,
                                                                headers: dict, db) -> None:
    post_form(new_browser(), "/register/", ALICE)
    outbox.deliver()

    response = post_json(fns, "/password/forgot/", {"email": "alice@example.com"}, headers=headers)

    assert response["statusCode"] == 202
    link = outbox.link()
    assert link.startswith(f"{BASE}/password/reset/?token=") and "evil" not in link


# -- pre-hijacking ---------------------------------------------------------------------------------------
def test_a_reset_by_the_owner_takes_back_an_account_an_attacker_registered(fns: dict, new_browser, outbox: Outbox,
                                                                         db) -> None:
    # GIVEN an attacker who registered the victim's address and keeps a session open
    attacker = new_browser("192.0.2.66")
    post_form(attacker, "/register/", {**ALICE, "password": "attacker's password",
                                       "password_confirm": "attacker's password"})
    sign_in(attacker, password="attacker's password")
    attackers_hash = password_hash(db)

    # WHEN the owner tries to register: 409, and the attacker's password is not replaced
    owner = new_browser("203.0.113.20")
    taken = post_form(owner, "/register/", {**ALICE, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD})
    assert taken["statusCode"] == 409 and password_hash(db) == attackers_hash

    # WHEN the owner resets the password from the link sent to her address
    outbox.deliver()
    open_reset_link(owner, reset_link(new_browser, outbox))
    assert post_form(owner, "/password/reset/", {"password": NEW_PASSWORD,
                                                 "password_confirm": NEW_PASSWORD})["statusCode"] == 303

    # THEN the attacker's session and password are gone, and the owner's address is confirmed
    assert signed_in_user(fns, attacker.jar[SESSION]) is None
    assert post_json(fns, "/login/", {"email": "alice@example.com", "password": "attacker's password"},
                     source_ip="192.0.2.66")["statusCode"] == 401
    assert post_json(fns, "/login/", {"email": "alice@example.com", "password": NEW_PASSWORD})["statusCode"] == 200
    assert db.execute("SELECT email_confirmed_at IS NOT NULL FROM public.users").fetchone()[0]


# -- CSRF -------------------------------------------------------------------------------------------------
def prepared(path: str, new_browser, outbox: Outbox) -> tuple[Browser, dict[str, str]]:
    """A browser ready to post to `path` (signed in, or holding a link), and the fields it would post."""
    browser = new_browser()
    post_form(browser, "/register/", ALICE)
    confirm_link = outbox.link("email_confirm")
    if path == "/password/forgot/":
        return browser, {"email": "alice@example.com"}
    if path == "/password/reset/":
        open_reset_link(browser, reset_link(new_browser, outbox))
        return browser, {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    sign_in(browser)
    if path == "/password/change/":
        return browser, {"current_password": PASSWORD, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    return browser, {"token": token_in(confirm_link)}


def state(db: psycopg.Connection, outbox: Outbox) -> tuple:
    return users_table(db), tokens_table(db), live_sessions(db), len(outbox.files())


ATTACKS = {
    "no token": lambda victim, other: ({}, SAME_ORIGIN),
    "another browser's token": lambda victim, other: ({"csrf_token": other.csrf_token("/register/")}, SAME_ORIGIN),
    "foreign origin": lambda victim, other: ({"csrf_token": victim.csrf_token("/register/")}, {"origin": EVIL}),
    "cross-site fetch": lambda victim, other: ({"csrf_token": victim.csrf_token("/register/")},
                                               {"sec-fetch-site": "cross-site"}),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("path", RECOVERY_PATHS)
def test_a_form_post_without_csrf_proof_is_403_and_changes_nothing(new_browser, outbox: Outbox, db, path: str,
                                                                  attack: str) -> None:
    victim, fields = prepared(path, new_browser, outbox)
    extra, headers = ATTACKS[attack](victim, new_browser())
    before = state(db, outbox)

    response = victim.post(path, form={**fields, **extra}, headers=headers)

    assert response["statusCode"] == 403
    assert state(db, outbox) == before
    cookies = response_cookies(response)
    assert SESSION not in cookies and not cookies.get("__Host-flash", {}).get("value")  # no session, no flash


@pytest.mark.parametrize(("path", "fetch_site", "status"), [
    ("/password/reset/", "same-origin", 303), ("/email/confirm/", "same-origin", 303),
    ("/password/reset/", "cross-site", 403), ("/email/confirm/", "cross-site", 403),
    ("/password/reset/", None, 403), ("/email/confirm/", None, 403),
    ("/password/change/", "same-origin", 403), ("/password/forgot/", "same-origin", 403),
])
def test_origin_null_is_accepted_only_from_our_own_no_referrer_pages(new_browser, outbox: Outbox, db, path: str,
                                                                     fetch_site: str | None, status: int) -> None:
    """The reset and confirm pages send `Referrer-Policy: no-referrer`, so a browser posts their forms
    with `Origin: null`; only Fetch Metadata's same-origin (which no page can set) lets that through."""
    victim, fields = prepared(path, new_browser, outbox)
    headers = {"origin": "null", **({"sec-fetch-site": fetch_site} if fetch_site else {})}
    before = state(db, outbox)

    response = victim.post(path, form={**fields, "csrf_token": victim.csrf_token("/register/")}, headers=headers)

    assert response["statusCode"] == status
    assert (state(db, outbox) == before) == (status == 403)


@pytest.mark.parametrize("path", RECOVERY_PATHS)
def test_a_json_post_from_another_origin_is_403_and_changes_nothing(fns: dict, new_browser, outbox: Outbox, db,
                                                                    path: str) -> None:
    victim, fields = prepared(path, new_browser, outbox)
    body = {k: v for k, v in fields.items() if k != "password_confirm"}
    if path == "/password/reset/":
        body["token"] = victim.jar["__Secure-reset"]
    before = state(db, outbox)

    response = post_json(fns, path, body, headers={"origin": EVIL},
                         cookies=[f"{k}={v}" for k, v in victim.jar.items()])

    assert response["statusCode"] == 403 and state(db, outbox) == before


# -- methods, HEAD and bad bodies ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", RECOVERY_PATHS)
def test_other_methods_are_405_with_allow(fns: dict, path: str, method: str) -> None:
    for target in (path, path.rstrip("/")):
        page = call(fns, method, target)
        api = call(fns, method, target, headers={"accept": "application/json"})

        assert page["statusCode"] == api["statusCode"] == 405
        assert page["headers"]["Allow"] == api["headers"]["Allow"] == "GET, HEAD, POST"
        assert json.loads(api["body"])["error"] == "method_not_allowed"


@pytest.mark.parametrize("path", RECOVERY_PATHS)
def test_head_is_the_get_answer_without_a_body(fns: dict, path: str) -> None:
    get = call(fns, "GET", path.rstrip("/"))
    head = call(fns, "HEAD", path.rstrip("/"))

    assert head["statusCode"] == get["statusCode"] and head["body"] == ""
    assert head["headers"].get("Location") == get["headers"].get("Location")


BAD_BODIES = [
    ("/password/forgot/", {"email": 5}, "email"),
    ("/password/forgot/", {"email": ["alice@example.com"]}, "email"),
    ("/password/forgot/", {}, "email"),
    ("/password/reset/", {"token": 5, "password": NEW_PASSWORD}, "token"),
    ("/password/reset/", {"token": "t" * 43, "password": 12345678}, "password"),
    ("/password/reset/", {"token": "t" * 200, "password": NEW_PASSWORD}, "token"),
    ("/password/reset/", {"token": "t" * 43, "password": "p" * 257}, "password"),
    ("/password/change/", {"current_password": True, "password": NEW_PASSWORD}, "current_password"),
    ("/password/change/", {"current_password": PASSWORD, "password": None}, "password"),
    ("/email/confirm/", {"token": 7}, "token"),
    ("/email/confirm/", {"token": {"a": 1}}, "token"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_BODIES)
def test_json_with_a_wrong_type_or_size_is_422_never_coerced(fns: dict, db, outbox: Outbox, path: str, body: dict,
                                                             field: str) -> None:
    before = state(db, outbox)

    response = post_json(fns, path, body)

    assert response["statusCode"] == 422
    assert field in json.loads(response["body"])["fields"]
    assert state(db, outbox) == before


@pytest.mark.parametrize("path", RECOVERY_PATHS)
def test_a_duplicate_json_key_is_a_422(fns: dict, path: str) -> None:
    response = call(fns, "POST", path, body='{"token": "a", "token": "b", "email": "a@b.c", "email": "x@y.z"}',
                    content_type="application/json", headers={"origin": ORIGIN})

    assert response["statusCode"] == 422
    assert json.loads(response["body"])["fields"] == {"token": "Send each field once."}


# -- logs --------------------------------------------------------------------------------------------------
def test_a_whole_recovery_journey_never_logs_a_token_or_a_link(new_browser, outbox: Outbox, fns: dict, db,
                                                               capsys) -> None:
    streams: dict[str, Any] = {}
    names = sorted({*FUNCTIONS.values(), "mailer"})
    contexts = [capture_logs(name) for name in names]
    for name, context in zip(names, contexts, strict=True):
        streams[name] = context.__enter__()
    try:
        # GIVEN a registration and its confirmation by the button
        browser = new_browser()
        post_form(browser, "/register/", ALICE)
        confirm_link = outbox.link("email_confirm")
        parts = urlsplit(confirm_link)
        browser.get(parts.path, query=parts.query)
        post_form(browser, "/email/confirm/", {"token": token_in(confirm_link)})
        # WHEN she forgets her password, resets it, signs in and changes it
        link = reset_link(new_browser, outbox)
        open_reset_link(browser, link)
        post_form(browser, "/password/reset/", {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD})
        sign_in(browser, password=NEW_PASSWORD)
        post_form(browser, "/password/change/", {"current_password": NEW_PASSWORD, "password": PASSWORD,
                                                 "password_confirm": PASSWORD})
    finally:
        for context in reversed(contexts):
            context.__exit__(None, None, None)
    logged = "\n".join(stream.getvalue() for stream in streams.values()) + capsys.readouterr().out

    # THEN the mailer logged its mails, the functions counted what happened, and no token, link or
    # password appears (a request that went well is logged by the gateway's access log, not here)
    assert logged.count('"message":"Mail sent"') >= 2
    for metric in ("ResetRequests", "PasswordResets", "EmailConfirmations", "PasswordChanges", "MailsSent"):
        assert f'"{metric}":[1.0]' in logged.replace(" ", "")
    for secret in (token_in(confirm_link), confirm_link, token_in(link), link, PASSWORD, NEW_PASSWORD):
        assert secret not in logged
