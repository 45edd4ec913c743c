"""Account recovery's service and data layer (SPEC: "Account recovery and email") against a real
PostgreSQL: one-time tokens (randomness, hashing, expiry, single use, binding to an address), the
atomic reset and change, per-address and per-network limits over simulated time, and what is queued."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from dashgate.errors import (
    ConfigurationError,
    EmailNotConfirmed,
    InvalidCredentials,
    InvalidToken,
    NotSignedIn,
    ServiceUnavailable,
    Throttled,
    ValidationFailed,
)
from dashgate.mail import MailRequest
from dashgate.mailqueue import SPOOL, SpoolQueue
from dashgate.passwords import Passwords
from dashgate.recovery import Issued, Recovery, hash_token
from dashgate.sessions import Tokens
from dashgate.settings import Settings
from dashgate.store import Store, User
from dashgate.users import SignIn, SignUp, Users
from tests.conftest import KEY, PASSWORD
from tests.support import Clock, wait_for

CHEAP_HASH = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "1024"}
NEW_PASSWORD = "a brand new passphrase"
ALICE = "alice@example.com"
IP = "203.0.113.10"


class CountingPasswords(Passwords):
    """The real hasher, counting its verifications (a throttled check must run none)."""

    verifies = 0

    def verify(self, stored_hash: str | None, password: str) -> bool:
        self.verifies += 1
        return super().verify(stored_hash, password)


class BrokenQueue:
    """A mail queue that cannot be reached."""

    def send(self, request: MailRequest) -> None:
        raise ServiceUnavailable() from OSError("queue unreachable")


@dataclass
class Service:
    """What a function builds at cold start, over the test database, with a clock we control."""

    settings: Settings
    store: Store
    tokens: Tokens
    passwords: CountingPasswords
    recovery: Recovery
    users: Users
    clock: Clock
    spool: Path

    def queued(self) -> list[MailRequest]:
        """The messages on the local queue, oldest first."""
        return [MailRequest.from_json(p.read_text()) for p in SpoolQueue(self.spool).pending()]

    def register(self, email: str = ALICE, first_name: str = "Alice") -> User:
        return self.users.register(SignUp(email, PASSWORD, first_name, "Liddell"), ip=IP, now=self.clock())

    def sign_in(self, email: str = ALICE, password: str = PASSWORD, remember: bool = False, ip: str = IP) -> str:
        """A new session; its cookie token."""
        return self.users.authenticate(SignIn(email, password, remember), ip=ip, presented_token=None,
                                       now=self.clock()).token

    def issue_reset(self, email: str = ALICE) -> Issued | None:
        return self.recovery.issue(MailRequest("password_reset", email), now=self.clock())

    def issue_confirm(self, user: User) -> Issued | None:
        return self.recovery.issue(MailRequest("email_confirm", user.email, user.id), now=self.clock())


@pytest.fixture
def make_service(env: dict, db: psycopg.Connection):
    """make_service(FORGOT_MAX_PER_IP="3", ...): a service under extra settings; closed after the test."""
    stores = []

    def make(clock: Clock | None = None, queue=None, **overrides: str) -> Service:
        settings = Settings.from_env({**env, **CHEAP_HASH, **overrides})
        store = Store.from_settings(settings)
        stores.append(store)
        tokens, passwords = Tokens(settings, (KEY,)), CountingPasswords(settings)
        spool = Path(env["MAIL_OUTBOX_DIR"]) / SPOOL
        recovery = Recovery(settings, store, tokens, passwords, queue or SpoolQueue(spool))
        return Service(settings, store, tokens, passwords, recovery, Users(settings, store, tokens, passwords),
                       clock or Clock(), spool)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def svc(make_service) -> Service:
    return make_service()


def token_of(issued: Issued) -> str:
    return parse_qs(urlsplit(issued.link).query)["token"][0]


def hits(db: psycopg.Connection, key: str) -> int | None:
    row = db.execute("SELECT hits FROM public.dashgate_throttle WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def live_sessions(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0]


# -- tokens --------------------------------------------------------------------------------------------
def test_a_token_is_256_random_bits_urlsafe_and_only_its_sha256_is_stored(svc: Service, db) -> None:
    user = svc.register()

    issued = svc.issue_reset()

    token = token_of(issued)
    assert issued.link == f"https://dash.example.test/password/reset/?token={token}"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token) and len(base64.urlsafe_b64decode(token + "=")) == 32
    assert (issued.user_id, issued.email, issued.first_name) == (user.id, ALICE, "Alice")
    assert issued.expires_at == svc.clock.now + timedelta(seconds=3600)
    row = db.execute("SELECT token_hash, purpose, user_id, email, expires_at, used_at, t::text "
                     "FROM public.dashgate_tokens t").fetchone()
    assert row[:6] == (hashlib.sha256(token.encode()).digest(), "password_reset", user.id, ALICE,
                       issued.expires_at, None)
    assert bytes(row[0]) == issued.token_hash
    assert token not in row[6] and token.encode().hex() not in row[6]  # the raw token is nowhere in the row


def test_two_issued_tokens_differ(svc: Service) -> None:
    svc.register()
    first = token_of(svc.issue_reset())
    svc.clock.advance(60)
    assert token_of(svc.issue_reset()) != first


def test_a_reset_token_expires_with_the_clock(svc: Service) -> None:
    svc.register()
    token = token_of(svc.issue_reset())

    svc.clock.advance(3599)
    assert svc.recovery.reset_token_valid(token, now=svc.clock())
    svc.clock.advance(1)
    assert not svc.recovery.reset_token_valid(token, now=svc.clock())
    with pytest.raises(InvalidToken):
        svc.recovery.reset(token, NEW_PASSWORD, now=svc.clock())


def test_a_reset_token_works_once(svc: Service) -> None:
    svc.register()
    token = token_of(svc.issue_reset())

    svc.recovery.reset(token, NEW_PASSWORD, now=svc.clock())

    assert not svc.recovery.reset_token_valid(token, now=svc.clock())
    with pytest.raises(InvalidToken):
        svc.recovery.reset(token, "yet another passphrase", now=svc.clock())
    svc.sign_in(password=NEW_PASSWORD)


@pytest.mark.parametrize("token", [None, "", "not-a-token", "x" * 5000, "ümlaut", "a\udcff"])
def test_missing_or_forged_tokens_are_invalid_without_hashing(svc: Service, token) -> None:
    svc.register()
    svc.issue_reset()

    assert not svc.recovery.reset_token_valid(token, now=svc.clock())
    assert not svc.recovery.confirm_token_valid(token, now=svc.clock())
    with pytest.raises(InvalidToken):
        svc.recovery.reset(token, NEW_PASSWORD, now=svc.clock())
    with pytest.raises(InvalidToken, match="confirmation link"):
        svc.recovery.confirm(token, now=svc.clock())


def test_a_reset_token_does_not_confirm_and_a_confirmation_token_does_not_reset(svc: Service) -> None:
    user = svc.register()
    reset_token = token_of(svc.issue_reset())
    confirm_token = token_of(svc.issue_confirm(user))

    assert not svc.recovery.confirm_token_valid(reset_token, now=svc.clock())
    assert not svc.recovery.reset_token_valid(confirm_token, now=svc.clock())
    with pytest.raises(InvalidToken):
        svc.recovery.reset(confirm_token, NEW_PASSWORD, now=svc.clock())


def test_two_parallel_resets_with_one_token_exactly_one_succeeds(make_service, database_url: str, db) -> None:
    # GIVEN a reset token, and two execution environments about to use it, with different passwords
    first, second = make_service(), make_service()
    first.clock = second.clock
    first.register()
    token = token_of(first.issue_reset())
    outcomes: dict[str, object] = {}

    def reset(service: Service, password: str) -> None:
        try:
            service.recovery.reset(token, password, now=service.clock())
            outcomes[password] = "reset"
        except InvalidToken as err:
            outcomes[password] = err

    # WHEN both get past the read-only check and reach the token row at the same moment (a transaction
    # of the test's holds its row lock until both are waiting for it)
    with psycopg.connect(database_url, autocommit=True) as blocker, blocker.transaction():
        blocker.execute("SELECT 1 FROM public.dashgate_tokens FOR UPDATE")
        threads = [threading.Thread(target=reset, args=(s, p))
                   for s, p in ((first, "first new passphrase"), (second, "second new passphrase"))]
        for thread in threads:
            thread.start()
        wait_for_lock_waiters(db, 2)
    for thread in threads:
        thread.join(10)

    # THEN exactly one reset happened, and its password is the one that works
    assert sorted(map(str, outcomes.values())) == [str(InvalidToken()), "reset"]
    winner = next(p for p, outcome in outcomes.items() if outcome == "reset")
    first.sign_in(password=winner)
    assert db.execute("SELECT count(*) FROM public.dashgate_tokens WHERE used_at IS NOT NULL").fetchone()[0] == 1


def wait_for_lock_waiters(db: psycopg.Connection, count: int) -> None:
    wait_for(lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND datname = current_database()").fetchone()[0] >= count, timeout=10)


def test_a_newer_request_voids_the_older_token(svc: Service) -> None:
    user = svc.register()
    old_reset, old_confirm = token_of(svc.issue_reset()), token_of(svc.issue_confirm(user))
    svc.clock.advance(60)

    new_reset, new_confirm = token_of(svc.issue_reset()), token_of(svc.issue_confirm(user))

    assert not svc.recovery.reset_token_valid(old_reset, now=svc.clock())
    assert not svc.recovery.confirm_token_valid(old_confirm, now=svc.clock())
    assert svc.recovery.reset_token_valid(new_reset, now=svc.clock())
    assert svc.recovery.confirm_token_valid(new_confirm, now=svc.clock())


# -- reset ---------------------------------------------------------------------------------------------
def test_a_reset_signs_out_everywhere_clears_failures_confirms_and_voids_other_tokens(svc: Service, db) -> None:
    # GIVEN alice signed in on two browsers, two failed logins on her account, an unconfirmed address,
    # an older reset token still outstanding (say, issued before this feature voided old ones)
    user = svc.register()
    sessions = [svc.sign_in(), svc.sign_in(remember=True)]
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            svc.sign_in(password="wrong", ip="198.51.100.7")
    other = hashlib.sha256(b"an older token").digest()
    db.execute("INSERT INTO public.dashgate_tokens VALUES (%s, 'password_reset', %s, %s, now(), now() + "
               "interval '1 hour', NULL)", (other, user.id, ALICE))
    token = token_of(svc.issue_reset())
    svc.clock.advance(30)

    # WHEN she resets her password
    svc.recovery.reset(token, NEW_PASSWORD, now=svc.clock())

    # THEN every session is gone, the failures are forgotten, the address is confirmed, no reset token
    # is left, the password changed (and when), and a notice is queued
    assert [svc.users.current_user(t, now=svc.clock()) for t in sessions] == [None, None]
    assert live_sessions(db) == 0
    assert hits(db, f"login-email:{ALICE}") == 0
    row = db.execute("SELECT email_confirmed_at, password_changed_at FROM public.users").fetchone()
    assert row == (svc.clock.now, svc.clock.now)
    assert db.execute("SELECT count(*) FROM public.dashgate_tokens WHERE used_at IS NULL").fetchone()[0] == 0
    assert svc.queued()[-1] == MailRequest("password_reset_notice", ALICE, user.id)
    with pytest.raises(InvalidCredentials):
        svc.sign_in()
    assert svc.users.current_user(svc.sign_in(password=NEW_PASSWORD), now=svc.clock()).email_confirmed


def test_a_used_reset_link_changes_nothing_not_even_the_failure_counter(svc: Service, db) -> None:
    # GIVEN a reset link alice used, then two failed logins on her account
    svc.register()
    token = token_of(svc.issue_reset())
    svc.recovery.reset(token, NEW_PASSWORD, now=svc.clock())
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            svc.sign_in(password="wrong", ip="198.51.100.7")

    # WHEN the link reaches the store again (as a parallel use does, past the service's first check):
    # the counter is cleared before the token is tried (the lock order)
    outcome = svc.store.reset_password(token_hash=hash_token(token), password_hash="x", now=svc.clock())

    # THEN nothing was done, and the clearing was rolled back with it: the failures still count
    assert outcome is None and hits(db, f"login-email:{ALICE}") == 2


def test_a_login_checked_against_the_old_password_while_a_reset_commits_gets_no_session(
        make_service, db) -> None:
    # GIVEN an attacker who knows alice's old password, and alice's reset link
    svc = make_service()
    svc.register()
    token = token_of(svc.issue_reset())
    reset_during_the_hash = []

    class ResetWhileHashing(CountingPasswords):
        """argon2 says yes to the old password; before the login records it, alice's reset commits."""

        def verify(self, stored_hash: str | None, password: str) -> bool:
            correct = super().verify(stored_hash, password)
            if not reset_during_the_hash:
                reset_during_the_hash.append(True)
                svc.recovery.reset(token, NEW_PASSWORD, now=svc.clock())
            return correct

    racing = Users(svc.settings, svc.store, svc.tokens, ResetWhileHashing(svc.settings))

    # WHEN the attacker's login (old password, verified before the reset) finishes after it
    with pytest.raises(InvalidCredentials):
        racing.authenticate(SignIn(ALICE, PASSWORD, False), ip=IP, presented_token=None, now=svc.clock())

    # THEN the reset happened, no session exists, and only the new password signs in
    assert reset_during_the_hash and live_sessions(db) == 0
    assert db.execute("SELECT login_count FROM public.users").fetchone()[0] == 0
    assert svc.users.current_user(svc.sign_in(password=NEW_PASSWORD), now=svc.clock()) is not None


