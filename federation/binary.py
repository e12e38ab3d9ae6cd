"""The compact binary form of a message that carries a model summary (``update``, ``model``).

JSON stays the protocol's form for people and for ``mosquitto_pub``; a summary's 55 numbers
written as decimal text are most of its bytes. The binary form keeps the other fields as the
same compact JSON object (without ``"features"``: the schema digest names them) and writes
the summary (``d`` features: 1 + d + d(d+1)/2 numbers) as little-endian IEEE float64,
losslessly::

    0xFF 0x01 | header length (uint16 LE) | header (UTF-8 JSON) | n | mean | cov's upper triangle

The first byte, ``0xFF``, never begins UTF-8 text, so a receiver tells the forms apart by it;
the second is the binary form's version. :mod:`federation.messages` validates what
:func:`unpack` returns exactly as it validates JSON, and turns any :class:`BinaryError` into
its own ``MessageError`` (reason ``bad_binary``).

>>> import numpy as np
>>> payload = pack({"v": 1, "round": 3}, 30.0, np.array([0.5, 0.25]), np.eye(2) * 0.01)
>>> len(payload), payload[:2]
(69, b'\\xff\\x01')
>>> obj = unpack(payload, ("a", "b"))
>>> obj["round"], obj["features"], obj["state"]["n"], obj["state"]["cov"].tolist()
(3, ['a', 'b'], 30.0, [[0.01, 0.0], [0.0, 0.01]])
>>> unpack(payload[:-8], ("a", "b"))
Traceback (most recent call last):
...
federation.binary.BinaryError: the summary needs 48 bytes, got 40
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from federation.summary import upper_triangle

__all__ = ["MAGIC", "BinaryError", "is_binary", "pack", "unpack"]

MAGIC = b"\xff\x01"  # the marker byte, then the binary form's version
_LENGTH = struct.Struct("<H")
_FLOAT = np.dtype("<f8")


class BinaryError(ValueError):
    """A payload that starts as the binary form but is not one."""


def is_binary(payload: bytes) -> bool:
    """Whether ``payload`` claims the binary form (by its first byte, of any version)."""
    return payload[:1] == MAGIC[:1]


def pack(header: dict[str, Any], n: float, mean: np.ndarray, cov: np.ndarray) -> bytes:
    """``header`` (a message's fields but its features and state) and a summary, packed."""
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    upper = cov[upper_triangle(len(mean))]
    numbers = np.concatenate([[n], mean, upper]).astype(_FLOAT)
    return MAGIC + _LENGTH.pack(len(text)) + text + numbers.tobytes()


def unpack(payload: bytes, features: Sequence[str]) -> dict[str, Any]:
    """The message's JSON object back from ``payload``, its summary over ``features``:
    ``"features"`` and ``"state"`` filled in (the mean and covariance as float64 arrays,
    never lists: a gateway takes thousands a second), every other field as the header gave
    it. Raises :class:`BinaryError` for a payload of another version, length or layout."""
    if payload[:2] != MAGIC:
        raise BinaryError(f"unknown binary form {payload[:2]!r}")
    if len(payload) < len(MAGIC) + _LENGTH.size:
        raise BinaryError("no header length")
    (size,) = _LENGTH.unpack_from(payload, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    try:
        header = json.loads(payload[start:start + size].decode())  # JSON is UTF-8 (RFC 8259)
    except (ValueError, RecursionError) as exc:
        raise BinaryError(f"the header is no JSON: {str(exc)[:80]}") from None
    if not isinstance(header, dict) or "state" in header:
        raise BinaryError("the header must be a JSON object without 'state'")
    d = len(features)
    body = payload[start + size:]
    need = (1 + d + d * (d + 1) // 2) * _FLOAT.itemsize
    if len(body) != need:
        raise BinaryError(f"the summary needs {need} bytes, got {len(body)}")
    numbers = np.frombuffer(body, dtype=_FLOAT).astype(float)
    cov = numbers[1 + d:][_symmetric(d)]
    state = {"n": float(numbers[0]), "mean": numbers[1:1 + d], "cov": cov}
    return header | {"features": list(features), "state": state}


@lru_cache(maxsize=16)
def _symmetric(d: int) -> np.ndarray:
    """For each entry of a ``d`` x ``d`` symmetric matrix, its index in the upper triangle
    as :func:`pack` writes it (row by row).

    >>> _symmetric(2).tolist()
    [[0, 1], [1, 2]]
    """
    index = np.zeros((d, d), dtype=np.intp)
    index[upper_triangle(d)] = np.arange(d * (d + 1) // 2)
    return np.maximum(index, index.T)
