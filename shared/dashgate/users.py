"""Users: the service layer — validate, register, authenticate, sign out, and find the signed-in user."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dashgate.errors import EmailTaken, InvalidCredentials, Throttled, ValidationFailed
from dashgate.sessions import Tokens, hash_session_id
from dashgate.settings import Settings
from dashgate.store import Hits, LoginAttempt, NewSession, Store, User

if TYPE_CHECKING:  # logout signs out without ever hashing: it need not import argon2
    from dashgate.passwords import Passwords

#: A pragmatic address check (WHATWG's "valid e-mail address" for <input type=email>), not RFC 5322.
EMAIL_RE = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
)
EMAIL_MAX = 254  # RFC 5321 path limit
PASSWORD_MIN, PASSWORD_MAX = 8, 256
NAME_MAX = 100


@dataclass(frozen=True)
class SignUp:
    """A registration form, already normalised."""

    email: str
    password: str
    password_confirm: str | None
    first_name: str
    last_name: str


@dataclass(frozen=True)
class SignIn:
    """A login form, already normalised."""

    email: str
    password: str
    remember_me: bool


@dataclass(frozen=True)
class SignedIn:
    """A successful login: the user, the cookie token and its lifetime (None: browser session)."""

    user: User
    token: str
    cookie_max_age: int | None


def normalise_email(value: str) -> str:
    """Trim and lower-case, before anything else (SPEC: POST /register/)."""
    return value.strip().lower()


def validate_sign_up(form: SignUp, *, confirm_required: bool) -> None:
    """Raise ValidationFailed naming each bad field."""
    fields: dict[str, str] = {}
    if len(form.email) > EMAIL_MAX:
        fields["email"] = f"Email must be at most {EMAIL_MAX} characters."
    elif not EMAIL_RE.fullmatch(form.email):
        fields["email"] = "Enter a valid email address."
    if not PASSWORD_MIN <= len(form.password) <= PASSWORD_MAX:
        fields["password"] = f"Password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long."
    if (confirm_required or form.password_confirm is not None) and form.password_confirm != form.password:
        fields["password_confirm"] = "Passwords must match."
    for name, label in (("first_name", "First name"), ("last_name", "Last name")):
        value = getattr(form, name)
        if not value:
            fields[name] = f"{label} is required."
        elif len(value) > NAME_MAX:
            fields[name] = f"{label} must be at most {NAME_MAX} characters."
        elif not value.isprintable():
            fields[name] = f"{label} must not contain control characters."
    if fields:
        raise ValidationFailed(fields)


def validate_sign_in(form: SignIn) -> None:
    """Raise ValidationFailed for a missing or impossible email or password (before any hashing)."""
    fields: dict[str, str] = {}
    if not form.email:
        fields["email"] = "Email is required."
    elif len(form.email) > EMAIL_MAX or not form.email.isprintable():
        fields["email"] = "Enter a valid email address."
    if not form.password:
        fields["password"] = "Password is required."
    elif len(form.password) > PASSWORD_MAX:
        fields["password"] = f"Password must be at most {PASSWORD_MAX} characters."
    if fields:
        raise ValidationFailed(fields)


class Users:
    """The rules of sign-up, sign-in and sign-out over one store."""

    def __init__(self, settings: Settings, store: Store, tokens: Tokens, passwords: Passwords | None = None) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.passwords = passwords

    def register(self, form: SignUp, *, ip: str, now: datetime, confirm_required: bool) -> User:
        """Create a user; raises ValidationFailed, EmailTaken or Throttled."""
        validate_sign_up(form, confirm_required=confirm_required)
        s = self.settings
        outcome = self.store.register(
            email=form.email, password_hash=self.passwords.hash(form.password), first_name=form.first_name,
            last_name=form.last_name, ip_key=f"register-ip:{network_of(ip)}", limit=s.register_max_per_ip,
            window=timedelta(seconds=s.register_window_seconds), now=now,
        )
        if outcome.hits.hits > s.register_max_per_ip:
            reset_at = outcome.hits.window_started_at + timedelta(seconds=s.register_window_seconds)
            wait = _seconds_until(reset_at, now)
            raise Throttled(wait, f"Too many registrations from your network. Try again in {wait} seconds.")
        if outcome.user is None:
            raise EmailTaken()
        return outcome.user

    def authenticate(self, form: SignIn, *, ip: str, presented_token: str | None, now: datetime) -> SignedIn:
        """Sign in; raises ValidationFailed, Throttled or InvalidCredentials (the same for unknown email)."""
        validate_sign_in(form)
        s = self.settings
        email_key, ip_key = f"login-email:{form.email}", f"login-ip:{network_of(ip)}"
        found = self.store.claim_login_attempt(
            email=form.email, email_key=email_key, ip_key=ip_key,
            limits=(s.login_max_failures_per_email, s.login_max_failures_per_ip),
            backoff=(s.login_backoff_base_seconds, s.login_backoff_max_seconds),
            quiet=timedelta(seconds=s.login_failure_window_seconds), now=now,
        )
        if found.refused:
            self._refuse(found, email_key, now)
        # Verify first, always: an unknown email costs the same one verification (against a dummy).
        # A failure was counted already, when the attempt was claimed.
        if not self.passwords.verify(found.password_hash, form.password) or found.user is None:
            raise InvalidCredentials()
        new_hash = self.passwords.hash(form.password) if self.passwords.needs_rehash(found.password_hash) else None
        session_id, token = self.tokens.new_session()
        lifetime = self.settings.remember_me_seconds if form.remember_me else self.settings.session_ttl_seconds
        presented_id = self.tokens.session_id(presented_token)
        self.store.record_login_success(
            user_id=found.user.id, ip=ip, now=now, new_hash=new_hash, email_key=email_key, ip_key=ip_key,
            session=NewSession(hash_session_id(session_id), form.remember_me, now + timedelta(seconds=lifetime)),
            presented_hash=hash_session_id(presented_id) if presented_id else None,
        )
        return SignedIn(found.user, token, self.settings.remember_me_seconds if form.remember_me else None)

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

    def _refuse(self, found: LoginAttempt, email_key: str, now: datetime) -> None:
        """429 with the wait of the key (or keys) that refused the attempt."""
        s = self.settings
        waits = [1]  # at least a second, even if the counter moved on meanwhile
        if email_key in found.refused:
            waits.append(self._backoff_wait(found.email_hits, s.login_max_failures_per_email, now))
        if found.refused - {email_key}:
            waits.append(self._backoff_wait(found.ip_hits, s.login_max_failures_per_ip, now))
        wait = max(waits)
        raise Throttled(wait, f"Too many failed login attempts. Try again in {wait} seconds.")

    def _backoff_wait(self, hits: Hits | None, limit: int, now: datetime) -> int:
        """Seconds still to wait: base * 2^(failures beyond the limit), capped; 0 when free to try."""
        s = self.settings
        quiet_since = now - timedelta(seconds=s.login_failure_window_seconds)
        if hits is None or hits.hits < limit or hits.last_hit_at <= quiet_since:
            return 0
        delay = min(s.login_backoff_base_seconds * 2 ** min(hits.hits - limit, 30), s.login_backoff_max_seconds)
        return _seconds_until(hits.last_hit_at + timedelta(seconds=delay), now)


def network_of(ip: str) -> str:
    """The throttling key of a source address: the address, or its /64 for IPv6 (one subscriber
    usually holds a whole /64, so counting single IPv6 addresses would count nothing)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if address.version == 6 else ip


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(0, math.ceil((moment - now).total_seconds()))
