"""A vehicle's running mean and covariance, reading by reading, as River keeps them.

River's ``EmpiricalCovariance(ddof=0)`` updates a ``stats.Var`` per channel and a
``stats.Cov`` per pair of channels (the pair named in sorted order) with Welford's
recurrences: 45 Python objects a reading for 9 channels, the largest share of a simulated
fleet's time. :class:`RunningCovariance` keeps the same numbers in three arrays, with the same
arithmetic in the same order (:func:`learn`), so that its summaries are River's (a test holds
them to 1e-9; they agree to the last bit) at a fraction of the cost. :func:`learn` and
:func:`covariance` take a stack of devices as well as one: the offline replay
(:mod:`analytics.moments`) keeps a whole fleet's with the very same rule, and a fleet process
keeps its vehicles' in one :class:`RunningStack`, learning a pass's readings in one call.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Any, Protocol

import numpy as np

from federation.summary import ModelSummary

__all__ = ["Running", "RunningCovariance", "RunningStack", "covariance", "learn", "pair_order"]


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
        self._n: np.ndarray
        self._mean: np.ndarray
        self._squares: np.ndarray
        self._pairs: np.ndarray
        self.reset()

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
        return _summary(self.names, self._n, self._mean, self._squares, self._pairs,
                        self._order)

    def reset(self) -> None:
        """Forget every reading learned."""
        self._n = np.zeros(())
        self._mean, self._squares = np.zeros(len(self.names)), np.zeros(len(self.names))
        self._pairs = np.zeros(len(self._order[0]))


class Running(Protocol):
    """What a detector learns its recent readings in: a :class:`RunningCovariance`, or a
    vehicle's lane of a :class:`RunningStack`."""

    names: tuple[str, ...]

    def update(self, x: Mapping[Hashable, Any]) -> None: ...

    def summary(self) -> ModelSummary: ...

    def reset(self) -> None: ...


class RunningStack:
    """The running covariances of many vehicles of one process, learned together.

    Each vehicle learns in its own :meth:`lane`. A reading waits there until the vehicle
    learns its next one, or until its state is read; then every reading waiting in the stack
    is learned in one call of :func:`learn` on arrays: a pass over a fleet process's vehicles
    costs one call rather than one a vehicle, and each lane holds exactly the numbers a
    :class:`RunningCovariance` of its own would (the same arithmetic, element by element).

    Examples
    --------
    >>> rows = np.random.default_rng(2).random((4, 30, 3))
    >>> stack, alone = RunningStack("abc", 4), [RunningCovariance("abc") for _ in range(4)]
    >>> lanes = [stack.lane(i) for i in range(4)]
    >>> for step in range(30):
    ...     for lane, running, row in zip(lanes, alone, rows[:, step]):
    ...         lane.update(dict(zip("abc", row)))
    ...         running.update(dict(zip("abc", row)))
    >>> all(np.array_equal(lane.summary().cov, running.summary().cov)
    ...     for lane, running in zip(lanes, alone))
    True
    """

    def __init__(self, names: Sequence[str], size: int) -> None:
        self.names = tuple(names)
        self._order = pair_order(self.names)
        d = len(self.names)
        self._n = np.zeros(size)
        self._mean = np.zeros((size, d))
        self._squares = np.zeros((size, d))
        self._pairs = np.zeros((size, len(self._order[0])))
        self._rows = np.zeros((size, d))
        self._waiting: dict[int, None] = {}  # lanes with a reading not yet learned, in order

    def lane(self, index: int) -> StackLane:
        """Vehicle ``index``'s running covariance."""
        return StackLane(self, index)

    def put(self, index: int, row: np.ndarray) -> None:
        """Lane ``index``'s next reading, learned with the others' at the next pass."""
        if index in self._waiting:
            self._learn_waiting()
        self._rows[index] = row
        self._waiting[index] = None

    def summary(self, index: int) -> ModelSummary:
        """What lane ``index`` learned (its waiting reading too)."""
        if index in self._waiting:
            del self._waiting[index]
            self._learn((index,))
        return _summary(self.names, self._n[index], self._mean[index], self._squares[index],
                        self._pairs[index], self._order)

    def reset(self, index: int) -> None:
        """Lane ``index`` forgets every reading, its waiting one too."""
        self._waiting.pop(index, None)
        for state in (self._n, self._mean, self._squares, self._pairs):
            state[index] = 0.0

    def _learn_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        self._learn(np.fromiter(waiting, int, len(waiting)))

    def _learn(self, at: Sequence[int] | np.ndarray) -> None:
        at = np.asarray(at)
        self._n[at], self._mean[at], self._squares[at], self._pairs[at] = learn(
            self._n[at], self._mean[at], self._squares[at], self._pairs[at], self._rows[at],
            self._order)


class StackLane:
    """One vehicle's running covariance within a :class:`RunningStack`."""

    __slots__ = ("_index", "_stack", "names")

    def __init__(self, stack: RunningStack, index: int) -> None:
        self._stack, self._index, self.names = stack, index, stack.names

    def update(self, x: Mapping[Hashable, Any]) -> None:
        """Learn one complete reading (a value for every name)."""
        self._stack.put(self._index, np.fromiter((x[name] for name in self.names), float,
                                                 len(self.names)))

    def summary(self) -> ModelSummary:
        return self._stack.summary(self._index)

    def reset(self) -> None:
        self._stack.reset(self._index)


def _summary(names: tuple[str, ...], n: np.ndarray, mean: np.ndarray, squares: np.ndarray,
             pairs: np.ndarray, order: tuple[np.ndarray, np.ndarray]) -> ModelSummary:
    if not n:
        return ModelSummary.empty(names)
    return ModelSummary(names, float(n), mean.copy(), covariance(n, squares, pairs, order))