def test_a_correct_login_whose_stale_hash_a_parallel_login_re_hashed_still_signs_in(make_service, db) -> None:
    # GIVEN alice's password stored with weaker parameters than the ones now set (due for a re-hash)
    make_service().register()
    svc = make_service(ARGON2_TIME_COST="2")
    rehashed_during_the_hash = []

    class OtherLoginWhileHashing(CountingPasswords):
        """argon2 says yes; before this login records it, a parallel login (a double click) signs in
        and stores the re-hash."""

        def verify(self, stored_hash: str | None, password: str) -> bool:
            correct = super().verify(stored_hash, password)
            if not rehashed_during_the_hash:
                rehashed_during_the_hash.append(True)
                svc.sign_in()
            return correct

    racing = Users(svc.settings, svc.store, svc.tokens, OtherLoginWhileHashing(svc.settings))
    before = db.execute("SELECT password_hash FROM public.users").fetchone()[0]

    # WHEN the first login, verified against the old hash, finishes after the other stored the new one
    signed_in = racing.authenticate(SignIn(ALICE, PASSWORD, False), ip=IP, presented_token=None, now=svc.clock())

    # THEN both signed in (SPEC: parallel correct logins all succeed), and the hash was re-hashed once
    assert rehashed_during_the_hash and svc.users.current_user(signed_in.token, now=svc.clock()) is not None
    assert live_sessions(db) == 2
    after = db.execute("SELECT password_hash, login_count FROM public.users").fetchone()
    assert after[0] != before and after[1] == 2


