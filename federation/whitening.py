"""The coordinates a summary is released in: the fleet's own units, set by a public model.

A vehicle's summary ``(n, mean, cov)`` lives in scaled units, where the channels' spreads
differ by orders of magnitude (a healthy sensor's residual variance is about 1e-4, an
operating condition's about 1e-2). Noise of one size on every coordinate there would bury the
small directions and barely touch the large ones. So a summary is released relative to a
public *centre* (the global model the vehicle last received, or :func:`public_centre` before
any), in the centre's whitened coordinates: with ``L`` the Cholesky factor of the centre's
covariance ``C`` (plus a small public floor), ``delta = mean - centre.mean`` and
``S = cov + outer(delta, delta)`` (the second moment about the centre's mean),

    y = inv(L) delta            M = inv(L) (S - C) inv(L).T

and the released vector is ``y``, then the diagonal of ``M``, then the upper off-diagonal of
``M`` times sqrt(2), so that its L2 norm is ``sqrt(|y|^2 + |M|_F^2)``. A summary equal to the
centre packs to zero; noise of standard deviation ``t`` on the vector is noise of ``t``
relative to the centre's own spread in every direction, the smallest included.

Averaging packed vectors about one centre averages second moments, so the average of many
vehicles' vectors unpacks to their pooled model (each vehicle weighing the same).

>>> import numpy as np
>>> names = ("a", "b")
>>> centre = ModelSummary(names, 100.0, np.array([0.5, 0.5]), np.diag([0.04, 1e-4]))
>>> w = Whitening(centre)
>>> w.pack(centre).round(9).tolist()
[0.0, 0.0, 0.0, 0.0, 0.0]
>>> mine = ModelSummary(names, 10.0, np.array([0.7, 0.51]), np.diag([0.04, 4e-4]))
>>> w.pack(mine).round(2).tolist()  # y: a spread off on each; M: 1 more on a, 4 more on b
[1.0, 1.0, 1.0, 3.96, 1.41]
>>> back = w.unpack(w.pack(mine), mine.n)
>>> bool(np.allclose(back.mean, mine.mean)), bool(np.allclose(back.cov, mine.cov))
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from federation.summary import ModelSummary, upper_triangle

__all__ = ["PUBLIC_VARIANCE", "WHITENING_FLOOR", "Whitening", "public_centre"]

# Before any global model: every scaled channel uniform over its [0, 1] range.
PUBLIC_VARIANCE = 1.0 / 12.0
# Added to the centre's variances before whitening, so that a channel the fleet never moved
# still has a spread: 1 % of a healthy sensor's residual variance, in scaled units.
WHITENING_FLOOR = 1e-6
_BLOCK = 1024  # summaries packed at once


@lru_cache(maxsize=16)
def _factors(cov_bytes: bytes, d: int, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """The Cholesky factor of a centre's covariance (given as its bytes), made positive
    definite, and its inverse; read-only, since they are shared."""
    cov = np.frombuffer(cov_bytes, dtype=float).reshape(d, d)
    cov = (cov + cov.T) / 2 + floor * np.eye(d)
    values, vectors = np.linalg.eigh(cov)  # a noisy centre may be indefinite
    root = np.linalg.cholesky((vectors * np.maximum(values, floor)) @ vectors.T)
    inverse = np.linalg.inv(root)
    root.flags.writeable = inverse.flags.writeable = False
    return root, inverse


def public_centre(features: Sequence[str]) -> ModelSummary:
    """The centre before any global model exists: every scaled feature at the middle of its
    range, spread as if uniform over it, no correlation. It depends on no one's data."""
    d = len(features)
    return ModelSummary(tuple(features), 0.0, np.full(d, 0.5), np.eye(d) * PUBLIC_VARIANCE)


class Whitening:
    """Pack summaries into the whitened coordinates of ``centre``, and back."""

    def __init__(self, centre: ModelSummary, floor: float = WHITENING_FLOOR) -> None:
        d = len(centre.mean)
        self.centre = centre
        self.features = centre.features
        # Every vehicle of a fleet process clips about the same model: decomposed once.
        self._root, self._inverse = _factors(np.ascontiguousarray(centre.cov, float).tobytes(),
                                             d, floor)
        self._upper = upper_triangle(d, diagonal=False)
        self._d = d

    @property
    def size(self) -> int:
        """The length of a packed vector: ``d + d (d + 1) / 2``."""
        return self._d + self._d * (self._d + 1) // 2

    def pack(self, summary: ModelSummary) -> np.ndarray:
        """``summary`` as a vector in the centre's whitened coordinates (see the module)."""
        return self.pack_all([summary])[0]

    def pack_all(self, summaries: Sequence[ModelSummary]) -> np.ndarray:
        """Each of ``summaries`` packed, one row each, in one pass of array operations (a
        round's thousands of releases cost milliseconds, not a Python loop of them)."""
        if any(summary.features != self.features for summary in summaries):
            raise ValueError("cannot pack a summary over other features than the centre's")
        # In blocks small enough for the processor's cache: 50,000 at once run 5 times slower.
        blocks = [self._pack_block(summaries[i:i + _BLOCK])
                  for i in range(0, len(summaries), _BLOCK)]
        return np.concatenate(blocks) if blocks else np.empty((0, self.size))

    def _pack_block(self, summaries: Sequence[ModelSummary]) -> np.ndarray:
        delta = np.array([s.mean for s in summaries]).reshape(-1, self._d) - self.centre.mean
        second = np.array([s.cov for s in summaries]).reshape(-1, self._d, self._d)
        second = second + delta[:, :, None] * delta[:, None, :] - self.centre.cov
        moment = self._inverse @ second @ self._inverse.T
        diagonal = np.diagonal(moment, axis1=1, axis2=2)
        return np.concatenate([delta @ self._inverse.T, diagonal,
                               np.sqrt(2.0) * moment[:, self._upper[0], self._upper[1]]], axis=1)

    def spreads(self, summary: ModelSummary) -> np.ndarray:
        """The variances of ``summary`` relative to the centre's, along its principal axes in
        the centre's whitened coordinates (all 1 for the centre itself)."""
        spread = self._inverse @ summary.cov @ self._inverse.T
        return np.linalg.eigvalsh((spread + spread.T) / 2)

    def unpack(self, vector: np.ndarray, n: float, floor: float | None = None) -> ModelSummary:
        """The summary of ``n`` readings whose :meth:`pack` is ``vector``.

        A noised vector may unpack to a covariance that is not positive semi-definite. With
        ``floor`` (for a model to be used, not for a release that will still be averaged),
        every direction's variance is raised to at least ``floor`` times the centre's in that
        direction: a direction the noise buries is kept as wide as the noise, not squeezed to
        nothing, so that the next release, whitened by this model, stays bounded.
        """
        d = self._d
        moment = np.diag(vector[d:2 * d])
        moment[self._upper] = vector[2 * d:] / np.sqrt(2.0)
        moment = moment + np.triu(moment, 1).T
        y = vector[:d]
        spread = moment + self._inverse @ self.centre.cov @ self._inverse.T - np.outer(y, y)
        spread = (spread + spread.T) / 2
        if floor is not None:
            values, vectors = np.linalg.eigh(spread)
            spread = (vectors * np.maximum(values, floor)) @ vectors.T
        cov = self._root @ spread @ self._root.T
        return ModelSummary(self.features, float(n), self.centre.mean + self._root @ y,
                            (cov + cov.T) / 2)

