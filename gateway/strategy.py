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
- ``centred-clip`` (:class:`CentredClipping`): centred clipping with a radius the round sets,
  iterated: each vector's offset from the estimate (first the global model) shrunk to a
  factor of the round's median offset, averaged, and again from there.
- ``auto`` (:class:`ByPrivacy`, the default): centred clipping for exact updates, the
  norm-bounded mean for releases the gateway noises, the mean for locally noised ones.

With central privacy the gateway noises the combined vector. Its noise is calibrated to
:meth:`Strategy.sensitivity`: how far replacing one of ``K`` vectors, each clipped to
``clip_norm``, can move the combination. For the two means it is the mean's, ``2 C / K``. A
median or trimmed mean of each coordinate can move in every coordinate with a different
vehicle, so their bound is far larger (see each class), and so is centred clipping's, whose
radius moves with every vehicle: ``docs/SECURITY.md`` gives what that costs, and why the
default is what it is.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import numpy as np

from federation.privacy import row_norms
from federation.summary import ModelSummary

NORM_BOUND = 4.0  # whitened units: the default clip norm (docs/SECURITY.md)
# Centred clipping: the radius, times the round's median offset (chosen by measurement on
# sim:200 and C-MAPSS: docs/SECURITY.md); the passes at most, and the step, relative to the
# estimate, at which it has settled.
CLIP_FACTOR = 1.5
CLIP_PASSES = 100
CLIP_SETTLED = 1e-9
DEFAULT_STRATEGY = "auto"  # chosen by measurement: docs/SECURITY.md

__all__ = [
    "DEFAULT_STRATEGY", "STRATEGIES", "ByPrivacy", "CentredClipping", "CoordinateMedian",
    "ExactMerge", "NormBoundedMean", "Strategy", "TrimmedMean", "make_strategy",
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
        return np.asarray(_shrinking(vectors, self.bound) @ vectors / len(vectors))

    def readings(self, counts: np.ndarray) -> float:
        return _capped_sum(counts)

    def sensitivity(self, count: int, clip_norm: float, order: int = 2) -> float:
        bound = min(self.bound, clip_norm) if order == 2 else clip_norm
        return 2.0 * bound / count


class CentredClipping(Strategy):
    """Centred clipping with a radius the round sets (``centred-clip``), iterated.

    From the global model (the zero vector), each vehicle's offset is shrunk to at most
    ``factor`` times the round's median offset norm, and the estimate moves by their mean;
    then again from the new estimate, until it settles (a step under ``1e-9`` of it, or
    ``passes`` steps). Where it settles, the vehicles' shrunk offsets cancel out: those
    nearer than the radius pull as the mean would, those further off (one vehicle far away,
    or a group pulling one way) no harder than the radius: between the mean (a factor so
    large that nothing is shrunk) and the geometric median (a factor so small that every
    vehicle is, each pulling as hard as the others). The radius follows the round, so it
    suits updates of any spread: exact ones, whose offsets from the global model run to
    several whitened units, which a fixed bound of 4 would shrink nearly all.

    The radius moves with every vehicle, so replacing one can move every other's pull: the
    only bound that holds for every input is the ball the clipped vectors lie in (each step
    averages points of segments inside it), an L1 or L2 sensitivity of ``2 C``, ``K`` times
    the mean's.

    >>> honest = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> hostile = np.vstack([honest, [[40.0, 40.0]]])
    >>> CentredClipping().combine(hostile).round(2).tolist()  # the mean: [8.0, 8.0]
    [0.38, 0.38]
    >>> CentredClipping().sensitivity(25, 4.0)
    8.0
    """

    name = "centred-clip"

    def __init__(self, factor: float = CLIP_FACTOR, passes: int = CLIP_PASSES) -> None:
        if not (math.isfinite(factor) and factor > 0) or passes < 1:
            raise ValueError(f"factor must be finite and > 0 and passes >= 1, got {factor}, "
                             f"{passes}")
        self.factor, self.passes = factor, passes

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        estimate = np.zeros(vectors.shape[1])
        for _ in range(self.passes):
            offsets = vectors - estimate
            radius = self.factor * float(np.median(row_norms(offsets)))
            step = _shrinking(offsets, radius) @ offsets / len(offsets)
            estimate = estimate + step
            if np.linalg.norm(step) <= CLIP_SETTLED * (1.0 + np.linalg.norm(estimate)):
                break
        return estimate

    def readings(self, counts: np.ndarray) -> float:
        return _capped_sum(counts)

    def sensitivity(self, count: int, clip_norm: float, order: int = 2) -> float:
        return 2.0 * clip_norm


class ByPrivacy(Strategy):
    """Centred clipping for exact updates, the norm-bounded mean for releases the gateway
    noises, the mean for locally noised ones (``auto``, the default). Chosen by measurement
    (docs/SECURITY.md): on exact updates centred clipping keeps detection within 3 % of clean
    under every attack where the mean loses 9 %, and costs little when clean; under central
    noise the norm bound costs nothing and keeps the mean's noise (centred clipping's
    sensitivity is ``K`` times it); locally noised releases that lie are refused by validation,
    so there the mean stays.

    >>> [ByPrivacy().under(privacy).name for privacy in ("off", "local", "central")]
    ['centred-clip', 'mean', 'norm-bounded']
    """

    name = "auto"

    def __init__(self) -> None:
        self.mean, self.bounded, self.clipped = ExactMerge(), NormBoundedMean(), CentredClipping()

    def under(self, privacy: str) -> Strategy:
        return {"off": self.clipped, "central": self.bounded}.get(privacy, self.mean)

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        return self.mean.combine(vectors)

    def readings(self, counts: np.ndarray) -> float:
        return self.mean.readings(counts)


STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (ByPrivacy, ExactMerge, CoordinateMedian, TrimmedMean, NormBoundedMean,
                        CentredClipping)}


def _shrinking(vectors: np.ndarray, bound: float) -> np.ndarray:
    """The factor that shrinks each row of ``vectors`` to L2 norm ``bound`` if it is longer
    (times the rows, the rows shrunk; their mean as one product, without a copy of them)."""
    return np.minimum(1.0, bound / np.maximum(row_norms(vectors), 1e-300))


def _capped_sum(counts: np.ndarray) -> float:
    """The sum of the counts, none above twice their median: what a combination in which
    every vehicle weighs the same stands for."""
    return float(np.minimum(counts, 2.0 * np.median(counts)).sum())


def make_strategy(name: str = DEFAULT_STRATEGY) -> Strategy:
    """The strategy called ``name``, with its default settings.

    >>> make_strategy("median").name
    'median'
    >>> make_strategy("krum")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown strategy 'krum': use one of auto, mean, median, trimmed, norm-bounded, ...
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()
