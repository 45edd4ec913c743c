"""Account recovery through the real handlers (SPEC: "Account recovery and email"): forgot, reset, change
and confirm, with real payload 2.0 events, the real database and the local mail spool. A mail is
"delivered" the way the mailer does it: each spooled request is issued by the recovery service
(which applies the per-address limits and makes the token) and its link is followed.

The attacks (enumeration, host poisoning, pre-hijacking, CSRF, bad bodies, logs) are in
test_recovery_attacks.py; both use the helpers here."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from dashgate.mail import MailRequest
from tests import support
from tests.conftest import ALICE, PASSWORD
from tests.support import CSRF_RE, ORIGIN, Browser, Clock, LambdaContext, capture_logs, make_event, response_cookies

NEW_PASSWORD = "a brand new passphrase"
SESSION = "__Host-session"
FLASH = "__Host-flash"
RESET_COOKIE = "__Secure-reset"
SAME_ORIGIN = {"origin": ORIGIN, "sec-fetch-site": "same-origin"}
BASE = "https://dash.example.test"
FUNCTIONS = {"/register/": "register", "/login/": "login", "/logout/": "logout", "/password/forgot/": "forgot",
             "/password/reset/": "reset", "/password/change/": "change", "/email/confirm/": "confirm"}
SENT = "If that email address has an account, we have sent it a link to reset the password."
INVALID_RESET = "This password reset link is invalid or has expired."
INVALID_CONFIRM = "This confirmation link is invalid or has expired."
LINK = re.compile(r"https://\S+\?token=[A-Za-z0-9_-]+")


# -- helpers -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mail:
    """One mail the mailer wrote to the outbox: what was asked for, to whom, and the link in its text."""

    kind: str
    email: str
    link: str | None
    text: str


class Outbox:
    """The local mail queue (`<MAIL_OUTBOX_DIR>/queue/*.json`), delivered by the real mailer function (one
    SQS-shaped event per message) into `.eml` files in MAIL_OUTBOX_DIR, as `make run` does."""

    def __init__(self, directory: Path, mailer: Any) -> None:
        self.directory, self.spool, self.mailer = directory, directory / "queue", mailer

    def files(self) -> list[Path]:
        return sorted(self.spool.glob("*.json")) if self.spool.is_dir() else []

    def queued(self) -> list[MailRequest]:
        """The requests waiting on the queue, oldest first."""
        return [MailRequest.from_json(path.read_text()) for path in self.files()]

    def deliver(self) -> list[Mail]:
        """Hand every queued message to the mailer; the mails it sent (none for an unknown address or
        a request over its limits)."""
        sent = []
        for path in self.files():
            request, before = MailRequest.from_json(path.read_text()), set(self.directory.glob("*.eml"))
            record = {"messageId": path.stem, "receiptHandle": path.stem, "body": path.read_text(), "attributes": {},
                      "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                      "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:mail", "awsRegion": "eu-west-1"}
            assert self.mailer.lambda_handler({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
            path.unlink()
            for eml in sorted(set(self.directory.glob("*.eml")) - before):
                message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
                text = message.get_body(("plain",)).get_content()
                links = LINK.findall(text)
                sent.append(Mail(request.kind, message["To"], links[0] if links else None, text))
        return sent

    def link(self, kind: str = "password_reset") -> str:
        """Deliver, and the link of the last mail of `kind` (the test fails when there is none)."""
        links = [m.link for m in self.deliver() if m.kind == kind]
        assert links and links[-1], f"no {kind} mail was sent"
        return links[-1]


def token_in(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def call(handlers: dict, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One request to the function that serves `path`; never a 5xx."""
    name = FUNCTIONS[path if path.endswith("/") else path + "/"]
    response = handlers[name].lambda_handler(make_event(method, path, **kwargs), LambdaContext())
    assert response["statusCode"] < 500, response
    return response


