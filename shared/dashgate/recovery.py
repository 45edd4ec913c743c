"""Recovery: the service layer of account recovery and email — forgot, reset, change, confirm (the request
path), and the one-time tokens the mailer issues (SPEC: "Account recovery and email").

The request path never looks an address up and never makes a token: it puts exactly one MailRequest
on the mail queue. The mailer calls `issue()`, which applies the per-address limits, makes the token
(only its SHA-256 is stored) and returns what to send, or None when there is nothing to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dashgate.mail import MailRequest
from dashgate.settings import Settings
from dashgate.store import Store, User

if TYPE_CHECKING:
    from dashgate.mailqueue import MailQueue
    from dashgate.passwords import Passwords
    from dashgate.sessions import Tokens


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
                 queue: MailQueue | None) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.passwords = passwords
        self.queue = queue

    # -- request path -------------------------------------------------------------------------------
    def forgot(self, email: str, *, ip: str, now: datetime) -> None:
        """Ask for a reset link for `email`: one message on the queue whatever the address; raises
        Throttled (per network, FORGOT_MAX_PER_IP per FORGOT_WINDOW_SECONDS) or ServiceUnavailable."""
        raise NotImplementedError

    def reset_token_valid(self, token: str | None, *, now: datetime) -> bool:
        """True when `token` is an outstanding reset token (read only: the GET page)."""
        raise NotImplementedError

    def reset(self, token: str | None, password: str, *, now: datetime) -> None:
        """Set a new password with a reset token; raises InvalidToken. Uses the token up, revokes every
        session of the user, and enqueues a notice (a failure to enqueue the notice is swallowed and
        logged: the reset itself is done and must not read as failed)."""
        raise NotImplementedError

    def change(self, session_token: str | None, current_password: str, new_password: str, *, ip: str,
               now: datetime, device_token: str | None = None) -> PasswordChanged:
        """Change the signed-in user's password; raises NotSignedIn, Throttled, or ValidationFailed
        ({"current_password": ...}). Every session of the user is revoked and the current one replaced."""
        raise NotImplementedError

    def confirm_token_valid(self, token: str | None, *, now: datetime) -> bool:
        """True when `token` is an outstanding confirmation token for the user's current address."""
        raise NotImplementedError

    def confirm(self, token: str | None, *, now: datetime) -> User:
        """Confirm the address a token was sent to; raises InvalidToken."""
        raise NotImplementedError

    def send_confirmation(self, user: User, *, now: datetime) -> None:
        """Enqueue a confirmation link for an unconfirmed user (the mailer applies the limits)."""
        raise NotImplementedError

    # -- mailer side ----------------------------------------------------------------------------------
    def issue(self, request: MailRequest, *, now: datetime) -> Issued | None:
        """What to send for one queued request, or None when there is nothing to send (unknown address,
        a per-address limit reached, already confirmed, address changed, user gone). A token mail
        creates its token here and voids the user's older ones; ConfigurationError without PUBLIC_BASE_URL."""
        raise NotImplementedError

    def withdraw(self, issued: Issued, *, now: datetime) -> None:
        """Take back an issued mail whose sending failed: void its token and give the per-address
        limits their count back, so the queue's retry can send it."""
        raise NotImplementedError
