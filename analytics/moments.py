"""Many devices' running means and covariances, kept as River keeps them, reading by reading.

A device's detector learns its recent readings as River's ``EmpiricalCovariance(ddof=0)``
would (:mod:`devices.onboard.running`): a variance per channel and a covariance per pair of
channels (the pair named in sorted order), each updated with Welford's recurrences.
:class:`RunningMoments` keeps the same numbers for a stack of devices with the very same rule,
so that its summaries are River's to the last bit (a test holds it to that); only the loop over
devices is NumPy's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analytics.stack import Stack
from devices.onboard.running import covariance, learn, pair_order
from federation.summary import Moments, merge

__all__ = ["RunningMoments"]


class RunningMoments(Stack):
    """The readings learned by each of ``size`` devices since its last :meth:`reset`.

    Examples
    --------
    >>> from river import covariance
    >>> from federation.summary import ModelSummary
    >>> rows = np.random.default_rng(1).random((50, 3))
    >>> river = covariance.EmpiricalCovariance(ddof=0)
    >>> stack = RunningMoments(("b", "a", "c"), size=2)
    >>> for row in rows:
    ...     river.update(dict(zip("bac", row)))
    ...     stack.learn(np.array([1]), row[None, :])
    >>> mine, theirs = stack.moments(np.array([0, 1])), ModelSummary.from_river(river, "bac")
    >>> mine.n.tolist(), bool(np.array_equal(mine.cov[1], theirs.cov))
    ([0.0, 50.0], True)
    """

    ROWS = ("n", "mean", "_squares", "_pairs")

    def __init__(self, names: Sequence[str], size: int) -> None:
        d = len(names)
        self._order = pair_order(names)
        self._first, self._second = self._order
        self._d = d
        self.n = np.zeros(size)
        self.mean = np.zeros((size, d))
        self._squares = np.zeros((size, d))  # Var's sum of squared deviations
        self._pairs = np.zeros((size, len(self._first)))  # Cov's running covariance of each pair

    def learn(self, rows: np.ndarray, x: np.ndarray) -> None:
        """Each of ``rows`` learns one complete reading, the matching row of ``x``."""
        (self.n[rows], self.mean[rows], self._squares[rows], self._pairs[rows]) = learn(
            self.n[rows], self.mean[rows], self._squares[rows], self._pairs[rows], x,
            self._order)

    def moments(self, rows: np.ndarray) -> Moments:
        """The summaries of ``rows``, as :meth:`ModelSummary.from_river` reads River's."""
        n = self.n[rows]
        return Moments(n, self.mean[rows],
                       covariance(n, self._squares[rows], self._pairs[rows], self._order))

    def fold(self, rows: np.ndarray, blocks: Moments) -> None:
        """Each of ``rows`` learns a block of readings given by its summary: merged by the exact
        rule, equal to learning them one by one up to rounding."""
        n, mean, cov = merge(self.moments(rows), blocks)
        diagonal = np.arange(self._d)
        self.n[rows], self.mean[rows] = n, mean
        self._squares[rows] = cov[:, diagonal, diagonal] * n[:, None]
        self._pairs[rows] = cov[:, self._first, self._second]

    def reset(self, rows: np.ndarray) -> None:
        """Forget what ``rows`` learned (their summary was taken)."""
        for array in (self.n, self.mean, self._squares, self._pairs):
            array[rows] = 0.0
