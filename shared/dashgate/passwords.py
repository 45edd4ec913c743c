"""Passwords: argon2id hashing and verification with parameters from settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
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
        self._dummy = ""
        self.reseed()

    def reseed(self) -> None:
        """Draw a new dummy hash (at start-up, and after a SnapStart restore: see runtime.py)."""
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
        """True when `password` matches `stored_hash`; None (no such user) still costs one verification.

        Hashes written by the Flask app (Werkzeug's pbkdf2 and scrypt formats) verify too, so its
        users keep their passwords; `needs_rehash` then moves them to argon2id.
        """
        if stored_hash and stored_hash.startswith(WERKZEUG_METHODS):
            return verify_werkzeug(stored_hash, password)
        try:
            return self.hasher.verify(stored_hash or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash is not argon2id with the current parameters."""
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return True


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


#: Werkzeug's generate_password_hash formats: "pbkdf2:<digest>:<iterations>$salt$hex" and
#: "scrypt:<n>:<r>:<p>$salt$hex" (werkzeug/security.py); salts are text, used as UTF-8 bytes.
WERKZEUG_METHODS = ("pbkdf2:", "scrypt:")


def verify_werkzeug(stored_hash: str, password: str) -> bool:
    """Check a Werkzeug hash with the standard library's own KDFs and a constant-time compare."""
    try:
        method, salt, expected = stored_hash.split("$", 2)
        name, *args = method.split(":")
        secret, salt_bytes = password.encode(), salt.encode()
        if name == "pbkdf2":
            digest = args[0] if args else "sha256"
            iterations = int(args[1]) if len(args) > 1 else 600_000
            derived = hashlib.pbkdf2_hmac(digest, secret, salt_bytes, iterations)
        else:
            n, r, p = (int(a) for a in args) if args else (2**15, 8, 1)
            derived = hashlib.scrypt(secret, salt=salt_bytes, n=n, r=r, p=p, maxmem=132 * n * r * p)
    except (ValueError, TypeError):  # malformed, or a digest this Python lacks
        return False
    return hmac.compare_digest(derived.hex(), expected)
