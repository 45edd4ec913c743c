"""Users: the service layer — validate, register, authenticate, sign out, and find the signed-in user."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dashgate.errors import EmailNotConfirmed, EmailTaken, InvalidCredentials, Throttled
from dashgate.sessions import Tokens, hash_session_id
from dashgate.settings import Settings
from dashgate.store import Backoff, LoginAttempt, NewSession, Store, User

if TYPE_CHECKING:  # logout signs out without ever hashing: it need not import argon2
    from dashgate.passwords import Passwords

@dataclass(frozen=True)
class SignUp:
    """A registration, already validated and normalised (`models.register.RegisterRequest`)."""

    email: str
    password: str
    first_name: str
    last_name: str


@dataclass(frozen=True)
class SignIn:
    """A login, already validated and normalised (`models.LoginRequest`)."""

    email: str
    password: str
    remember_me: bool


@dataclass(frozen=True)
class SignedIn:
    """A successful login: the user, the cookie token and its lifetime (None: browser session), and
    a fresh device token for this browser."""

    user: User
    token: str
    cookie_max_age: int | None
    device_token: str


class Users:
    """The rules of sign-up, sign-in and sign-out over one store."""

    def __init__(self, settings: Settings, store: Store, tokens: Tokens, passwords: Passwords | None = None) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.passwords = passwords

    def register(self, form: SignUp, *, ip: str, now: datetime) -> User:
        """Create a user; raises EmailTaken or Throttled."""
        s = self.settings
        outcome = self.store.register(
            email=form.email, password_hash=self.passwords.hash(form.password), first_name=form.first_name,
            last_name=form.last_name, ip_key=f"register-ip:{network_of(ip)}", limit=s.register_max_per_ip,
            window=timedelta(seconds=s.register_window_seconds), now=now,
        )
        if outcome.hits.hits > s.register_max_per_ip:
            reset_at = outcome.hits.window_started_at + timedelta(seconds=s.register_window_seconds)
            wait = seconds_until(reset_at, now)
            raise Throttled(wait, f"Too many registrations from your network. Try again in {wait} seconds.")
        if outcome.user is None:
            raise EmailTaken()
        return outcome.user

    def authenticate(self, form: SignIn, *, ip: str, presented_token: str | None, now: datetime,
                     device_token: str | None = None) -> SignedIn:
        """Sign in; raises Throttled or InvalidCredentials (the same for unknown email), or, under
        REQUIRE_CONFIRMED_EMAIL, EmailNotConfirmed (its `user` set) for a correct password on an
        unconfirmed account: no session then, and the attempt counts as a success, never a failure."""
        found, counted = self.claim_password_check(form.email, ip=ip, device_token=device_token, now=now)
        # Everything a success needs is prepared before the hash, whatever its outcome: after argon2 has
        # swept the CPU caches, the same work costs several times more (reading the OS's randomness
        # about 50 us instead of 1). The new session, the device token, the presented session to revoke,
        # and whether the stored hash is due for new parameters.
        session_id, token = self.tokens.new_session()
        device_token = self.tokens.device_token(form.email, now)
        lifetime = self.settings.remember_me_seconds if form.remember_me else self.settings.session_ttl_seconds
        session = NewSession(hash_session_id(session_id), form.remember_me, now + timedelta(seconds=lifetime))
        presented_id = self.tokens.session_id(presented_token)
        presented_hash = hash_session_id(presented_id) if presented_id else None
        stale = self.passwords.needs_rehash(found.password_hash or "")
        # Verify first, always: an unknown email costs the same one verification (against a dummy).
        # A failure was counted already, when the attempt was claimed.
        if not self.passwords.verify(found.password_hash, form.password) or found.user is None:
            raise InvalidCredentials()
        if self.settings.require_confirmed_email and not found.user.email_confirmed:
            self.store.settle_counters(counted=counted, reset=counted[:1], now=now)
            err = EmailNotConfirmed()
            err.user = found.user  # the login route asks for a new link for it
            raise err
        new_hash = self.passwords.hash(form.password) if stale else None
        if not self.store.record_login_success(user_id=found.user.id, ip=ip, now=now, new_hash=new_hash,
                                               checked_hash=found.password_hash, counted=counted, reset=counted[:1],
                                               session=session, presented_hash=presented_hash):
            # The stored hash changed while argon2 ran: a parallel login stored a re-hash of the same
            # password, or a reset or change replaced it. The session is created only if the password is
            # also the one stored now (counters settled and the presented session revoked already).
            current = self.store.password_hash(user_id=found.user.id)
            if current is None or not self.passwords.verify(current, form.password) or \
                    not self.store.record_login_success(user_id=found.user.id, ip=ip, now=now, new_hash=None,
                                                        checked_hash=current, counted=[], reset=[],
                                                        session=session, presented_hash=None):
                raise InvalidCredentials()
        return SignedIn(found.user, token, self.settings.remember_me_seconds if form.remember_me else None,
                        device_token)

    def claim_password_check(self, email: str, *, ip: str, device_token: str | None, now: datetime,
                             user_id: int | None = None,
                             what: str = "login attempts") -> tuple[LoginAttempt, list[str]]:
        """Count one password check on the login counters (a login, or, with `user_id`, a signed-in user's
        current password) before the password is verified: the user and stored hash found, and the
        counters counted on (the one a success starts again first); Throttled while any is in backoff."""
        backoff = login_backoff(self.settings, email, ip, self.tokens.device_id(device_token, email, now))
        found = self.store.claim_login_attempt(email=email, backoff=backoff, now=now, user_id=user_id)
        if found.refused_until is not None:
            wait = max(1, seconds_until(found.refused_until, now))
            raise Throttled(wait, f"Too many failed {what}. Try again in {wait} seconds.")
        return found, list(backoff.limits)

    def current_user(self, token: str | None, *, now: datetime) -> User | None:
        """The user a session cookie names, or None (bad signature, unknown, revoked, expired, idle)."""
        session_id = self.tokens.session_id(token)
        if session_id is None:
            return None
        return self.store.find_session_user(
            id_hash=hash_session_id(session_id), now=now,
            idle=timedelta(seconds=self.settings.session_idle_seconds),
            touch_every=timedelta(seconds=self.settings.session_touch_seconds),
        )

    def sign_out(self, token: str | None, *, now: datetime, everywhere: bool = False) -> bool:
        """Revoke the session a cookie names (or, `everywhere`, all of its user's); True when any was live."""
        session_id = self.tokens.session_id(token)
        if session_id is None:
            return False
        if everywhere:
            return self.store.revoke_all_sessions(id_hash=hash_session_id(session_id), now=now) > 0
        return self.store.revoke_session(id_hash=hash_session_id(session_id), now=now)

def login_backoff(settings: Settings, email: str, ip: str, device: str | None) -> Backoff:
    """The counters a password check is judged on (a login, or a signed-in user's current password),
    the one a success starts again first: a known device's own counter (OWASP device cookies: an
    attacker elsewhere cannot lock its owner out), else the account's and the network's."""
    s = settings
    if device is not None:
        limits = {f"login-device:{device}": s.login_max_failures_per_email}
    else:
        limits = {f"login-email:{email}": s.login_max_failures_per_email,
                  f"login-ip:{network_of(ip)}": s.login_max_failures_per_ip}
    return Backoff(limits, s.login_backoff_base_seconds, s.login_backoff_max_seconds,
                   timedelta(seconds=s.login_failure_window_seconds))


def prune(settings: Settings, store: Store, *, now: datetime, seconds: float) -> tuple[int, int, int]:
    """Housekeeping for about `seconds`: delete dead sessions, counters quiet for longer than any
    throttle remembers (so pruning never restarts a backoff), and spent or expired one-time tokens;
    the numbers of each deleted."""
    return store.prune(now=now, idle=timedelta(seconds=settings.session_idle_seconds),
                       counters_quiet_for=timedelta(seconds=settings.counter_memory_seconds), seconds=seconds)


def network_of(ip: str) -> str:
    """The throttling key of a source address: the address, or its /64 for IPv6 (one subscriber
    usually holds a whole /64, so counting single IPv6 addresses would count nothing)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if address.version == 6 else ip


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from `now` to `moment`, rounded up (a Retry-After), never negative."""
    return max(0, math.ceil((moment - now).total_seconds()))
