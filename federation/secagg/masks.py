"""Masks: ring vectors expanded from 32-byte seeds by ChaCha20, that cancel in the sum.

A vehicle ``u`` adds to its encoded vector a *self mask* expanded from a seed ``b_u`` of its
own, and for each neighbour ``v`` that shared keys with it a *pairwise mask* expanded from
the seed both derive from their mask keys: added by the vehicle whose id sorts first and
subtracted by the other, so that it cancels when both are summed. ChaCha20 (from
``cryptography``) is a cryptographic stream: without its seed, a mask is indistinguishable
from uniform over the ring, and so is the masked vector whatever it hides.

>>> import numpy as np
>>> from federation.secagg.ring import Ring
>>> ring = Ring(32, 16)
>>> seed = bytes(32)
>>> plus = pairwise(ring, seed, 4, "veh-a", "veh-b")
>>> minus = pairwise(ring, seed, 4, "veh-b", "veh-a")
>>> ring.add(plus, minus).tolist()
[0, 0, 0, 0]
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from federation.secagg.ring import Ring

__all__ = ["expand", "pairwise", "seed_digest"]

_NONCE = bytes(16)  # every seed expands once: a fixed nonce is safe


def expand(ring: Ring, seed: bytes, dimension: int) -> np.ndarray:
    """``dimension`` uniform ring elements from the ChaCha20 stream of ``seed``."""
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor().update(
        bytes(8 * dimension))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64) & ring.mask


def pairwise(ring: Ring, seed: bytes, dimension: int, me: str, peer: str) -> np.ndarray:
    """The pairwise mask as ``me`` adds it: plus if ``me`` sorts before ``peer``, else minus."""
    mask = expand(ring, seed, dimension)
    return mask if me < peer else ring.subtract(np.zeros_like(mask), mask)


def seed_digest(seed: bytes) -> bytes:
    """The public commitment to a self-mask seed, checked when the seed is rebuilt."""
    return hashlib.sha256(b"fedfleet/secagg/v1/self-mask\n" + seed).digest()
