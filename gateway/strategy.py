"""How a round's updates become the next global model.

A strategy is the server's policy in one small class (the shape Flower gives it), kept apart
from any network so that it can be tested on summaries alone. Each combines a round's
releases, as vectors in the whitened coordinates of the round's base model
(:mod:`federation.whitening`), into one vector, every vehicle weighing the same:

- ``mean`` (:class:`ExactMerge`): their mean; exact updates are merged by the exact rule,
  each weighing by its readings. Fast, and as exact as the data, but one vehicle moves it
  as far as validation and clipping let it.
- ``median`` (:class:`CoordinateMedian`): the median of each coordinate.
- ``trimmed`` (:class:`TrimmedMean`): the mean of each coordinate after dropping the
  ``trim`` share of the largest and of the smallest values.
- ``norm-bounded`` (:class:`NormBoundedMean`): the mean after shrinking every vector to at
  most ``bound`` whitened units.
- ``auto`` (:class:`ByPrivacy`, the default): the norm-bounded mean for releases the gateway
  noises, the mean for the rest.

With central privacy the gateway noises the combined vector. Its noise is calibrated to
:meth:`Strategy.sensitivity`: how far replacing one of ``K`` vectors, each clipped to
``clip_norm``, can move the combination. For the two means it is the mean's, ``2 C / K``. A
median or trimmed mean of each coordinate can move in every coordinate with a different
vehicle, so their bound is far larger (see each class): ``docs/SECURITY.md`` gives what that
costs, and why the default is what it is.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import numpy as np

from federation.summary import ModelSummary

NORM_BOUND = 4.0  # whitened units: the default clip norm (docs/SECURITY.md)
DEFAULT_STRATEGY = "auto"  # chosen by measurement: docs/SECURITY.md

__all__ = [
    "DEFAULT_STRATEGY", "STRATEGIES", "ByPrivacy", "CoordinateMedian", "ExactMerge",
    "NormBoundedMean", "Strategy", "TrimmedMean", "make_strategy",
]


class Strategy(abc.ABC):
    """Combine one round's releases, and merge the result into the global model state."""

    name = ""
    exact = False  # whether exact updates are merged one by one by the exact rule

    @abc.abstractmethod
    def combine(self, vectors: np.ndarray) -> np.ndarray:
        """One vector from the rows of ``vectors`` (one per vehicle, at least one)."""

    def under(self, privacy: str) -> Strategy:
        """The strategy for releases of ``privacy`` (``"off"``, ``"local"``, ``"central"``)."""
        return self

    def readings(self, counts: np.ndarray) -> float:
        """The readings the combination stands for: ``K`` times the combined count of one
        vehicle (for the mean, their sum), so that no count outweighs the global model more
        than the strategy lets its vector move it."""
        return float(len(counts) * self.combine(counts[:, None])[0])

    def sensitivity(self, count: int, clip_norm: float, order: int = 2) -> float:
        """How far (in the L1 or L2 norm ``order``) replacing one of ``count`` vectors, each of
        norm at most ``clip_norm`` in it, can move :meth:`combine`: the mean's ``2 C / K``."""
        return 2.0 * clip_norm / count

    def aggregate(self, current: ModelSummary, updates: Sequence[ModelSummary]) -> ModelSummary:
        """Merge summaries into the global one by the exact rule, weighting by readings.

        The global model after any number of rounds summarises every reading ever contributed,
        exactly as if those readings had been pooled (before privacy noise).

        >>> import numpy as np
        >>> names = ("a", "b")
        >>> one = ModelSummary.from_array(names, np.array([[0.0, 1.0], [2.0, 3.0]]))
        >>> two = ModelSummary.from_array(names, np.array([[4.0, 5.0]]))
        >>> merged = ExactMerge().aggregate(ModelSummary.empty(names), [one, two])
        >>> merged.n, merged.mean.tolist()
        (3.0, [2.0, 3.0])
        """
        return current + ModelSummary.merged(current.features, updates)


class ExactMerge(Strategy):
    """The mean, and the exact merge of exact updates (``mean``).

    >>> ExactMerge().combine(np.array([[0.0, 2.0], [1.0, 4.0], [9.0, 0.0]])).round(2).tolist()
    [3.33, 2.0]
    """

    name = "mean"
    exact = True

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors.mean(axis=0))

    def readings(self, counts: np.ndarray) -> float:
        return float(counts.sum())


