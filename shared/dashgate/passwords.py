"""Passwords: argon2id hashing and verification with parameters from settings."""

from __future__ import annotations

import base64
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dashgate.settings import Settings


class Passwords:
    """Hash new passwords and verify presented ones, always paying exactly one verification."""

    def __init__(self, settings: Settings) -> None:
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
        )
        # A well-formed hash of nothing, with the current parameters: verifying against it costs
        # the same as a real verification, so an unknown email takes as long as a wrong password
        # (Django's "run the hasher once" fix, ticket #20760). Built from random bytes, not by
        # hashing, so it adds nothing to the cold start.
        p = self.hasher._parameters  # argon2-cffi keeps its Parameters here
        salt, digest = _b64(secrets.token_bytes(p.salt_len)), _b64(secrets.token_bytes(p.hash_len))
        self._dummy = f"$argon2id$v=19$m={p.memory_cost},t={p.time_cost},p={p.parallelism}${salt}${digest}"

    def hash(self, password: str) -> str:
        """Return a new argon2id hash of `password`."""
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when `password` matches `stored_hash`; None (no such user) still costs one verification."""
        try:
            return self.hasher.verify(stored_hash or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return True


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")
