"""Where the protocol's secrets come from: the operating system's generator, or a seed.

Keys, mask seeds, the coefficients of Shamir polynomials, AEAD nonces and the dither of
stochastic rounding are all drawn as bytes from a :data:`RandomBytes` callable.
:func:`secrets.token_bytes` is the default everywhere; :class:`SeededBytes` makes a round
reproducible, for tests and benchmarks only (whoever knows the seed knows every secret).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["RandomBytes", "SeededBytes", "generator"]

RandomBytes = Callable[[int], bytes]


class SeededBytes:
    """Reproducible random bytes from a seeded NumPy generator.

    Examples
    --------
    >>> SeededBytes(7)(4) == SeededBytes(7)(4)
    True
    """

    def __init__(self, seed: int | Sequence[int]) -> None:
        self._rng = np.random.default_rng(seed)

    def __call__(self, count: int) -> bytes:
        return self._rng.bytes(count)


def generator(random_bytes: RandomBytes) -> np.random.Generator:
    """A NumPy generator keyed by 32 bytes of ``random_bytes`` (for non-secret draws)."""
    return np.random.default_rng(np.frombuffer(random_bytes(32), dtype=np.uint32))
