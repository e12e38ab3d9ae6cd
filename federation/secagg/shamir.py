"""Shamir secret sharing of 32-byte secrets over the prime field of ``2**256 + 297``.

A secret is the constant term of a polynomial of degree ``threshold - 1`` whose other
coefficients are uniformly random; the share of the party at ``x`` (1, 2, ...) is the
polynomial's value there. Any ``threshold`` shares give the secret back by Lagrange
interpolation at 0; fewer are uniformly distributed whatever the secret, so they say
nothing about it. The prime is the smallest above ``2**256``, so that every 32-byte string
is a field element; a share is 33 bytes.

>>> from federation.secagg.randomness import SeededBytes
>>> secret = bytes(range(32))
>>> shares = split(secret, [1, 2, 3, 4, 5], threshold=3, random_bytes=SeededBytes(0))
>>> combine([(2, shares[1]), (4, shares[3]), (5, shares[4])]) == secret
True
>>> combine([(1, shares[0]), (2, shares[1])]) == secret  # below the threshold: noise
False
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from federation.secagg.randomness import RandomBytes

__all__ = ["PRIME", "SECRET_BYTES", "SHARE_BYTES", "combine", "split"]

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33
# Coefficients are drawn from this many bytes and reduced: the bias is below 2**-127.
_DRAW_BYTES = 48


def split(secret: bytes, xs: Sequence[int], threshold: int,
          random_bytes: RandomBytes) -> list[int]:
    """The shares of ``secret`` at the distinct non-zero points ``xs``."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    coefficients = [int.from_bytes(random_bytes(_DRAW_BYTES), "big") % PRIME
                    for _ in range(threshold - 1)]
    constant = int.from_bytes(secret, "big")
    shares = []
    for x in xs:
        value = 0
        for coefficient in reversed(coefficients):
            value = (value + coefficient) * x % PRIME
        shares.append((value + constant) % PRIME)
    return shares


def combine(points: Sequence[tuple[int, int]]) -> bytes:
    """The secret whose shares are ``points`` (``(x, share)`` pairs, distinct ``x``).

    With fewer points than the threshold, or a wrong share among them, the result is some
    other 32-byte string, or ``ValueError`` if it is no 32-byte string at all: a caller
    checks it against a commitment.
    """
    weights = _lagrange_at_zero(tuple(x for x, _ in points))
    value = sum(w * y for w, (_, y) in zip(weights, points, strict=True)) % PRIME
    if value >= 2 ** (8 * SECRET_BYTES):
        raise ValueError("the shares do not interpolate to a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


@lru_cache(maxsize=4096)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The weights ``w_i`` with ``p(0) = sum(w_i * p(x_i))`` for any ``p`` of degree
    below ``len(xs)``; cached, since a round's neighbourhoods repeat their points."""
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    weights = []
    for i, xi in enumerate(xs):
        numerator = denominator = 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(weights)