def test_a_reset_whose_notice_cannot_be_queued_is_still_done(make_service) -> None:
    svc = make_service(queue=BrokenQueue())
    svc.register()
    token = token_of(svc.issue_reset())

    svc.recovery.reset(token, NEW_PASSWORD, now=svc.clock())

    svc.sign_in(password=NEW_PASSWORD)


# -- the mailer's side: who gets what, and how often ---------------------------------------------------
def test_an_unknown_address_gets_nothing_and_nothing_is_written(svc: Service, db) -> None:
    svc.register()

    assert svc.issue_reset("nobody@example.com") is None

    assert db.execute("SELECT count(*) FROM public.dashgate_tokens").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM public.dashgate_throttle WHERE key LIKE 'mail-%'").fetchone()[0] == 0


def test_a_reset_link_goes_to_the_account_whatever_the_letter_case(svc: Service) -> None:
    user = svc.register()

    issued = svc.recovery.issue(MailRequest("password_reset", " Alice@Example.COM "), now=svc.clock())

    assert (issued.user_id, issued.email) == (user.id, ALICE)


def test_confirmations_go_only_to_unconfirmed_users_at_the_address_asked_for(svc: Service, db) -> None:
    user = svc.register()
    assert svc.recovery.issue(MailRequest("email_confirm", "other@example.com", user.id), now=svc.clock()) is None
    assert svc.recovery.issue(MailRequest("email_confirm", ALICE), now=svc.clock()) is None  # no user named
    svc.recovery.confirm(token_of(svc.issue_confirm(user)), now=svc.clock())
    svc.clock.advance(60)

    assert svc.issue_confirm(user) is None  # confirmed already