def post_json(handlers: dict, path: str, body: dict, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("headers", {"origin": ORIGIN})
    return call(handlers, "POST", path, json_body=body, **kwargs)


def post_form(browser: Browser, path: str, fields: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A form post with this browser's CSRF token (one cookie serves every form of the site)."""
    token = browser.csrf_token("/register/")  # a form every browser gets, signed in or not
    response = browser.post(path, form={"csrf_token": token, **fields}, headers=SAME_ORIGIN, **kwargs)
    assert response["statusCode"] < 500, response
    return response


def sign_in(browser: Browser, email: str = "alice@example.com", password: str = PASSWORD) -> dict[str, Any]:
    response = post_form(browser, "/login/", {"email": email, "password": password})
    assert response["statusCode"] == 303, response
    return response


def signed_in_user(handlers: dict, cookie: str | None) -> dict | None:
    """The user a session cookie value names (GET /login/ as JSON), or None."""
    cookies = [f"{SESSION}={cookie}"] if cookie else None
    response = call(handlers, "GET", "/login/", headers={"accept": "application/json"}, cookies=cookies)
    return json.loads(response["body"])["user"]


def flash_of(fns: dict, browser: Browser) -> list[str]:
    """The messages a browser carries to its next page (the dashboard shows them, not us)."""
    return fns["login"].runtime.tokens.flash_messages(browser.jar.get(FLASH))


def confirmed(db: psycopg.Connection, email: str = "alice@example.com") -> bool:
    return db.execute("SELECT email_confirmed_at IS NOT NULL FROM public.users WHERE email = %s",
                      (email,)).fetchone()[0]


def password_hash(db: psycopg.Connection, email: str = "alice@example.com") -> str:
    return db.execute("SELECT password_hash FROM public.users WHERE email = %s", (email,)).fetchone()[0]


def live_sessions(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0]


def tokens_table(db: psycopg.Connection) -> list[tuple]:
    return db.execute("SELECT token_hash, purpose, used_at FROM public.dashgate_tokens ORDER BY created_at").fetchall()


def users_table(db: psycopg.Connection) -> list[tuple]:
    return db.execute("SELECT * FROM public.users ORDER BY id").fetchall()


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recovery(load, clock: Clock, monkeypatch: pytest.MonkeyPatch):
    """recovery(**settings) -> every function of the site, as execution environments sharing one clock.
    The Browser helper learns the new paths for this test."""
    for path, name in FUNCTIONS.items():
        monkeypatch.setitem(support.ROUTES, path, name)

    def _load(**overrides: str) -> dict:
        loaded = {name: load(name, **overrides) for name in FUNCTIONS.values()}
        for module in loaded.values():
            module.runtime.clock = clock
        return loaded

    return _load


@pytest.fixture
def fns(recovery) -> dict:
    return recovery()


@pytest.fixture
def mailer(load, clock: Clock) -> Any:
    """The mailer function, reading the same clock."""
    module = load("mailer")
    module.runtime.clock = clock
    return module


@pytest.fixture
def outbox(fns: dict, env: dict, mailer: Any) -> Outbox:
    return Outbox(Path(env["MAIL_OUTBOX_DIR"]), mailer)


@pytest.fixture
def new_browser(fns: dict):
    return lambda ip="203.0.113.10": Browser(fns, source_ip=ip)


@pytest.fixture
def alice(new_browser, outbox: Outbox, db) -> dict:
    """Alice, registered through the register function; her confirmation mail is taken off the queue."""
    response = post_form(new_browser(), "/register/", ALICE)
    assert response["statusCode"] == 303, response
    outbox.deliver()
    return {**ALICE, "email": "alice@example.com"}


def reset_link(new_browser, outbox: Outbox, email: str = "alice@example.com") -> str:
    response = post_form(new_browser(), "/password/forgot/", {"email": email})
    assert response["statusCode"] == 303, response
    return outbox.link("password_reset")


def open_reset_link(browser: Browser, link: str) -> dict[str, Any]:
    """Follow the emailed link as a browser does: the GET, then its redirect."""
    parts = urlsplit(link)
    first = browser.get(parts.path, query=parts.query)
    assert first["statusCode"] == 303, first
    return browser.get(first["headers"]["Location"])


# -- forgot ---------------------------------------------------------------------------------------------
def test_the_forgot_form_has_an_email_field_and_a_csrf_token(new_browser, fns: dict) -> None:
    page = new_browser().get("/password/forgot/")
    api = call(fns, "GET", "/password/forgot", headers={"accept": "application/json"})

    assert page["statusCode"] == 200 and page["headers"]["Content-Type"].startswith("text/html")
    assert 'name="email"' in page["body"] and CSRF_RE.search(page["body"])
    assert json.loads(api["body"]) == {"fields": ["email"]}


def test_the_login_page_links_to_the_forgot_form(new_browser) -> None:
    body = new_browser().get("/login/")["body"]

    assert '<a href="/password/forgot/">Forgot your password?</a>' in body


def test_forgot_sends_the_login_page_a_flash_and_a_known_address_a_link(new_browser, alice: dict,
                                                                         outbox: Outbox, db) -> None:
    browser = new_browser()
    response = post_form(browser, "/password/forgot/", {"email": " ALICE@example.com "})

    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/login/"
    assert SENT in browser.get("/login/")["body"]
    [mail] = outbox.deliver()
    assert (mail.kind, mail.email) == ("password_reset", "alice@example.com")
    assert mail.link.startswith(f"{BASE}/password/reset/?token=")
    token = token_in(mail.link)
    assert len(token) >= 22  # at least 128 bits, base64url
    # only its SHA-256 is stored
    assert [row[0] for row in tokens_table(db) if row[1] == "password_reset"] == [
        hashlib.sha256(token.encode()).digest()]


def test_a_registrations_confirmation_never_delays_a_reset_mail(fns: dict, outbox: Outbox, db) -> None:
    post_json(fns, "/register/", ALICE)
    post_json(fns, "/password/forgot/", {"email": "alice@example.com"})

    sent = [mail.kind for mail in outbox.deliver()]

    assert sent == ["email_confirm", "password_reset"]


def test_forgot_as_json_is_202_with_the_message(fns: dict, alice: dict, outbox: Outbox) -> None:
    response = post_json(fns, "/password/forgot/", {"email": "alice@example.com"})

    assert response["statusCode"] == 202
    assert json.loads(response["body"]) == {"message": SENT}
    assert len(outbox.queued()) == 1


def test_forgot_from_one_network_is_throttled_with_retry_after(recovery, env: dict, db) -> None:
    fns = recovery(FORGOT_MAX_PER_IP="2")
    spool = Path(env["MAIL_OUTBOX_DIR"]) / "queue"
    answers = [post_json(fns, "/password/forgot/", {"email": f"user{i}@example.com"}, source_ip="198.51.100.7")
               for i in range(3)]
    browser = Browser(fns, source_ip="198.51.100.7")
    page = post_form(browser, "/password/forgot/", {"email": "someone@example.com"})
    elsewhere = post_json(fns, "/password/forgot/", {"email": "user9@example.com"}, source_ip="192.0.2.1")

    assert [a["statusCode"] for a in answers] == [202, 202, 429]
    assert int(answers[2]["headers"]["Retry-After"]) > 0
    assert json.loads(answers[2]["body"])["error"] == "too_many_requests"
    # a browser on the same network gets the form again, with the message and Retry-After
    assert page["statusCode"] == 429 and int(page["headers"]["Retry-After"]) > 0
    assert 'name="email"' in page["body"] and 'value="someone@example.com"' in page["body"]
    assert elsewhere["statusCode"] == 202  # another network is not held back
    assert len(list(spool.glob("*.json"))) == 3  # a refused request queues nothing


# -- reset ----------------------------------------------------------------------------------------------
def test_the_link_keeps_its_token_in_a_cookie_and_redirects_to_the_tokenless_page(new_browser, alice: dict,
                                                                                   outbox: Outbox, db) -> None:
    link = reset_link(new_browser, outbox)
    browser = new_browser()
    before = (users_table(db), tokens_table(db), live_sessions(db))

    parts = urlsplit(link)
    response = browser.get(parts.path, query=parts.query)

    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/password/reset/"
    cookie = response_cookies(response)[RESET_COOKIE]
    assert cookie["value"] == token_in(link)
    assert cookie["path"] == "/password/reset/" and cookie["httponly"] and cookie["secure"]
    assert cookie["samesite"] == "Lax" and 0 < int(cookie["max-age"]) <= 3600 and "domain" not in cookie
    assert (users_table(db), tokens_table(db), live_sessions(db)) == before  # the GET changes nothing
    # THEN the tokenless page shows the form, and tells nobody where it was
    page = browser.get("/password/reset/")
    assert page["statusCode"] == 200 and page["headers"]["Referrer-Policy"] == "no-referrer"
    assert 'name="password"' in page["body"] and 'name="password_confirm"' in page["body"]
    assert token_in(link) not in page["body"]
    assert (users_table(db), tokens_table(db), live_sessions(db)) == before


@pytest.mark.parametrize("case", ["no cookie", "forged", "expired", "used", "malformed link"])
def test_a_bad_link_shows_400_with_a_way_to_ask_for_a_new_one(new_browser, alice: dict, outbox: Outbox,
                                                               clock: Clock, fns: dict, case: str) -> None:
    browser = new_browser()
    link = reset_link(new_browser, outbox)
    if case == "forged":
        link = f"{BASE}/password/reset/?token=" + "A" * 43
    elif case == "expired":
        clock.advance(3601)
    elif case == "used":
        assert post_json(fns, "/password/reset/", {"token": token_in(link), "password": NEW_PASSWORD})[
            "statusCode"] == 204
    if case == "no cookie":
        page = browser.get("/password/reset/")
    elif case == "malformed link":
        page = browser.get("/password/reset/", query="token=%3Bx%3D1%0d%0a")
    else:
        page = open_reset_link(browser, link)

    assert page["statusCode"] == 400
    assert INVALID_RESET in page["body"] and '<a href="/password/forgot/">' in page["body"]
    assert page["headers"]["Referrer-Policy"] == "no-referrer"


def test_a_reset_sets_the_password_signs_out_everywhere_and_confirms_the_address(
        new_browser, alice: dict, outbox: Outbox, fns: dict, db) -> None:
    # GIVEN Alice signed in on two browsers, and a reset link
    laptop, phone = new_browser(), new_browser()
    sign_in(laptop)
    sign_in(phone)
    old_cookies = [laptop.jar[SESSION], phone.jar[SESSION]]
    link = reset_link(new_browser, outbox)
    browser = new_browser()
    open_reset_link(browser, link)

    # WHEN she chooses a new password
    response = post_form(browser, "/password/reset/", {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD})

    # THEN she is sent to log in, the token cookie is gone, and no session was created
    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/login/"
    cleared = response_cookies(response)[RESET_COOKIE]
    assert cleared["max-age"] == "0" and cleared["path"] == "/password/reset/"
    assert SESSION not in response_cookies(response)
    assert "Your password has been reset. You may now login." in browser.get("/login/")["body"]
    # AND every old session is signed out
    assert live_sessions(db) == 0
    assert [signed_in_user(fns, cookie) for cookie in old_cookies] == [None, None]
    # AND only the new password works; the address counts as confirmed
    assert post_form(new_browser(), "/login/", {"email": alice["email"], "password": PASSWORD})["statusCode"] == 401
    sign_in(new_browser(), password=NEW_PASSWORD)
    assert confirmed(db)
    # AND a notice was queued, carrying no secret
    assert [m.kind for m in outbox.queued()] == ["password_reset_notice"]
    [notice] = outbox.deliver()
    assert notice.email == "alice@example.com" and notice.link is None and token_in(link) not in notice.text


def test_a_reset_clears_the_accounts_login_failures(recovery, env: dict, mailer: Any, db) -> None:
    fns = recovery(LOGIN_MAX_FAILURES_PER_EMAIL="3")
    outbox = Outbox(Path(env["MAIL_OUTBOX_DIR"]), mailer)
    assert post_json(fns, "/register/", {**ALICE})["statusCode"] == 201
    outbox.deliver()
    # GIVEN an attacker who has put Alice's account into backoff from many networks
    for i in range(4):
        post_json(fns, "/login/", {"email": "alice@example.com", "password": "guess"}, source_ip=f"192.0.2.{i}")
    assert post_json(fns, "/login/", {"email": "alice@example.com", "password": PASSWORD},
                     source_ip="198.51.100.1")["statusCode"] == 429
    post_json(fns, "/password/forgot/", {"email": "alice@example.com"})
    token = token_in(outbox.link())

    # WHEN she resets her password
    assert post_json(fns, "/password/reset/", {"token": token, "password": NEW_PASSWORD})["statusCode"] == 204

    # THEN she can sign in at once
    assert post_json(fns, "/login/", {"email": "alice@example.com", "password": NEW_PASSWORD},
                     source_ip="198.51.100.1")["statusCode"] == 200


def test_json_reset_is_204_and_a_bad_token_is_400_invalid_token(fns: dict, new_browser, alice: dict,
                                                                 outbox: Outbox) -> None:
    token = token_in(reset_link(new_browser, outbox))

    wrong = post_json(fns, "/password/reset/", {"token": token[:-2] + "xx", "password": NEW_PASSWORD})
    missing = post_json(fns, "/password/reset/", {"password": NEW_PASSWORD})
    short = post_json(fns, "/password/reset/", {"token": token, "password": "short"})
    mismatch = post_json(fns, "/password/reset/", {"token": token, "password": NEW_PASSWORD,
                                                    "password_confirm": "something else"})
    ok = post_json(fns, "/password/reset/", {"token": token, "password": NEW_PASSWORD})

    for refused in (wrong, missing):
        assert refused["statusCode"] == 400
        assert json.loads(refused["body"]) == {"error": "invalid_token", "message": INVALID_RESET}
    assert short["statusCode"] == 422 and "password" in json.loads(short["body"])["fields"]
    assert mismatch["statusCode"] == 422 and "password_confirm" in json.loads(mismatch["body"])["fields"]
    assert ok["statusCode"] == 204 and ok["body"] == ""


def test_a_browser_must_repeat_the_new_password(new_browser, alice: dict, outbox: Outbox, db) -> None:
    browser = new_browser()
    open_reset_link(browser, reset_link(new_browser, outbox))
    before = password_hash(db)

    missing = post_form(browser, "/password/reset/", {"password": NEW_PASSWORD})
    different = post_form(browser, "/password/reset/", {"password": NEW_PASSWORD, "password_confirm": "other one"})
    too_long = post_form(browser, "/password/reset/", {"password": "x" * 257, "password_confirm": "x" * 257})

    for page in (missing, different):
        assert page["statusCode"] == 422 and 'id="password_confirm-error"' in page["body"]
        assert "Passwords must match." in page["body"] and page["headers"]["Referrer-Policy"] == "no-referrer"
    assert too_long["statusCode"] == 422 and 'id="password-error"' in too_long["body"]
    assert password_hash(db) == before


def test_a_reset_token_is_used_once_even_by_parallel_posts(load, new_browser, alice: dict, outbox: Outbox,
                                                          clock: Clock) -> None:
    token = token_in(reset_link(new_browser, outbox))
    environments = [load("reset") for _ in range(4)]  # one request at a time in each, as in Lambda
    for module in environments:
        module.runtime.clock = clock
    barrier, results = threading.Barrier(4), []

    def reset(module: Any, password: str) -> None:
        barrier.wait()
        event = make_event("POST", "/password/reset/", json_body={"token": token, "password": password},
                           headers={"origin": ORIGIN})
        results.append(module.lambda_handler(event, LambdaContext())["statusCode"])

    threads = [threading.Thread(target=reset, args=(module, f"{NEW_PASSWORD} {i}"))
               for i, module in enumerate(environments)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [204, 400, 400, 400]


def test_a_newer_reset_request_voids_the_older_link(fns: dict, new_browser, alice: dict, outbox: Outbox,
                                                    clock: Clock) -> None:
    first = token_in(reset_link(new_browser, outbox))
    clock.advance(61)  # past the one-a-minute limit per address
    second = token_in(reset_link(new_browser, outbox))

    assert post_json(fns, "/password/reset/", {"token": first, "password": NEW_PASSWORD})["statusCode"] == 400
    assert post_json(fns, "/password/reset/", {"token": second, "password": NEW_PASSWORD})["statusCode"] == 204


# -- change ---------------------------------------------------------------------------------------------
def test_change_needs_a_session(fns: dict, new_browser) -> None:
    page = new_browser().get("/password/change/")
    posted = post_form(new_browser(), "/password/change/", {"current_password": PASSWORD, "password": NEW_PASSWORD,
                                                            "password_confirm": NEW_PASSWORD})
    api = call(fns, "GET", "/password/change/", headers={"accept": "application/json"})
    api_post = post_json(fns, "/password/change/", {"current_password": PASSWORD, "password": NEW_PASSWORD})

    for response in (page, posted):
        assert response["statusCode"] == 303
        assert response["headers"]["Location"] == "/login/?next=/password/change/"
    for response in (api, api_post):
        assert response["statusCode"] == 401 and json.loads(response["body"])["error"] == "not_signed_in"


def test_the_change_form_has_its_three_fields(new_browser, alice: dict) -> None:
    browser = new_browser()
    sign_in(browser)

    page = browser.get("/password/change/")

    assert page["statusCode"] == 200
    for name in ("current_password", "password", "password_confirm", "csrf_token"):
        assert f'name="{name}"' in page["body"]


def test_a_change_replaces_this_session_and_signs_out_the_others(new_browser, alice: dict, outbox: Outbox,
                                                                 fns: dict, db) -> None:
    # GIVEN Alice signed in on two browsers, and an outstanding reset link
    browser, other = new_browser(), new_browser()
    sign_in(browser)
    sign_in(other)
    old_cookie = browser.jar[SESSION]
    link = reset_link(new_browser, outbox)

    # WHEN she changes her password on one of them
    response = post_form(browser, "/password/change/", {"current_password": PASSWORD, "password": NEW_PASSWORD,
                                                        "password_confirm": NEW_PASSWORD})

    # THEN that browser goes on in a new session, and the old ones are signed out
    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/dash/"
    new_cookie = response_cookies(response)[SESSION]
    assert new_cookie["value"] != old_cookie and new_cookie["httponly"] and new_cookie["path"] == "/"
    assert signed_in_user(fns, new_cookie["value"])["email"] == "alice@example.com"
    assert signed_in_user(fns, old_cookie) is None and signed_in_user(fns, other.jar[SESSION]) is None
    assert live_sessions(db) == 1
    assert flash_of(fns, browser) == ["Your password has been changed."]
    # AND only the new password works, the old reset link is void, and a notice was queued
    assert post_json(fns, "/login/", {"email": "alice@example.com", "password": PASSWORD})["statusCode"] == 401
    assert post_json(fns, "/login/", {"email": "alice@example.com", "password": NEW_PASSWORD})["statusCode"] == 200
    assert post_json(fns, "/password/reset/", {"token": token_in(link), "password": "x" * 12})["statusCode"] == 400
    assert [m.kind for m in outbox.queued()] == ["password_changed_notice"]


def test_a_json_change_is_204_with_the_new_session_cookie(fns: dict, new_browser, alice: dict) -> None:
    browser = new_browser()
    sign_in(browser)

    response = post_json(fns, "/password/change/", {"current_password": PASSWORD, "password": NEW_PASSWORD},
                         cookies=[f"{SESSION}={browser.jar[SESSION]}"])

    assert response["statusCode"] == 204
    cookie = response_cookies(response)[SESSION]
    assert signed_in_user(fns, cookie["value"])["email"] == "alice@example.com"


def test_a_wrong_current_password_is_422_next_to_the_field_and_throttled(recovery, env: dict, clock: Clock,
                                                                         db) -> None:
    fns = recovery(LOGIN_MAX_FAILURES_PER_EMAIL="2")
    browser = Browser(fns)
    post_form(browser, "/register/", ALICE)
    sign_in(browser)
    before = password_hash(db)
    fields = {"current_password": "not my password", "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}

    page = post_form(browser, "/password/change/", fields)
    api = post_json(fns, "/password/change/", {"current_password": "nope", "password": NEW_PASSWORD},
                    cookies=[f"{SESSION}={browser.jar[SESSION]}"])
    refused = [post_form(browser, "/password/change/", fields) for _ in range(2)]

    assert page["statusCode"] == 422
    assert '<p class="error" id="current_password-error">Your current password is incorrect</p>' in page["body"]
    assert api["statusCode"] == 422
    assert json.loads(api["body"])["fields"] == {"current_password": "Your current password is incorrect"}
    assert refused[-1]["statusCode"] == 429 and int(refused[-1]["headers"]["Retry-After"]) > 0
    assert password_hash(db) == before and signed_in_user(fns, browser.jar[SESSION]) is not None


# -- confirm ---------------------------------------------------------------------------------------------
def test_registration_queues_a_confirmation_link(new_browser, outbox: Outbox, db) -> None:
    post_form(new_browser(), "/register/", ALICE)

    [mail] = outbox.deliver()

    assert (mail.kind, mail.email) == ("email_confirm", "alice@example.com")
    assert mail.link.startswith(f"{BASE}/email/confirm/?token=")
    assert not confirmed(db)


def test_a_registration_succeeds_when_its_confirmation_cannot_be_queued(recovery, env: dict, tmp_path: Path,
                                                                        db) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    fns = recovery(MAIL_OUTBOX_DIR=str(blocked))

    response = post_json(fns, "/register/", ALICE)

    assert response["statusCode"] == 201
    assert db.execute("SELECT count(*) FROM public.users").fetchone()[0] == 1


def test_an_unconfirmed_login_whose_new_link_cannot_be_queued_is_a_503_not_a_false_promise(recovery, env: dict,
                                                                                           tmp_path: Path, db) -> None:
    # GIVEN REQUIRE_CONFIRMED_EMAIL, an unconfirmed account, and a mail queue that cannot be written
    post_json(recovery(), "/register/", ALICE)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    fns = recovery(REQUIRE_CONFIRMED_EMAIL="true", MAIL_OUTBOX_DIR=str(blocked))

    # WHEN she signs in with the right password
    with capture_logs("login") as log:
        response = fns["login"].lambda_handler(make_event(  # (post_json refuses any 5xx)
            "POST", "/login/", json_body={"email": "alice@example.com", "password": PASSWORD},
            headers={"origin": ORIGIN}), LambdaContext())

    # THEN the answer is a 503 (the 403 says "We have sent you a new link"), no session is made, and
    # the cause is logged with the request's correlation id
    assert response["statusCode"] == 503 and "sent you a new link" not in response["body"]
    assert live_sessions(db) == 0
    [line] = [json.loads(x) for x in log.getvalue().splitlines() if "Dependency unavailable" in x]
    assert line["correlation_id"].startswith("req-")


def test_the_link_shows_a_button_and_changes_nothing(new_browser, outbox: Outbox, db) -> None:
    post_form(new_browser(), "/register/", ALICE)
    link = outbox.link("email_confirm")
    before = (users_table(db), tokens_table(db))

    parts = urlsplit(link)
    page = new_browser().get(parts.path, query=parts.query)

    assert page["statusCode"] == 200 and page["headers"]["Referrer-Policy"] == "no-referrer"
    assert '<button type="submit">Confirm my email address</button>' in page["body"]
    assert 'method="post" action="/email/confirm/"' in page["body"] and CSRF_RE.search(page["body"])
    assert (users_table(db), tokens_table(db)) == before and not confirmed(db)


def confirm_by_button(browser: Browser, link: str) -> dict[str, Any]:
    """Open the link and press the button."""
    parts = urlsplit(link)
    page = browser.get(parts.path, query=parts.query)
    token = CSRF_RE.search(page["body"]).group(1)
    hidden = parse_qs(urlsplit(link).query)["token"][0]
    assert f'name="token" value="{hidden}"' in page["body"]
    return browser.post("/email/confirm/", form={"csrf_token": token, "token": hidden}, headers=SAME_ORIGIN)


def test_the_button_confirms_and_sends_the_browser_to_log_in(new_browser, outbox: Outbox, fns: dict, db) -> None:
    post_form(new_browser(), "/register/", ALICE)
    link = outbox.link("email_confirm")
    browser = new_browser()

    response = confirm_by_button(browser, link)

    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/login/"
    assert "Thank you, your email address is confirmed." in browser.get("/login/")["body"]
    assert confirmed(db)
    # the link is used up
    again = new_browser().get("/email/confirm/", query=urlsplit(link).query)
    assert again["statusCode"] == 400 and INVALID_CONFIRM in again["body"]
    user = json.loads(post_json(fns, "/login/", {"email": "alice@example.com", "password": PASSWORD})["body"])
    assert user["user"]["email_confirmed"] is True


def test_a_signed_in_browser_goes_on_to_the_dashboard(new_browser, outbox: Outbox, db) -> None:
    browser = new_browser()
    post_form(browser, "/register/", ALICE)
    link = outbox.link("email_confirm")
    sign_in(browser)

    response = confirm_by_button(browser, link)

    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/dash/"
    assert confirmed(db)


def test_json_confirm_is_204_and_a_bad_token_400(fns: dict, new_browser, outbox: Outbox, db) -> None:
    post_form(new_browser(), "/register/", ALICE)
    token = token_in(outbox.link("email_confirm"))

    bad = post_json(fns, "/email/confirm/", {"token": "B" * 43})
    ok = post_json(fns, "/email/confirm/", {"token": token})
    again = post_json(fns, "/email/confirm/", {"token": token})

    assert bad["statusCode"] == again["statusCode"] == 400
    assert json.loads(bad["body"]) == {"error": "invalid_token", "message": INVALID_CONFIRM}
    assert ok["statusCode"] == 204 and confirmed(db)


def test_a_confirmation_link_is_bound_to_the_address_it_was_sent_to(fns: dict, new_browser, outbox: Outbox,
                                                                     db) -> None:
    post_form(new_browser(), "/register/", ALICE)
    token = token_in(outbox.link("email_confirm"))
    db.execute("UPDATE public.users SET email = 'alice@elsewhere.example'")

    page = new_browser().get("/email/confirm/", query=f"token={token}")
    api = post_json(fns, "/email/confirm/", {"token": token})

    assert page["statusCode"] == api["statusCode"] == 400
    assert not confirmed(db, "alice@elsewhere.example")


def test_an_invalid_confirmation_link_is_a_400_page(new_browser, alice: dict, db) -> None:
    page = new_browser().get("/email/confirm/", query="token=" + "C" * 43)

    assert page["statusCode"] == 400 and INVALID_CONFIRM in page["body"]
    assert not confirmed(db)


def test_a_signed_in_unconfirmed_user_can_ask_for_a_new_link(new_browser, alice: dict, outbox: Outbox, fns: dict,
                                                             clock: Clock) -> None:
    browser = new_browser()
    sign_in(browser)

    page = browser.get("/email/confirm/")
    response = post_form(browser, "/email/confirm/", {})
    api = post_json(fns, "/email/confirm/", {}, cookies=[f"{SESSION}={browser.jar[SESSION]}"])

    assert page["statusCode"] == 200 and "Send me a new link" in page["body"]
    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/dash/"
    assert flash_of(fns, browser) == ["We have sent you a new confirmation link."]
    assert api["statusCode"] == 202
    assert json.loads(api["body"]) == {"message": "We have sent you a new confirmation link."}
    assert [(m.kind, m.user_id is not None) for m in outbox.queued()] == [("email_confirm", True)] * 2
    # the mailer sends at most one a minute (the registration's was one): one more now, the other dropped
    clock.advance(61)
    assert len(outbox.deliver()) == 1


def test_asking_for_a_new_link_signed_out_goes_to_the_login_page(fns: dict, new_browser, outbox: Outbox) -> None:
    page = new_browser().get("/email/confirm/")
    posted = post_form(new_browser(), "/email/confirm/", {})
    api = post_json(fns, "/email/confirm/", {})

    for response in (page, posted):
        assert response["statusCode"] == 303 and response["headers"]["Location"] == "/login/?next=/email/confirm/"
    assert api["statusCode"] == 401 and json.loads(api["body"])["error"] == "not_signed_in"
    assert outbox.queued() == []


def test_a_confirmed_user_asking_again_is_told_so_and_sent_nothing(fns: dict, new_browser, alice: dict,
                                                                    outbox: Outbox, db) -> None:
    db.execute("UPDATE public.users SET email_confirmed_at = now()")
    browser = new_browser()
    sign_in(browser)

    api = post_json(fns, "/email/confirm/", {}, cookies=[f"{SESSION}={browser.jar[SESSION]}"])

    assert api["statusCode"] == 200
    assert json.loads(api["body"]) == {"message": "Your email address is already confirmed."}
    assert outbox.queued() == []


def test_the_user_object_says_whether_the_address_is_confirmed(fns: dict, alice: dict, db) -> None:
    before = json.loads(post_json(fns, "/login/", {"email": "alice@example.com", "password": PASSWORD})["body"])
    db.execute("UPDATE public.users SET email_confirmed_at = now()")
    after = json.loads(post_json(fns, "/login/", {"email": "alice@example.com", "password": PASSWORD})["body"])

    assert before["user"]["email_confirmed"] is False and after["user"]["email_confirmed"] is True


# -- REQUIRE_CONFIRMED_EMAIL ---------------------------------------------------------------------------
def test_required_confirmation_refuses_an_unconfirmed_login_and_sends_a_link(recovery, env: dict, mailer: Any,
                                                                             clock: Clock, db) -> None:
    fns = recovery(REQUIRE_CONFIRMED_EMAIL="true")
    outbox = Outbox(Path(env["MAIL_OUTBOX_DIR"]), mailer)
    browser = Browser(fns)
    post_form(browser, "/register/", ALICE)
    outbox.deliver()
    clock.advance(61)

    page = post_form(browser, "/login/", {"email": "alice@example.com", "password": PASSWORD})
    api = post_json(fns, "/login/", {"email": "alice@example.com", "password": PASSWORD})
    wrong = post_json(fns, "/login/", {"email": "alice@example.com", "password": "wrong password"})

    message = "Please confirm your email address first. We have sent you a new link."
    assert page["statusCode"] == 403 and message in page["body"] and 'name="password"' in page["body"]
    assert api["statusCode"] == 403 and json.loads(api["body"]) == {"error": "email_not_confirmed", "message": message}
    assert wrong["statusCode"] == 401  # a wrong password learns nothing about the address
    assert SESSION not in response_cookies(page) and live_sessions(db) == 0
    assert [m.kind for m in outbox.queued()] == ["email_confirm", "email_confirm"]
    # WHEN she confirms with the link, she can sign in
    assert post_json(fns, "/email/confirm/", {"token": token_in(outbox.link("email_confirm"))})["statusCode"] == 204
    assert post_json(fns, "/login/", {"email": "alice@example.com", "password": PASSWORD})["statusCode"] == 200
