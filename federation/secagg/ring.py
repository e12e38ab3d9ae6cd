"""Fixed-point vectors in the ring of integers modulo ``2**ring_bits``.

A real vector is scaled by ``2**fraction_bits`` and rounded *stochastically* to integers
(up with probability equal to the fractional part, so rounding is unbiased and each
coordinate moves by less than one step), then taken modulo ``2**ring_bits``. Sums in the ring
are sums of the integers as long as the true sum stays within ``±2**(ring_bits - 1)``; the
round's plan (:mod:`federation.secagg.params`) picks ``fraction_bits`` so that it does. A
ring element goes on the wire as ``ring_bits / 8`` little-endian bytes.

>>> import numpy as np
>>> ring = Ring(ring_bits=32, fraction_bits=16)
>>> a = ring.encode(np.array([0.5, -1.25]), np.random.default_rng(0))
>>> b = ring.encode(np.array([-2.0, 0.75]), np.random.default_rng(1))
>>> ring.decode(ring.add(a, b)).tolist()
[-1.5, -0.5]
>>> ring.from_bytes(ring.to_bytes(a), 2).tolist() == a.tolist()
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RING_BITS", "Ring"]

RING_BITS = (16, 24, 32, 40, 48, 56, 64)


@dataclass(frozen=True, slots=True)
class Ring:
    """Vectors of ``ring_bits``-bit integers with ``fraction_bits`` of them after the point."""

    ring_bits: int
    fraction_bits: int

    def __post_init__(self) -> None:
        if self.ring_bits not in RING_BITS:
            raise ValueError(f"ring_bits must be one of {RING_BITS}, got {self.ring_bits}")
        if not 0 <= self.fraction_bits < self.ring_bits:
            raise ValueError(f"fraction_bits must be in [0, {self.ring_bits})")

    @property
    def mask(self) -> np.uint64:
        return np.uint64(2**self.ring_bits - 1)

    @property
    def resolution(self) -> float:
        """One step of the fixed point, in the vector's units."""
        return 2.0**-self.fraction_bits

    @property
    def width_bytes(self) -> int:
        return self.ring_bits // 8

    def encode(self, vector: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``vector`` in fixed point, stochastically rounded, as ring elements."""
        scaled = np.asarray(vector, dtype=float) * 2.0**self.fraction_bits
        low = np.floor(scaled)
        integers = (low + (rng.random(scaled.shape) < scaled - low)).astype(np.int64)
        return self.reduce(integers)

    def reduce(self, integers: np.ndarray) -> np.ndarray:
        """Signed 64-bit integers as ring elements."""
        return integers.astype(np.int64).view(np.uint64) & self.mask

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b) & self.mask

    def subtract(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a - b) & self.mask

    def signed(self, values: np.ndarray) -> np.ndarray:
        """Ring elements as the integers in ``[-2**(bits-1), 2**(bits-1))`` they stand for."""
        if self.ring_bits == 64:
            return values.view(np.int64)
        integers = values.astype(np.int64)
        return np.where(integers >= 2 ** (self.ring_bits - 1),
                        integers - 2**self.ring_bits, integers)

    def decode(self, values: np.ndarray) -> np.ndarray:
        """Ring elements back to real numbers (a sum, if they are a sum)."""
        return self.signed(values).astype(float) * self.resolution

    def to_bytes(self, values: np.ndarray) -> bytes:
        octets = values.astype("<u8").view(np.uint8).reshape(-1, 8)
        return octets[:, : self.width_bytes].tobytes()

    def from_bytes(self, payload: bytes, dimension: int) -> np.ndarray:
        """``dimension`` ring elements from their wire form (``ValueError`` on a wrong size)."""
        if len(payload) != dimension * self.width_bytes:
            raise ValueError(f"need {dimension * self.width_bytes} bytes, got {len(payload)}")
        octets = np.zeros((dimension, 8), dtype=np.uint8)
        octets[:, : self.width_bytes] = np.frombuffer(payload, dtype=np.uint8).reshape(
            dimension, self.width_bytes)
        return octets.view("<u8").reshape(dimension).astype(np.uint64)