@pytest.mark.parametrize("kind", ["password_reset", "email_confirm"])
def test_per_address_limits_over_a_simulated_day_and_a_bit(svc: Service, kind: str) -> None:
    # GIVEN someone asking for a reset link (or alice for a new confirmation link) every 30 seconds,
    # for 25 hours
    user = svc.register()
    start, sent = svc.clock.now, []

    # WHEN the mailer handles each request
    while svc.clock.now < start + timedelta(hours=25):
        issued = svc.issue_reset() if kind == "password_reset" else svc.issue_confirm(user)
        if issued is not None:
            sent.append((svc.clock.now - start).total_seconds())
        svc.clock.advance(30)

    # THEN at most one a minute and five in the day's window (counted from the first mail), then again
    assert sent == [0, 60, 120, 180, 240, 86400, 86460, 86520, 86580, 86640]


def test_confirmation_and_reset_limits_are_independent(svc: Service) -> None:
    # GIVEN a registration's confirmation just sent, and five more reset links than allowed
    user = svc.register()
    assert svc.issue_confirm(user) is not None

    # WHEN a reset link is asked for in the same minute: it is sent
    assert svc.issue_reset() is not None
    for _ in range(4):
        svc.clock.advance(60)
        assert svc.issue_reset() is not None
    svc.clock.advance(60)
    assert svc.issue_reset() is None  # the reset's daily five are used

    # THEN a new confirmation still goes
    assert svc.issue_confirm(user) is not None


