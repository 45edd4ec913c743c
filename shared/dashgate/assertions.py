"""Assertions: the signed, short-lived identity the gateway's authorizer hands the dashboard host,
and the origin-verify check that tells the host a request came through the gateway at all."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from itsdangerous import BadData, URLSafeSerializer

from dashgate.sessions import KeyRing, load_keys
from dashgate.settings import MAX_ASSERTION_SECONDS, Settings

if TYPE_CHECKING:
    from dashgate.store import User


@dataclass(frozen=True)
class SignedInUser:
    """Who is signed in, as the host app sees it."""

    id: int
    email: str
    first_name: str | None


class Assertions:
    """Issue and check identity assertions: {user id, email, first name, expiry}, HMAC-SHA256 under
    keys used for nothing else (IDENTITY_SECRET_ARN / IDENTITY_SECRETS), current key first."""

    def __init__(self, settings: Settings, keys: tuple[str, ...]) -> None:
        self.lifetime = settings.identity_assertion_seconds
        # itsdangerous signs with the last key and accepts any: our lists are current-first.
        self._serializer = URLSafeSerializer(list(reversed(keys)), salt="dashgate.identity",
                                             signer_kwargs={"digest_method": hashlib.sha256})

    def issue(self, user: User, now: datetime) -> str:
        """An assertion for `user`, valid `lifetime` seconds from `now` (a header-safe string)."""
        return self._serializer.dumps({"id": user.id, "email": user.email, "first_name": user.first_name,
                                       "expires": int(now.timestamp()) + self.lifetime})

    def verify(self, value: str | None, now: datetime) -> SignedInUser | None:
        """The user an assertion names when its signature is ours and it has not expired; else None."""
        if not value:
            return None
        try:
            claims = self._serializer.loads(value)
        except (BadData, ValueError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("expires"), int):
            return None
        expires = claims["expires"]
        # never longer than an assertion can live, even if one was signed so (defence in depth)
        if not now.timestamp() < expires <= now.timestamp() + MAX_ASSERTION_SECONDS or not isinstance(
                claims.get("id"), int):
            return None
        return SignedInUser(claims["id"], str(claims.get("email") or ""), claims.get("first_name") or None)


def assertion_keys(settings: Settings, **kwargs: Any) -> KeyRing[Assertions]:
    """The identity assertion keys (IDENTITY_SECRET_ARN or IDENTITY_SECRETS), as Assertions."""
    return KeyRing(lambda: load_keys(settings.identity_secret_arn, settings.identity_secrets, "IDENTITY_SECRET_ARN"),
                   lambda keys: Assertions(settings, keys), ttl=settings.signing_keys_ttl_seconds, **kwargs)


def origin_values(settings: Settings, **kwargs: Any) -> KeyRing[tuple[str, ...]]:
    """The origin-verify values the host accepts (ORIGIN_VERIFY_SECRET_ARN or ORIGIN_VERIFY_SECRETS)."""
    return KeyRing(lambda: load_keys(settings.origin_verify_secret_arn, settings.origin_verify_secrets,
                                     "ORIGIN_VERIFY_SECRET_ARN"),
                   lambda values: values, ttl=settings.signing_keys_ttl_seconds, **kwargs)


def origin_matches(presented: str, accepted: tuple[str, ...]) -> bool:
    """True when the origin-verify header carries one of the accepted values (compared in constant time)."""
    matched = False
    for value in accepted:  # every candidate is compared: the time does not tell which one matched
        matched |= hmac.compare_digest(presented.encode(), value.encode())
    return bool(presented) and matched
