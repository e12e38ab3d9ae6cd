"""Mosquitto's password file: one ``username:hash`` line per login.

Mosquitto 2.0 (Debian bookworm ships 2.0.11) reads the format its ``mosquitto_passwd``
writes by default: ``$7$ITERATIONS$SALT$HASH``, PBKDF2-HMAC-SHA512 with a 12-byte salt and
a 64-byte hash, both in standard base64. Writing it here needs no Mosquitto on the machine
that prepares a deployment.

>>> line = password_line("veh-0001", "s3cret", salt=bytes(12))
>>> line.split("$")[:3]
['veh-0001:', '7', '101']
>>> verify(line, "s3cret"), verify(line, "guess")
(True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["ITERATIONS", "new_password", "password_line", "verify"]

# Mosquitto's own default for $7$ hashes.
ITERATIONS = 101
_SALT_BYTES = 12
_HASH_BYTES = 64


def new_password() -> str:
    """A random password of 32 URL-safe characters (192 bits), fit for an ``mqtt://`` URL."""
    return secrets.token_urlsafe(24)


def _digest(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)


def password_line(username: str, password: str, salt: bytes | None = None) -> str:
    """The password-file line for ``username``, without its newline; ``salt`` for tests."""
    if not username or ":" in username or any(c.isspace() for c in username):
        raise ValueError(f"a Mosquitto username has no ':' and no spaces: {username!r}")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    encoded = (base64.b64encode(part).decode()
               for part in (salt, _digest(password, salt, ITERATIONS)))
    return f"{username}:$7${ITERATIONS}${'$'.join(encoded)}"


def verify(line: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` password-file line."""
    _, _, hashed = line.partition(":")
    _, kind, iterations, salt, digest = hashed.split("$")
    if kind != "7":
        raise ValueError(f"not a $7$ (PBKDF2-SHA512) hash: ${kind}$")
    expected = _digest(password, base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(expected, base64.b64decode(digest))