def test_a_withdrawn_mail_can_be_sent_again_by_the_retry(svc: Service, db) -> None:
    # GIVEN a reset mail issued whose sending failed
    svc.register()
    failed = svc.issue_reset()

    # WHEN the mailer withdraws it, and the queue retries at once
    svc.recovery.withdraw(failed, now=svc.clock())
    retried = svc.issue_reset()

    # THEN the retry is sent (the minute's limit counts one mail), and only its link works
    assert retried is not None
    assert not svc.recovery.reset_token_valid(token_of(failed), now=svc.clock())
    assert svc.recovery.reset_token_valid(token_of(retried), now=svc.clock())
    assert (hits(db, f"mail-reset-minute:{ALICE}"), hits(db, f"mail-reset-day:{ALICE}")) == (1, 1)


def test_notices_carry_no_link_and_go_to_the_user_if_still_there(svc: Service, db) -> None:
    user = svc.register()

    notice = svc.recovery.issue(MailRequest("password_changed_notice", ALICE, user.id), now=svc.clock())
    svc.recovery.withdraw(notice, now=svc.clock())  # nothing to take back
    db.execute("DELETE FROM public.users")

    assert (notice.user_id, notice.email, notice.link, notice.token_hash) == (user.id, ALICE, None, None)
    assert svc.recovery.issue(MailRequest("password_reset_notice", ALICE, user.id), now=svc.clock()) is None


def test_links_need_public_base_url(make_service, db) -> None:
    svc = make_service(PUBLIC_BASE_URL="")
    user = svc.register()

    with pytest.raises(ConfigurationError, match="PUBLIC_BASE_URL"):
        svc.issue_reset()
    assert db.execute("SELECT count(*) FROM public.dashgate_tokens").fetchone()[0] == 0
    assert svc.recovery.issue(MailRequest("password_reset_notice", ALICE, user.id), now=svc.clock()) is not None


# -- forgot: the request path --------------------------------------------------------------------------
def test_forgot_queues_exactly_one_message_per_request_whatever_the_address(svc: Service) -> None:
    # GIVEN an unconfirmed account and a confirmed one
    svc.register()
    confirmed = svc.register("confirmed@example.com", "Con")
    svc.recovery.confirm(token_of(svc.issue_confirm(confirmed)), now=svc.clock())
    addresses = [ALICE, "nobody@example.com", "confirmed@example.com", ALICE]

    # WHEN each address asks for a reset link
    for address in addresses:
        svc.recovery.forgot(address, ip=IP, now=svc.clock())

    # THEN each request put one message on the queue, the same for all (no lookup on the request path)
    assert svc.queued() == [MailRequest("password_reset", a) for a in addresses]


def test_forgot_is_limited_per_network_with_retry_after_over_time(make_service) -> None:
    # GIVEN at most 3 requests per network per 10 minutes
    svc = make_service(FORGOT_MAX_PER_IP="3", FORGOT_WINDOW_SECONDS="600")
    start, accepted = svc.clock.now, []

    # WHEN one network asks every 20 seconds for an hour, for a different address each time,
    # and waits as long as Retry-After says when refused
    n = 0
    while svc.clock.now < start + timedelta(hours=1):
        n += 1
        try:
            svc.recovery.forgot(f"user{n}@example.com", ip="198.51.100.20", now=svc.clock())
            accepted.append((svc.clock.now - start).total_seconds())
            svc.clock.advance(20)
        except Throttled as err:
            assert err.status == 429 and "Too many password reset requests" in err.message
            assert err.retry_after == 600 - (svc.clock.now - start).total_seconds() % 600
            svc.clock.advance(err.retry_after)

    # THEN three a window, each window starting when the last ended, and one message per accepted request
    assert accepted == [w * 600 + s for w in range(6) for s in (0, 20, 40)]
    assert len(svc.queued()) == len(accepted)


