"""Recovery: the service layer of account recovery and email — forgot, reset, change, confirm (the request
path), and the one-time tokens the mailer issues (SPEC: "Account recovery and email").

The request path never looks an address up and never makes a token: it puts exactly one MailRequest
on the mail queue. The mailer calls `issue()`, which applies the per-address limits, makes the token
(only its SHA-256 is stored) and returns what to send, or None when there is nothing to send.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dashgate.errors import (
    ConfigurationError,
    InvalidToken,
    NotSignedIn,
    ServiceUnavailable,
    Throttled,
    ValidationFailed,
)
from dashgate.mail import MailRequest
from dashgate.sessions import hash_session_id
from dashgate.settings import DAY_SECONDS, TOKEN_MAX, Settings
from dashgate.store import Quota, Store, User
from dashgate.users import Users, network_of, seconds_until

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

    from dashgate.mailqueue import MailQueue
    from dashgate.passwords import Passwords
    from dashgate.sessions import Tokens

logger = logging.getLogger(__name__)

#: Bytes of randomness in a reset or confirmation token: 256 bits from the OS's CSPRNG (SPEC: at
#: least 128), sent only in the mail; the database keeps its SHA-256.
TOKEN_BYTES = 32
#: Per-address mail limits (SPEC: at most one a minute and five a day), counted per kind of mail so a
#: registration's confirmation never delays a reset mail.
MAIL_PER_MINUTE = 1
MAIL_PER_DAY = 5
#: What each token mail is for, its counters' prefix and its link's path.
PURPOSES = {"password_reset": ("mail-reset", "/password/reset/"), "email_confirm": ("mail-confirm", "/email/confirm/")}
#: The notices a password reset or change sends (no secret in them).
NOTICES = ("password_reset_notice", "password_changed_notice")


def hash_token(token: str | None) -> bytes | None:
    """The stored SHA-256 of a link's token, or None for anything that cannot be one of ours."""
    if not token or len(token) > TOKEN_MAX or not token.isascii():
        return None
    return hashlib.sha256(token.encode()).digest()


def mail_quotas(kind: str, email: str) -> list[Quota]:
    """The per-address limits a token mail of `kind` to `email` counts on."""
    prefix = PURPOSES[kind][0]
    return [Quota(f"{prefix}-minute:{email}", MAIL_PER_MINUTE, timedelta(minutes=1)),
            Quota(f"{prefix}-day:{email}", MAIL_PER_DAY, timedelta(seconds=DAY_SECONDS))]


@dataclass(frozen=True)
class Issued:
    """What the mailer sends: the request, its recipient and, for a token mail, the link."""

    request: MailRequest
    user_id: int
    email: str
    first_name: str | None
    #: PUBLIC_BASE_URL + "/password/reset/?token=…" or "/email/confirm/?token=…"; None for a notice.
    link: str | None
    expires_at: datetime | None
    #: The stored SHA-256 of the link's token (for `withdraw`); None for a notice.
    token_hash: bytes | None


@dataclass(frozen=True)
class PasswordChanged:
    """A changed password: the user, the new session's cookie token and its lifetime (as a login's)."""

    user: User
    token: str
    cookie_max_age: int | None


