"""Settings read from the environment, and the signed tokens, without any network."""

from __future__ import annotations

import json
import time

import pytest
from argon2.exceptions import VerifyMismatchError

from dashgate.errors import ConfigurationError
from dashgate.passwords import Passwords
from dashgate.sessions import Tokens
from dashgate.settings import Settings, parse_secret_keys

KEY, OLD = "k" * 40, "o" * 40
DB = {"DATABASE_URL": "postgresql://localhost/dashgate"}


def test_defaults_follow_the_spec() -> None:
    s = Settings.from_env(DB)

    assert s.session_cookie_name == "__Host-session" and s.session_cookie_secure
    assert (s.argon2_time_cost, s.argon2_memory_cost, s.argon2_parallelism) == (2, 19456, 1)
    assert s.remember_me_seconds == 86400 and s.default_redirect == "/dash/" and s.healthcheck_sql == "select 1"


@pytest.mark.parametrize(("env", "name"), [
    ({"ARGON2_TIME_COST": "two"}, "ARGON2_TIME_COST"),
    ({"ARGON2_MEMORY_COST": "0"}, "ARGON2_MEMORY_COST"),
    ({"REMEMBER_ME_SECONDS": "-5"}, "REMEMBER_ME_SECONDS"),
    ({"SESSION_COOKIE_SECURE": "maybe"}, "SESSION_COOKIE_SECURE"),
    ({"SESSION_SECRETS": "short"}, "SESSION_SECRETS"),
    ({"DEFAULT_REDIRECT": "https://elsewhere.example/"}, "DEFAULT_REDIRECT"),
    ({"SESSION_COOKIE_SECURE": "false", "SESSION_COOKIE_NAME": "__Host-s"}, "SESSION_COOKIE_NAME"),
    ({"COOKIE_DOMAIN": "example.com", "SESSION_COOKIE_NAME": "__Host-s"}, "SESSION_COOKIE_NAME"),
])
def test_a_bad_value_stops_start_up_naming_the_variable(env: dict, name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({**DB, **env})


def test_without_a_database_start_up_stops_naming_both_variables() -> None:
    with pytest.raises(ConfigurationError, match=r"DATABASE_URL.*DB_SECRET_ARN"):
        Settings.from_env({"SESSION_SECRETS": KEY})
    assert Settings.from_env({"DB_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:db"}).db_secret_arn


def test_plain_http_or_a_cookie_domain_drop_the_host_prefix() -> None:
    assert Settings.from_env({**DB, "SESSION_COOKIE_SECURE": "false"}).session_cookie_name == "session"
    assert Settings.from_env({**DB, "COOKIE_DOMAIN": "example.com"}).session_cookie_name == "session"


def test_keys_are_current_first() -> None:
    assert Settings.from_env({**DB, "SESSION_SECRETS": f"{KEY}, {OLD}"}).session_secrets == (KEY, OLD)
    assert parse_secret_keys(json.dumps({"current": KEY, "previous": [OLD]}), "X") == (KEY, OLD)
    with pytest.raises(ConfigurationError, match="current"):
        parse_secret_keys('{"key": "x"}', "SESSION_SECRET_ARN")


def tokens(*keys: str, **settings) -> Tokens:
    return Tokens(Settings(**settings), keys)


def test_session_tokens_name_a_256_bit_id_and_verify_with_any_listed_key() -> None:
    session_id, token = tokens(OLD).new_session()

    assert len(session_id) >= 43  # 32 random bytes, base64url
    assert tokens(KEY, OLD).session_id(token) == session_id
    assert tokens(KEY).session_id(token) is None
    assert tokens(KEY, OLD).session_id(token + "x") is None
    assert tokens(KEY).session_id(None) is None


def test_csrf_tokens_belong_to_their_cookie_and_expire() -> None:
    t = tokens(KEY, csrf_max_age_seconds=1)
    secret = t.new_csrf_secret()
    token = t.csrf_token(secret)

    assert t.csrf_matches(secret, token)
    assert not t.csrf_matches(t.new_csrf_secret(), token)
    assert not t.csrf_matches(secret, tokens(OLD).csrf_token(secret))
    assert not t.csrf_matches(None, token) and not t.csrf_matches(secret, "")
    time.sleep(2.1)
    assert not t.csrf_matches(secret, token)


def test_flash_messages_survive_a_round_trip_and_reject_forgeries() -> None:
    t = tokens(KEY)
    cookie = t.flash_cookie(["Hello <b>"])

    assert t.flash_messages(cookie.value) == ["Hello <b>"]
    assert t.flash_messages(cookie.value[:-2] + "xx") == []
    assert tokens(OLD).flash_messages(cookie.value) == []
    assert cookie.max_age == 300


def test_every_cookie_fits_the_4096_byte_limit() -> None:
    t = tokens(KEY)
    longest = [t.session_cookie(t.new_session()[1], 86400), t.csrf_cookie(t.new_csrf_secret()),
               t.flash_cookie(["You have successfully registered! You may now login."])]

    assert all(len(str(cookie)) < 4096 for cookie in longest)  # RFC 6265 6.1 / ASVS V3.3.5


def test_cookies_render_with_the_spec_attributes() -> None:
    t = tokens(KEY)

    assert str(t.session_cookie("v", None)) == "__Host-session=v; Path=/; Secure; HttpOnly; SameSite=Lax"
    assert str(t.clear_session_cookie()) == "__Host-session=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
    local = Tokens(Settings.from_env({**DB, "COOKIE_DOMAIN": "example.com"}), (KEY,))
    assert str(local.session_cookie("v", 60)) == (
        "session=v; Path=/; Domain=example.com; Max-Age=60; Secure; HttpOnly; SameSite=Lax")


def test_an_unknown_email_costs_one_real_verification() -> None:
    passwords = Passwords(Settings(argon2_memory_cost=1024, argon2_time_cost=1))
    good = passwords.hash("right password")

    assert passwords.verify(good, "right password")
    assert not passwords.verify(good, "wrong password")
    assert not passwords.verify(None, "anything")
    assert passwords._dummy.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    # a well-formed hash that really runs argon2 and then mismatches (not a parse failure, which is instant)
    with pytest.raises(VerifyMismatchError):
        passwords.hasher.verify(passwords._dummy, "anything")
    assert passwords.needs_rehash("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
    assert not passwords.needs_rehash(good)
