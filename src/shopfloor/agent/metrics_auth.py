"""Basic auth of the ``/metrics`` server: salted PBKDF2-SHA256 password hashes and the check.

:func:`hash_password` makes the ``basic_auth_hash`` that ``shopfloor hash-password`` prints,
:class:`PasswordHash` reads one back (the config loader checks it with the same code), and
:class:`BasicAuth` checks a request's credentials, remembering the ones that passed as a keyed
digest so that a legitimate Prometheus pays for the hash once per agent run. Nothing here
touches a socket: kept apart from the server (:mod:`shopfloor.agent.metrics_server`, which
re-exports these) so that the config loader can check a hash without it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

__all__ = ["DEFAULT_ITERATIONS", "BasicAuth", "PasswordHash", "hash_password"]

#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256: ~0.2 s on an x86 core, ~1 s on a Raspberry Pi 4,
#: paid once per agent run by a legitimate client (see BasicAuth).
DEFAULT_ITERATIONS = 600_000
HASH_SCHEME = "pbkdf2-sha256"
MIN_ITERATIONS = 10_000
MAX_ITERATIONS = 100_000_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """``pbkdf2-sha256$ITERATIONS$SALT$DIGEST`` (salt and digest in base64, unpadded)."""

    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Raises ValueError saying what is wrong (never echoing the text)."""
        parts = text.split("$")
        if len(parts) != 4 or parts[0] != HASH_SCHEME:
            raise ValueError(
                f"must be {HASH_SCHEME}$ITERATIONS$SALT$HASH, as `shopfloor hash-password` "
                "prints it"
            )
        if not parts[1].isdigit():
            raise ValueError("the iteration count is not a whole number")
        iterations = int(parts[1])
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ValueError(
                f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}; "
                f"got {iterations}"
            )
        try:
            salt, digest = _unb64(parts[2]), _unb64(parts[3])
        except (binascii.Error, ValueError):
            raise ValueError("salt and hash must be base64") from None
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("the salt needs 8 bytes at least and the hash 16")
        return cls(iterations, salt, digest)

    def verify(self, password: bytes) -> bool:
        """The slow part: one PBKDF2 (hashlib releases the GIL while it runs)."""
        got = hashlib.pbkdf2_hmac(
            "sha256", password, self.salt, self.iterations, dklen=len(self.digest)
        )
        return hmac.compare_digest(got, self.digest)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The ``basic_auth_hash`` of ``password``: salted PBKDF2-SHA256 (bcrypt is not a
    dependency, and the standard library has this)."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}")
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{HASH_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


class BasicAuth:
    """One user and the hash of their password.

    :meth:`verify` runs the hash; :meth:`known` answers in microseconds for the credentials
    that passed last, compared as a digest keyed by a secret of this process, so the password
    itself is never kept.
    """

    def __init__(self, user: str, password_hash: str) -> None:
        self.user = user.encode("utf-8")
        self.hash = PasswordHash.parse(password_hash)
        self._key = os.urandom(32)
        self._passed: bytes | None = None

    def _fingerprint(self, user: bytes, password: bytes) -> bytes:
        message = len(user).to_bytes(4, "big") + user + password
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def known(self, user: bytes, password: bytes) -> bool:
        passed = self._passed
        return passed is not None and hmac.compare_digest(passed, self._fingerprint(user, password))

    def verify(self, user: bytes, password: bytes) -> bool:
        # The hash runs whatever the user name, so a wrong name takes as long as a wrong
        # password; & (not `and`) keeps both comparisons.
        ok = hmac.compare_digest(user, self.user) & self.hash.verify(password)
        if ok:
            self._passed = self._fingerprint(user, password)
        return ok


def _credentials(header: str) -> tuple[bytes, bytes] | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None