class CoordinateMedian(Strategy):
    """The median of each coordinate (``median``).

    Replacing one vector moves each coordinate's median by at most the gap between two
    values of that coordinate, ``2 max_k |x_kj|``, and the sum over coordinates of the squares
    of those is at most ``4 K C^2``: an L2 sensitivity of ``2 C sqrt(K)`` (L1: ``2 C K``).

    >>> CoordinateMedian().combine(np.array([[0.0, 2.0], [1.0, 4.0], [9.0, 0.0]])).tolist()
    [1.0, 2.0]
    >>> round(CoordinateMedian().sensitivity(25, 4.0), 1)
    40.0
    """

    name = "median"

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(np.median(vectors, axis=0))

    def sensitivity(self, count: int, clip_norm: float, order: int = 2) -> float:
        return 2.0 * clip_norm * (math.sqrt(count) if order == 2 else count)


class TrimmedMean(Strategy):
    """The mean of each coordinate without its ``floor(trim K)`` largest and smallest values
    (``trimmed``).

    Replacing one vector changes at most one kept value of each coordinate, by at most
    ``2 max_k |x_kj|``, over the ``K - 2t`` kept: an L2 sensitivity of ``2 C sqrt(K) / (K - 2t)``
    (L1: ``2 C K / (K - 2t)``); with nothing trimmed it is the mean's.

    >>> TrimmedMean(0.2).combine(np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])).tolist()
    [2.0]
    >>> round(TrimmedMean(0.2).sensitivity(25, 4.0), 2)
    2.67
    """

    name = "trimmed"

    def __init__(self, trim: float = 0.2) -> None:
        if not 0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}")
        self.trim = trim

    def _cut(self, count: int) -> int:
        return min(int(self.trim * count), (count - 1) // 2)

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        cut = self._cut(len(vectors))
        ordered = np.sort(vectors, axis=0)
        return np.asarray(ordered[cut:len(vectors) - cut].mean(axis=0))

    def sensitivity(self, count: int, clip_norm: float, order: int = 2) -> float:
        cut = self._cut(count)
        if cut == 0:
            return super().sensitivity(count, clip_norm, order)
        return 2.0 * clip_norm * (math.sqrt(count) if order == 2 else count) / (count - 2 * cut)


class NormBoundedMean(Strategy):
    """The mean after shrinking each vector to L2 norm ``bound`` (``norm-bounded``): no vehicle
    moves the model by more than ``bound / K`` whitened units. Its L2 sensitivity is the mean's
    at the smaller of ``bound`` and the clip norm, ``2 min(B, C) / K``; its L1 sensitivity
    stays the mean's (an L2 bound does not bound the L1 norm more tightly than the clip).

    >>> NormBoundedMean(1.0).combine(np.array([[0.5, 0.0], [30.0, 40.0]])).tolist()
    [0.55, 0.4]
    >>> NormBoundedMean(2.0).sensitivity(10, 4.0), NormBoundedMean(2.0).sensitivity(10, 4.0, 1)
    (0.4, 0.8)
    """

    name = "norm-bounded"

    def __init__(self, bound: float = NORM_BOUND) -> None:
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"bound must be finite and > 0, got {bound}")
        self.bound = bound

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(vectors, axis=1)
        shrink = np.minimum(1.0, self.bound / np.maximum(norms, 1e-300))
        return np.asarray((vectors * shrink[:, None]).mean(axis=0))

    def readings(self, counts: np.ndarray) -> float:
        """The sum of the counts, none above twice their median."""
        return float(np.minimum(counts, 2.0 * np.median(counts)).sum())

    def sensitivity(self, count: int, clip_norm: float, order: int = 2) -> float:
        bound = min(self.bound, clip_norm) if order == 2 else clip_norm
        return 2.0 * bound / count


class ByPrivacy(Strategy):
    """The norm-bounded mean for releases the gateway noises, the mean for the rest (``auto``,
    the default). Chosen by measurement (docs/SECURITY.md): under central noise the norm bound
    costs nothing and keeps the mean's noise; on exact and locally noised updates every robust
    strategy tried costs alarms (and local noise is far beyond any norm bound), so there the
    mean stays, and robustness is a choice (``trimmed``).

    >>> ByPrivacy().under("off").name, ByPrivacy().under("central").name
    ('mean', 'norm-bounded')
    """

    name = "auto"
    exact = True

    def __init__(self) -> None:
        self.mean, self.bounded = ExactMerge(), NormBoundedMean()

    def under(self, privacy: str) -> Strategy:
        return self.bounded if privacy == "central" else self.mean

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        return self.mean.combine(vectors)

    def readings(self, counts: np.ndarray) -> float:
        return self.mean.readings(counts)


STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (ByPrivacy, ExactMerge, CoordinateMedian, TrimmedMean, NormBoundedMean)}


def make_strategy(name: str = DEFAULT_STRATEGY) -> Strategy:
    """The strategy called ``name``, with its default settings.

    >>> make_strategy("median").name
    'median'
    >>> make_strategy("krum")
    Traceback (most recent call last):
    ...
    ValueError: unknown strategy 'krum': use one of auto, mean, median, trimmed, norm-bounded
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