class Recovery:
    """The rules of account recovery over one store, the session tokens, the hasher and the mail queue.
    Each part may be None where a function does not need it (the mailer hashes nothing)."""

    def __init__(self, settings: Settings, store: Store, tokens: Tokens | None, passwords: Passwords | None,
                 queue: MailQueue | None, *, log: Logger | logging.Logger = logger) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.passwords = passwords
        self.queue = queue
        #: The function's logger (JSON, with the request's correlation id), where a function built this.
        self.log = log

    # -- request path -------------------------------------------------------------------------------
    def forgot(self, email: str, *, ip: str, now: datetime) -> None:
        """Ask for a reset link for `email`: one message on the queue whatever the address (no lookup
        here: known and unknown addresses cost the same); raises Throttled (per network,
        FORGOT_MAX_PER_IP per FORGOT_WINDOW_SECONDS) or ServiceUnavailable."""
        window = timedelta(seconds=self.settings.forgot_window_seconds)
        hits = self.store.count_hit(key=f"forgot-ip:{network_of(ip)}", window=window, now=now)
        if hits.hits > self.settings.forgot_max_per_ip:
            wait = max(1, seconds_until(hits.window_started_at + window, now))
            raise Throttled(wait, f"Too many password reset requests from your network. Try again in {wait} seconds.")
        self.queue.send(MailRequest("password_reset", email))

    def reset_token_valid(self, token: str | None, *, now: datetime) -> bool:
        """True when `token` is an outstanding reset token (read only: the GET page)."""
        return self._token_valid(token, "password_reset", now)

    def reset(self, token: str | None, password: str, *, now: datetime) -> None:
        """Set a new password with a reset token; raises InvalidToken. Uses the token up, voids the user's
        other reset tokens, revokes every session of the user, clears the account's login failures,
        confirms the address, then enqueues a notice. A notice that cannot be enqueued is logged and
        swallowed: the reset is done, and answering an error would send the user to try a used token."""
        token_hash = hash_token(token)
        # Checked before hashing: a bad token costs no argon2 run (the atomic use below decides).
        if token_hash is None or not self.store.token_valid(token_hash=token_hash, purpose="password_reset", now=now):
            raise InvalidToken()
        user = self.store.reset_password(token_hash=token_hash, password_hash=self.passwords.hash(password), now=now)
        if user is None:  # used by a parallel request meanwhile
            raise InvalidToken()
        self._send_after_commit(MailRequest("password_reset_notice", user.email, user.id))

    def change(self, session_token: str | None, current_password: str, new_password: str, *, ip: str,
               now: datetime, device_token: str | None = None) -> PasswordChanged:
        """Change the signed-in user's password; raises NotSignedIn, Throttled, or ValidationFailed
        ({"current_password": ...}). The current password is checked like a login (same counters and
        backoff); on success every session of the user is revoked, the current one replaced by a new
        one (its `remember` kept), the reset tokens voided, and a notice enqueued (as in `reset`)."""
        users = Users(self.settings, self.store, self.tokens)
        user = users.current_user(session_token, now=now)
        if user is None:
            raise NotSignedIn()
        found, counted = users.claim_password_check(user.email.lower(), ip=ip, device_token=device_token, now=now,
                                                    user_id=user.id, what="attempts")
        # A wrong password was counted already, when the attempt was claimed.
        if found.user is None or not self.passwords.verify(found.password_hash, current_password):
            raise ValidationFailed({"current_password": "Your current password is incorrect"})
        s = self.settings
        current_id = self.tokens.session_id(session_token)
        new_id, token = self.tokens.new_session()
        remember = self.store.change_password(
            user_id=user.id, password_hash=self.passwords.hash(new_password), current_hash=hash_session_id(current_id),
            new_hash=hash_session_id(new_id), expires_at=now + timedelta(seconds=s.session_ttl_seconds),
            remember_expires_at=now + timedelta(seconds=s.remember_me_seconds),
            counted=counted, reset=counted[:1], now=now)
        self._send_after_commit(MailRequest("password_changed_notice", user.email, user.id))
        return PasswordChanged(user, token, s.remember_me_seconds if remember else None)

    def confirm_token_valid(self, token: str | None, *, now: datetime) -> bool:
        """True when `token` is an outstanding confirmation token for the user's current address."""
        return self._token_valid(token, "email_confirm", now)

    def confirm(self, token: str | None, *, now: datetime) -> User:
        """Confirm the address a token was sent to (still the user's); the user, or InvalidToken."""
        token_hash = hash_token(token)
        user = self.store.confirm_email(token_hash=token_hash, now=now) if token_hash else None
        if user is None:
            raise InvalidToken(InvalidToken.CONFIRMATION)
        return user

    def send_confirmation(self, user: User, *, best_effort: bool = False) -> None:
        """Enqueue a confirmation link for `user` unless the address is confirmed already (the mailer
        applies the per-address limits, in `issue`). `best_effort`: the link comes with something else
        (a registration, a refused login) whose answer stands; a queue that cannot be reached is logged."""
        if user.email_confirmed:
            return
        request = MailRequest("email_confirm", user.email, user.id)
        if best_effort:
            self._send_after_commit(request)
        else:
            self.queue.send(request)

    # -- mailer side ----------------------------------------------------------------------------------
    def issue(self, request: MailRequest, *, now: datetime) -> Issued | None:
        """What to send for one queued request, or None when there is nothing to send (unknown address,
        a per-address limit reached, already confirmed, address changed, user gone). A token mail
        creates its token here and voids the user's older ones; ConfigurationError without PUBLIC_BASE_URL."""
        if request.kind in NOTICES:
            user = self.store.find_user(user_id=request.user_id) if request.user_id is not None else None
            return Issued(request, user.id, user.email, user.first_name, None, None, None) if user else None
        if not self.settings.public_base_url:
            raise ConfigurationError("Set PUBLIC_BASE_URL: links in mail are built from it alone")
        email = request.email.strip().lower()
        if request.kind == "email_confirm" and request.user_id is None:
            return None  # a confirmation is always asked for a known user
        token = secrets.token_urlsafe(TOKEN_BYTES)
        token_hash = hash_token(token)
        ttl = self.settings.password_reset_ttl_seconds if request.kind == "password_reset" \
            else self.settings.email_confirm_ttl_seconds
        expires_at = now + timedelta(seconds=ttl)
        user = self.store.issue_token(purpose=request.kind, email=email, user_id=request.user_id,
                                      token_hash=token_hash, expires_at=expires_at,
                                      quotas=mail_quotas(request.kind, email), now=now)
        if user is None:
            return None
        link = f"{self.settings.public_base_url}{PURPOSES[request.kind][1]}?token={token}"
        return Issued(request, user.id, user.email, user.first_name, link, expires_at, token_hash)

    def withdraw(self, issued: Issued, *, now: datetime) -> None:
        """Take back an issued mail whose sending failed: void its token and give the per-address
        limits their count back, so the queue's retry can send it. Nothing to do for a notice."""
        if issued.token_hash is None:
            return
        quotas = mail_quotas(issued.request.kind, issued.request.email.strip().lower())
        self.store.withdraw_token(token_hash=issued.token_hash, keys=[q.key for q in quotas], now=now)

    # -- helpers --------------------------------------------------------------------------------------
    def _token_valid(self, token: str | None, purpose: str, now: datetime) -> bool:
        token_hash = hash_token(token)
        return token_hash is not None and self.store.token_valid(token_hash=token_hash, purpose=purpose, now=now)

    def _send_after_commit(self, request: MailRequest) -> None:
        """Enqueue a mail after the change it goes with is committed; a failure is logged, not raised."""
        try:
            self.queue.send(request)
        except ServiceUnavailable as exc:
            self.log.warning("Could not enqueue a mail", extra={"kind": request.kind, "user_id": request.user_id,
                                                                "cause": type(exc.__cause__).__name__})
