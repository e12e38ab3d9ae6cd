"""Key agreement and sealed shares: X25519, HKDF-SHA256 and AES-256-GCM (``cryptography``).

Each vehicle makes two fresh X25519 key pairs a round: a *cipher* pair, whose agreement with
a neighbour's keys the Shamir shares it sends that neighbour (through the gateway), and a
*mask* pair, whose agreement with a neighbour's gives the seed of their pairwise mask. Every
derived key is bound by HKDF to its purpose, the round and the two vehicles (in order for a
sealed share, which goes one way; sorted for a mask, which both sides derive alike), so no
key serves twice. A sealed share is the ciphertext and the GCM tag; its associated data names
the round, the sender and the recipient, so that a share moved to another round or pair fails
to open. Its 96-bit nonce is not sent: both sides derive it from that associated data. A
nonce must never repeat under one key, and none can: a sealing key is bound to one round,
sender and recipient, and a vehicle seals once for each neighbour in a round.

>>> from federation.secagg.randomness import SeededBytes
>>> a, b = KeyPair.generate(SeededBytes(1)), KeyPair.generate(SeededBytes(2))
>>> agree(a, b.public, b"demo") == agree(b, a.public, b"demo")
True
>>> key = agree(a, b.public, b"demo")
>>> sealed = seal(key, b"share", b"round 1")
>>> len(sealed) == len(b"share") + SEAL_OVERHEAD
True
>>> open_sealed(key, sealed, b"round 1")
b'share'
>>> open_sealed(key, sealed, b"round 2")
Traceback (most recent call last):
...
federation.secagg.errors.SecAggError: forged: a sealed share failed authentication
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from federation.secagg.errors import SecAggError
from federation.secagg.randomness import RandomBytes

__all__ = ["KEY_BYTES", "SEAL_OVERHEAD", "KeyPair", "agree", "context", "open_sealed", "seal"]

KEY_BYTES = 32
NONCE_BYTES = 12
SEAL_OVERHEAD = 16  # the GCM tag; the nonce is derived, not sent


@dataclass(frozen=True, slots=True, repr=False)
class KeyPair:
    """An X25519 key pair (``repr`` shows only the public half)."""

    key: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls, random_bytes: RandomBytes) -> KeyPair:
        return cls.from_private(random_bytes(KEY_BYTES))

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        key = X25519PrivateKey.from_private_bytes(private)
        return cls(key, key.public_key().public_bytes_raw())

    @property
    def private(self) -> bytes:
        return self.key.private_bytes_raw()

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()[:16]}…)"


def context(purpose: str, round_number: int, *vehicle_ids: str) -> bytes:
    """The HKDF info (and AEAD associated data) binding a key to its use."""
    return "\n".join(("fedfleet/secagg/v1", purpose, str(round_number), *vehicle_ids)).encode()


def agree(pair: KeyPair, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte key both sides derive from their X25519 agreement, bound to ``info``.

    A peer key that is no valid X25519 point (or a low-order one, which would make the
    agreement all zeros) raises ``SecAggError("forged")``.
    """
    try:
        shared = pair.key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise SecAggError("forged", "a public key gives no valid agreement") from None
    return HKDF(hashes.SHA256(), KEY_BYTES, None, info).derive(shared)


def _nonce(associated: bytes) -> bytes:
    return hashlib.sha256(b"fedfleet/secagg/v1/nonce\n" + associated).digest()[:NONCE_BYTES]


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``plaintext`` encrypted and authenticated under ``key``, with ``associated`` data (a
    key seals one plaintext only: the nonce follows from ``associated``)."""
    return AESGCM(key).encrypt(_nonce(associated), plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of ``sealed``; ``SecAggError("forged")`` if anything was changed."""
    try:
        return AESGCM(key).decrypt(_nonce(associated), sealed, associated)
    except (InvalidTag, ValueError):
        raise SecAggError("forged", "a sealed share failed authentication") from None
