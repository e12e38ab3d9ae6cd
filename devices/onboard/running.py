"""A vehicle's running mean and covariance, reading by reading, as River keeps them.

River's ``EmpiricalCovariance(ddof=0)`` updates a ``stats.Var`` per channel and a
``stats.Cov`` per pair of channels (the pair named in sorted order) with Welford's
recurrences: 45 Python objects a reading for 9 channels, the largest share of a simulated
fleet's time. :class:`RunningCovariance` keeps the same numbers in three arrays, with the same
arithmetic in the same order (:func:`learn`), so that its summaries are River's (a test holds
them to 1e-9; they agree to the last bit) at a fraction of the cost. :func:`learn` and
:func:`covariance` take a stack of devices as well as one: the offline replay
(:mod:`analytics.moments`) keeps a whole fleet's with the very same rule.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from federation.summary import ModelSummary

__all__ = ["RunningCovariance", "covariance", "learn", "pair_order"]


def pair_order(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The channel positions of each pair, first and second, as River pairs them (its keys in
    sorted order)."""
    by_name = sorted(range(len(names)), key=lambda i: names[i])
    pairs = list(combinations(by_name, 2))
    return (np.array([i for i, _ in pairs], dtype=int),
            np.array([j for _, j in pairs], dtype=int))


def learn(n: np.ndarray, mean: np.ndarray, squares: np.ndarray, pairs: np.ndarray,
          x: np.ndarray, order: tuple[np.ndarray, np.ndarray]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The state after one more complete reading ``x`` (per device, in leading axes): count,
    mean, each channel's sum of squared deviations (River's ``Var``) and each pair's running
    covariance (River's ``Cov``, pairs in :func:`pair_order`)."""
    first, second = order
    n = n + 1.0
    before = x - mean
    new = mean + (1.0 / n)[..., None] * before
    squares = squares + before * (x - new)
    pairs = pairs + (before[..., first] * (x[..., second] - new[..., second]) - pairs
                     ) / n[..., None]
    return n, new, squares, pairs


def covariance(n: np.ndarray, squares: np.ndarray, pairs: np.ndarray,
               order: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The covariance matrices (``ddof=0``) of the state :func:`learn` keeps; 0 where nothing
    was learned."""
    first, second = order
    d = squares.shape[-1]
    cov = np.zeros((*squares.shape[:-1], d, d))
    cov[..., first, second] = pairs
    cov[..., second, first] = pairs
    diagonal = np.arange(d)
    learned = n > 0
    cov[..., diagonal, diagonal] = np.where(
        learned[..., None], squares / np.where(learned, n, 1.0)[..., None], 0.0)
    return cov


class RunningCovariance:
    """The readings a vehicle learned since it was made: count, mean and covariance.

    Examples
    --------
    >>> from river import covariance as river_covariance
    >>> rows = np.random.default_rng(1).random((50, 3))
    >>> river, mine = river_covariance.EmpiricalCovariance(ddof=0), RunningCovariance("bac")
    >>> for row in rows:
    ...     river.update(dict(zip("bac", row)))
    ...     mine.update(dict(zip("bac", row)))
    >>> bool(np.array_equal(mine.summary().cov, ModelSummary.from_river(river, "bac").cov))
    True
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._order = pair_order(self.names)
        d = len(self.names)
        self._n = np.zeros(())
        self._mean = np.zeros(d)
        self._squares = np.zeros(d)
        self._pairs = np.zeros(len(self._order[0]))

    @property
    def n(self) -> int:
        return int(self._n)

    def update(self, x: Mapping[Hashable, Any]) -> None:
        """Learn one complete reading (a value for every name)."""
        row = np.fromiter((x[name] for name in self.names), float, len(self.names))
        self._n, self._mean, self._squares, self._pairs = learn(
            self._n, self._mean, self._squares, self._pairs, row, self._order)

    def summary(self) -> ModelSummary:
        """What was learned, as a summary (empty before any reading)."""
        if not self._n:
            return ModelSummary.empty(self.names)
        cov = covariance(self._n, self._squares, self._pairs, self._order)
        return ModelSummary(self.names, float(self._n), self._mean.copy(), cov)
