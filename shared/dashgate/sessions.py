"""Sessions: signing keys, signed tokens (session, CSRF, flash) and the cookies that carry them."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from itsdangerous import BadData, Signer, TimestampSigner, URLSafeTimedSerializer

from dashgate.errors import ConfigurationError, ServiceUnavailable
from dashgate.settings import Settings, fetch_secret_string, parse_secret_keys

T = TypeVar("T")

#: Bytes of randomness in a session id: 256 bits, above OWASP's 64-bit entropy floor and the
#: SPEC's 128 bits.
SESSION_ID_BYTES = 32


def load_signing_keys(settings: Settings) -> tuple[str, ...]:
    """Signing keys, current first: from Secrets Manager when SESSION_SECRET_ARN is set, else SESSION_SECRETS."""
    keys = load_keys(settings.session_secret_arn, settings.session_secrets, "SESSION_SECRET_ARN")
    if not keys:
        raise ConfigurationError(
            "Set SESSION_SECRET_ARN (in AWS) or SESSION_SECRETS (comma-separated keys, current first)")
    return keys


def load_keys(arn: str | None, listed: tuple[str, ...], source: str) -> tuple[str, ...]:
    """A key list, current first: the secret `arn` names when set, else the ones `listed` in the environment."""
    return parse_secret_keys(fetch_secret_string(arn), source) if arn else listed


class KeyRing(Generic[T]):
    """What is built from a list of secret keys (a token signer, a verifier), read again at most every
    SIGNING_KEYS_TTL_SECONDS, so a rotation reaches warm environments and running hosts without a restart."""

    #: After a failed read, keep the keys we have and try again this much later (not on every request).
    RETRY_AFTER_FAILURE_SECONDS = 30

    def __init__(self, read: Callable[[], tuple[str, ...]], build: Callable[[tuple[str, ...]], T], *, ttl: int,
                 clock: Callable[[], float] = time.monotonic,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self._read, self._build, self._ttl = read, build, ttl
        #: Monotonic seconds; tests replace it to step past the TTL without sleeping.
        self.clock = clock
        self._on_error = on_error
        self._keys: tuple[str, ...] | None = None
        self._built: T | None = None
        self._read_again_at = 0.0

    @classmethod
    def for_sessions(cls, settings: Settings, **kwargs: Any) -> KeyRing[Tokens]:
        """The session signing keys, as Tokens."""
        return cls(lambda: load_signing_keys(settings), lambda keys: Tokens(settings, keys),
                   ttl=settings.signing_keys_ttl_seconds, **kwargs)

    @property
    def current(self) -> T:
        """What the current keys build; raises ServiceUnavailable only when no key was ever read."""
        if self._built is None or self.clock() >= self._read_again_at:
            self._refresh()
        if self._built is None:
            raise ServiceUnavailable()
        return self._built

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys in use, current first."""
        _ = self.current
        return self._keys or ()

    def forget(self) -> None:
        """Read the keys again at next use (after a SnapStart restore: the snapshot may be weeks old)."""
        self._read_again_at = 0.0

    def _refresh(self) -> None:
        try:
            keys = self._read()
        except Exception as exc:
            # Without any key, a malformed secret stops start-up (SPEC: Configuration). Later, a bad
            # write during a rotation or Secrets Manager being down must not sign anyone out: keep
            # the keys we have, say why, and read again a little later, not on every request.
            if isinstance(exc, ConfigurationError) and self._built is None:
                raise
            if self._on_error is not None:
                self._on_error(exc)
            self._read_again_at = self.clock() + self.RETRY_AFTER_FAILURE_SECONDS
            return
        if keys != self._keys:
            self._keys, self._built = keys, self._build(keys)
        self._read_again_at = self.clock() + self._ttl


def hash_session_id(session_id: str) -> bytes:
    """The database keeps only this SHA-256 of the id, so a leaked table cannot be replayed."""
    return hashlib.sha256(session_id.encode()).digest()