def test_forgot_counts_a_whole_ipv6_64_as_one_network(make_service) -> None:
    svc = make_service(FORGOT_MAX_PER_IP="2")
    for host in ("1", "2"):
        svc.recovery.forgot(ALICE, ip=f"2001:db8:1:2::{host}", now=svc.clock())

    with pytest.raises(Throttled):
        svc.recovery.forgot(ALICE, ip="2001:db8:1:2:ffff::3", now=svc.clock())
    svc.recovery.forgot(ALICE, ip="2001:db8:1:3::1", now=svc.clock())  # another network


# -- confirm ---------------------------------------------------------------------------------------------
def test_confirming_marks_the_address_confirmed_once(svc: Service, db) -> None:
    user = svc.register()
    assert user.as_json()["email_confirmed"] is False
    svc.recovery.send_confirmation(user)
    (request,) = svc.queued()
    token = token_of(svc.recovery.issue(request, now=svc.clock()))

    confirmed = svc.recovery.confirm(token, now=svc.clock())

    assert confirmed.id == user.id and confirmed.as_json()["email_confirmed"] is True
    assert db.execute("SELECT email_confirmed_at FROM public.users").fetchone()[0] == svc.clock.now
    assert svc.users.current_user(svc.sign_in(), now=svc.clock()).email_confirmed
    with pytest.raises(InvalidToken, match="This confirmation link is invalid or has expired"):
        svc.recovery.confirm(token, now=svc.clock())
    svc.recovery.send_confirmation(confirmed)
    assert len(svc.queued()) == 1  # a confirmed address is sent no new link


def test_a_token_is_bound_to_the_address_it_was_sent_to(svc: Service, db) -> None:
    # GIVEN links sent to alice's address, then the address changed (by the dashboard's own app)
    user = svc.register()
    confirm_token, reset_token = token_of(svc.issue_confirm(user)), token_of(svc.issue_reset())
    db.execute("UPDATE public.users SET email = 'alice.new@example.com'")

    # THEN neither link works any more
    assert not svc.recovery.confirm_token_valid(confirm_token, now=svc.clock())
    assert not svc.recovery.reset_token_valid(reset_token, now=svc.clock())
    with pytest.raises(InvalidToken):
        svc.recovery.confirm(confirm_token, now=svc.clock())
    with pytest.raises(InvalidToken):
        svc.recovery.reset(reset_token, NEW_PASSWORD, now=svc.clock())
    assert db.execute("SELECT email_confirmed_at FROM public.users").fetchone()[0] is None


def test_a_confirmation_token_expires_after_two_days(svc: Service) -> None:
    user = svc.register()
    token = token_of(svc.issue_confirm(user))

    svc.clock.advance(2 * 86400)

    with pytest.raises(InvalidToken):
        svc.recovery.confirm(token, now=svc.clock())


# -- change password -------------------------------------------------------------------------------------
def test_changing_the_password_replaces_every_session(svc: Service, db) -> None:
    # GIVEN alice signed in here (remembered) and elsewhere, with a reset link outstanding
    user = svc.register()
    here, elsewhere = svc.sign_in(remember=True), svc.sign_in()
    reset_token = token_of(svc.issue_reset())
    svc.clock.advance(10)

    # WHEN she changes her password here
    changed = svc.recovery.change(here, PASSWORD, NEW_PASSWORD, ip=IP, now=svc.clock())

    # THEN both old sessions are revoked, a new remembered one replaces this one, the reset link is
    # void, the new password works, and a notice is queued
    assert changed.user.id == user.id and changed.cookie_max_age == svc.settings.remember_me_seconds
    assert svc.users.current_user(here, now=svc.clock()) is None
    assert svc.users.current_user(elsewhere, now=svc.clock()) is None
    assert svc.users.current_user(changed.token, now=svc.clock()).id == user.id
    assert db.execute("SELECT remember, expires_at FROM public.dashgate_sessions WHERE revoked_at IS NULL "
                      "").fetchall() == [(True, svc.clock.now + timedelta(seconds=svc.settings.remember_me_seconds))]
    assert not svc.recovery.reset_token_valid(reset_token, now=svc.clock())
    assert db.execute("SELECT password_changed_at, email_confirmed_at FROM public.users").fetchone() == (
        svc.clock.now, None)
    assert svc.queued()[-1] == MailRequest("password_changed_notice", ALICE, user.id)
    svc.sign_in(password=NEW_PASSWORD)