@dataclass(frozen=True)
class Cookie:
    """One Set-Cookie value; `max_age` None means a browser-session cookie."""

    name: str
    value: str
    max_age: int | None
    secure: bool
    domain: str | None = None
    #: Sent back only under this path (RFC 6265 5.1.4); every cookie but the reset link's is Path=/.
    path: str = "/"

    def __str__(self) -> str:
        """The Set-Cookie header value (RFC 6265): HttpOnly and SameSite=Lax always. (Powertools'
        `Response(cookies=...)` takes it as is; its own Cookie class would make the dashboard host's
        guard, which shares this module, install Powertools.)"""
        parts = [f"{self.name}={self.value}", f"Path={self.path}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if self.max_age is not None:
            parts.append(f"Max-Age={self.max_age}")
        if self.secure:
            parts.append("Secure")
        parts += ["HttpOnly", "SameSite=Lax"]
        return "; ".join(parts)


class Tokens:
    """Sign and check the three tokens a browser carries; a bad token reads as None, never raises."""

    def __init__(self, settings: Settings, keys: tuple[str, ...]) -> None:
        self.settings = settings
        self.keys = keys
        # itsdangerous signs with the last key and accepts any: our lists are current-first.
        ordered = list(reversed(keys))
        sha256 = {"digest_method": hashlib.sha256}
        self._session = Signer(ordered, salt="dashgate.session", **sha256)
        self._csrf = TimestampSigner(ordered, salt="dashgate.csrf", **sha256)
        self._flash = URLSafeTimedSerializer(ordered, salt="dashgate.flash", signer_kwargs=sha256)
        self._device = Signer(ordered, salt="dashgate.device", **sha256)
        prefix = settings.cookie_prefix
        self.session_cookie_name = settings.session_cookie_name
        self.csrf_cookie_name = f"{prefix}csrf"
        self.flash_cookie_name = f"{prefix}flash"
        self.device_cookie_name = f"{prefix}device"

    # -- session ---------------------------------------------------------------------------
    def new_session(self) -> tuple[str, str]:
        """A fresh random session id and its signed token (the cookie value)."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        return session_id, self._session.sign(session_id).decode()

    def session_id(self, token: str | None) -> str | None:
        """The session id inside a correctly signed token, else None."""
        if not token:
            return None
        try:
            return self._session.unsign(token).decode()
        except (BadData, UnicodeError):
            return None

    def session_cookie(self, token: str, remember_seconds: int | None) -> Cookie:
        """The session cookie; persistent only for "remember me"."""
        return self._cookie(self.session_cookie_name, token, remember_seconds, domain=self.settings.cookie_domain)

    def clear_session_cookie(self) -> Cookie:
        """Delete the session cookie with the attributes it was set with."""
        return self._cookie(self.session_cookie_name, "", 0, domain=self.settings.cookie_domain)

    # -- device (OWASP "Slow Down Online Guessing Attacks with Device Cookies") --------------
    def device_token(self, email: str, now: datetime) -> str:
        """A token saying "this browser signed in to `email`", valid DEVICE_COOKIE_SECONDS from `now`:
        `<expiry>:<random id>:<email>`, signed (a compact string: no JSON on the sign-in path)."""
        expires = int(now.timestamp()) + self.settings.device_cookie_seconds
        return self._device.sign(f"{expires}:{secrets.token_urlsafe(16)}:{email}").decode()

    def device_id(self, token: str | None, email: str, now: datetime) -> str | None:
        """The device's id when `token` is ours, unexpired and for `email`; else None (no device)."""
        if not token:
            return None
        try:
            expires, device, named = self._device.unsign(token).decode().split(":", 2)
        except (BadData, UnicodeError, ValueError):
            return None
        if named != email or not expires.isdigit() or int(expires) <= now.timestamp():
            return None
        return device

    def device_cookie(self, token: str) -> Cookie:
        """The device cookie: persistent, outliving sessions and logouts (it proves no identity alone)."""
        return self._cookie(self.device_cookie_name, token, self.settings.device_cookie_seconds)

    # -- CSRF (signed double submit, OWASP CSRF Prevention Cheat Sheet) ---------------------
    def new_csrf_secret(self) -> str:
        """A random value for the CSRF cookie."""
        return secrets.token_urlsafe(32)

    def csrf_token(self, csrf_secret: str) -> str:
        """The form token for a CSRF cookie value: signed and timestamped."""
        return self._csrf.sign(hashlib.sha256(csrf_secret.encode()).hexdigest()).decode()

    def csrf_matches(self, csrf_secret: str | None, token: str | None) -> bool:
        """True when `token` was signed by us, is fresh, and belongs to this CSRF cookie."""
        if not csrf_secret or not token:
            return False
        try:
            signed = self._csrf.unsign(token, max_age=self.settings.csrf_max_age_seconds).decode()
        except (BadData, UnicodeError):
            return False
        return secrets.compare_digest(signed, hashlib.sha256(csrf_secret.encode()).hexdigest())

    def csrf_cookie(self, csrf_secret: str) -> Cookie:
        """The CSRF cookie (browser-session lifetime)."""
        return self._cookie(self.csrf_cookie_name, csrf_secret, None)

    # -- flash ------------------------------------------------------------------------------
    def flash_cookie(self, messages: list[str]) -> Cookie:
        """A short-lived signed cookie carrying messages across one redirect."""
        return self._cookie(self.flash_cookie_name, self._flash.dumps(messages), self.settings.flash_max_age_seconds)

    def flash_messages(self, value: str | None) -> list[str]:
        """Messages from a flash cookie; anything unsigned, stale or malformed reads as none."""
        if not value:
            return []
        try:
            messages = self._flash.loads(value, max_age=self.settings.flash_max_age_seconds)
        except (BadData, ValueError):
            return []
        return [m for m in messages if isinstance(m, str)] if isinstance(messages, list) else []

    def clear_flash_cookie(self) -> Cookie:
        """Delete the flash cookie once shown."""
        return self._cookie(self.flash_cookie_name, "", 0)

    def _cookie(self, name: str, value: str, max_age: int | None, domain: str | None = None) -> Cookie:
        return Cookie(name, value, max_age, secure=self.settings.session_cookie_secure, domain=domain)