def test_a_browser_session_stays_a_browser_session_after_a_change(svc: Service) -> None:
    svc.register()

    changed = svc.recovery.change(svc.sign_in(), PASSWORD, NEW_PASSWORD, ip=IP, now=svc.clock())

    assert changed.cookie_max_age is None


@pytest.mark.parametrize("token", [None, "", "forged.token"])
def test_changing_the_password_needs_a_live_session(svc: Service, token) -> None:
    svc.register()

    with pytest.raises(NotSignedIn):
        svc.recovery.change(token, PASSWORD, NEW_PASSWORD, ip=IP, now=svc.clock())


def test_a_revoked_session_cannot_change_the_password(svc: Service) -> None:
    svc.register()
    token = svc.sign_in()
    svc.users.sign_out(token, now=svc.clock())

    with pytest.raises(NotSignedIn):
        svc.recovery.change(token, PASSWORD, NEW_PASSWORD, ip=IP, now=svc.clock())


def test_a_wrong_current_password_is_throttled_like_a_login(svc: Service, db) -> None:
    # GIVEN a signed-in session in someone else's hands, guessing the current password
    svc.register()
    token = svc.sign_in()
    for _ in range(svc.settings.login_max_failures_per_email):
        with pytest.raises(ValidationFailed) as wrong:
            svc.recovery.change(token, "a guess", NEW_PASSWORD, ip=IP, now=svc.clock())
        assert wrong.value.fields == {"current_password": "Your current password is incorrect"}
    assert hits(db, f"login-email:{ALICE}") == 5

    # WHEN they guess again: refused without verifying, and the account's login is in the same backoff
    verified = svc.passwords.verifies
    with pytest.raises(Throttled) as refused:
        svc.recovery.change(token, PASSWORD, NEW_PASSWORD, ip=IP, now=svc.clock())
    assert svc.passwords.verifies == verified
    assert refused.value.retry_after == svc.settings.login_backoff_base_seconds
    with pytest.raises(Throttled):
        svc.sign_in()

    # THEN once the backoff has passed, the right password changes it and settles the counter
    svc.clock.advance(refused.value.retry_after)
    svc.recovery.change(token, PASSWORD, NEW_PASSWORD, ip=IP, now=svc.clock())
    assert hits(db, f"login-email:{ALICE}") == 0


# -- REQUIRE_CONFIRMED_EMAIL ---------------------------------------------------------------------------
def test_an_unconfirmed_account_cannot_sign_in_when_confirmation_is_required(make_service, db) -> None:
    svc = make_service(REQUIRE_CONFIRMED_EMAIL="true")
    user = svc.register()

    with pytest.raises(EmailNotConfirmed) as refused:
        svc.sign_in()

    assert refused.value.status == 403 and refused.value.user.id == user.id
    assert db.execute("SELECT count(*) FROM public.dashgate_sessions").fetchone()[0] == 0
    assert hits(db, f"login-email:{ALICE}") == 0  # a correct password never counts as a failure
    with pytest.raises(InvalidCredentials):
        svc.sign_in(password="wrong")
    svc.recovery.confirm(token_of(svc.issue_confirm(user)), now=svc.clock())
    assert svc.users.current_user(svc.sign_in(), now=svc.clock()).email_confirmed


# -- logs ------------------------------------------------------------------------------------------------
def test_no_token_reaches_a_log_line(make_service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    svc = make_service(queue=BrokenQueue())
    user = svc.register()
    tokens = [token_of(svc.issue_reset()), token_of(svc.issue_confirm(user))]

    svc.recovery.reset_token_valid(tokens[0], now=svc.clock())
    svc.recovery.reset(tokens[0], NEW_PASSWORD, now=svc.clock())  # its notice fails: logged
    svc.recovery.confirm(tokens[1], now=svc.clock())

    assert "Could not enqueue a mail" in caplog.text
    logged = caplog.text + json.dumps([r.__dict__ for r in caplog.records], default=str)
    assert not [t for t in tokens if t in logged]
    assert NEW_PASSWORD not in logged
