"""The federated model's summary and its merge rule.

A vehicle's model is the running mean and covariance of its scaled readings, learned with
River's Welford statistics. Its summary is ``(n, mean, cov)``: the number of readings, their
mean vector and their population covariance matrix (``ddof=0``). Two summaries merge
*exactly* by the parallel rule of Chan, Golub and LeVeque (the rule behind River's
``stats.Cov.__iadd__``): with ``d = mean_b - mean_a`` and ``n = n_a + n_b``,

    mean = mean_a + d * n_b / n
    cov  = (n_a * cov_a + n_b * cov_b) / n + outer(d, d) * n_a * n_b / n**2

so the merge of the summaries of data split across vehicles equals the summary of the pooled
data, up to floating-point rounding. Each summary weighs by the readings it represents.

The rule is written once, in :func:`merge`, on :class:`Moments`: the arrays of one summary, or
of many stacked along leading axes (many vehicles' models refreshed at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from river import covariance

__all__ = ["ModelSummary", "Moments", "merge", "merge_all", "upper_triangle"]


@lru_cache(maxsize=16)
def upper_triangle(d: int, diagonal: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The row and column indices of a ``d`` x ``d`` matrix's upper triangle, row by row,
    with or without its diagonal; read-only, since every caller shares them.

    >>> [i.tolist() for i in upper_triangle(2)], [i.tolist() for i in upper_triangle(2, False)]
    ([[0, 0, 1], [0, 1, 1]], [[0], [1]])
    """
    rows, columns = np.triu_indices(d, 0 if diagonal else 1)
    rows.flags.writeable = columns.flags.writeable = False
    return rows, columns


class Moments(NamedTuple):
    """Readings, mean and population covariance as arrays: ``n`` of shape ``S``, ``mean`` of
    ``S + (d,)`` and ``cov`` of ``S + (d, d)``, for one summary (``S = ()``) or a stack."""

    n: np.ndarray
    mean: np.ndarray
    cov: np.ndarray


def merge(a: Moments, b: Moments) -> Moments:
    """The exact merge of ``a`` and ``b``, pair by pair; where one side holds no readings, the
    other is returned unchanged (as :meth:`ModelSummary.__add__` does).

    >>> rng = np.random.default_rng(0)
    >>> rows = rng.random((2, 5, 3))  # two vehicles' five readings
    >>> one = Moments(np.array([5.0, 0.0]), rows.mean(axis=1), np.zeros((2, 3, 3)))
    >>> two = ModelSummary.from_array("abc", rows[1]).moments
    >>> both = merge(one, Moments(*(np.stack([v, v]) for v in two)))
    >>> both.n.tolist(), bool(np.array_equal(both.mean[1], two.mean))
    ([10.0, 5.0], True)
    """
    n, mean, cov = _pooled(a, b, np.where(a.n + b.n > 0, a.n + b.n, 1.0))
    keep_a, keep_b = b.n == 0, (a.n == 0) & (b.n != 0)
    mean = np.where(keep_a[..., None], a.mean, np.where(keep_b[..., None], b.mean, mean))
    cov = np.where(keep_a[..., None, None], a.cov,
                   np.where(keep_b[..., None, None], b.cov, cov))
    return Moments(n, mean, cov)


def _pooled(a: Moments, b: Moments, n: np.ndarray) -> Moments:
    """The rule of the module for ``n = a.n + b.n`` (given, so a stack may avoid 0)."""
    shift = b.mean - a.mean
    mean = a.mean + shift * (b.n / n)[..., None]
    cov = (a.n[..., None, None] * a.cov + b.n[..., None, None] * b.cov) / n[..., None, None]
    cov += shift[..., :, None] * shift[..., None, :] * (a.n * b.n / n**2)[..., None, None]
    return Moments(a.n + b.n, mean, cov)


def merge_all(stack: Moments) -> Moments:
    """The exact merge of every summary of a stack (leading axis), as one: pairs merged by
    :func:`merge`, halving the stack each time, so ``K`` summaries cost ``log2 K`` array steps.

    >>> rng = np.random.default_rng(1)
    >>> rows = rng.random((7, 4, 2))  # seven vehicles' four readings
    >>> parts = [ModelSummary.from_array("ab", r).moments for r in rows]
    >>> whole = merge_all(Moments(*(np.stack(v) for v in zip(*parts))))
    >>> pooled = ModelSummary.from_array("ab", rows.reshape(-1, 2))
    >>> float(whole.n), bool(np.allclose(whole.cov, pooled.cov, rtol=0, atol=1e-15))
    (28.0, True)
    """
    while len(stack.n) > 1:
        if len(stack.n) % 2:  # an empty summary to pair with the last
            stack = Moments(*(np.concatenate([v, np.zeros_like(v[:1])]) for v in stack))
        stack = merge(Moments(*(v[0::2] for v in stack)), Moments(*(v[1::2] for v in stack)))
    return Moments(*(v[0] for v in stack))


@dataclass(frozen=True, eq=False)
class ModelSummary:
    """Mean and covariance of ``n`` scaled readings over the named features.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> data = rng.random((300, 3))
    >>> names = ("a", "b", "c")
    >>> parts = [ModelSummary.from_array(names, chunk) for chunk in np.split(data, [50, 120])]
    >>> merged = parts[0] + parts[1] + parts[2]
    >>> pooled = ModelSummary.from_array(names, data)
    >>> merged.n, bool(np.allclose(merged.cov, pooled.cov, rtol=0, atol=1e-15))
    (300.0, True)
    """

    features: tuple[str, ...]
    n: float
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def empty(cls, features: Sequence[str]) -> ModelSummary:
        d = len(features)
        return cls(tuple(features), 0.0, np.zeros(d), np.zeros((d, d)))

    @classmethod
    def from_array(cls, features: Sequence[str], rows: np.ndarray) -> ModelSummary:
        """The summary of a block of rows (one column per feature)."""
        if len(rows) == 0:
            return cls.empty(features)
        mean = rows.mean(axis=0)
        centred = rows - mean
        return cls(tuple(features), float(len(rows)), mean, centred.T @ centred / len(rows))

    @classmethod
    def from_river(
        cls, stats: covariance.EmpiricalCovariance, features: Sequence[str]
    ) -> ModelSummary:
        """Read a River ``EmpiricalCovariance`` (``ddof=0``) learned on complete readings."""
        if not stats.matrix:
            return cls.empty(features)
        d = len(features)
        mean, cov = np.zeros(d), np.zeros((d, d))
        for i, a in enumerate(features):
            var = stats[a, a]
            mean[i], cov[i, i] = var.mean.get(), var.get()
            for j in range(i + 1, d):
                cov[i, j] = cov[j, i] = stats[a, features[j]].get()
        return cls(tuple(features), float(stats[features[0], features[0]].mean.n), mean, cov)

    def __add__(self, other: ModelSummary) -> ModelSummary:
        if self.features != other.features:
            raise ValueError("cannot merge summaries over different features")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n, mean, cov = _pooled(self.moments, other.moments, np.asarray(self.n + other.n))
        return ModelSummary(self.features, float(n), mean, cov)

    @classmethod
    def merged(cls, features: Sequence[str], summaries: Sequence[ModelSummary]) -> ModelSummary:
        """All of ``summaries`` (over ``features``) merged by the exact rule, in array steps
        (:func:`merge_all`): the same as adding them one by one, up to rounding."""
        if any(s.features != tuple(features) for s in summaries):
            raise ValueError("cannot merge summaries over different features")
        if not summaries:
            return cls.empty(features)
        n, mean, cov = merge_all(Moments(np.array([s.n for s in summaries], dtype=float),
                                         np.array([s.mean for s in summaries]),
                                         np.array([s.cov for s in summaries])))
        return cls(tuple(features), float(n), mean, cov)

    @property
    def moments(self) -> Moments:
        """The summary's arrays, for :func:`merge` and the other array rules."""
        return Moments(np.asarray(self.n), self.mean, self.cov)

    def feasible(self) -> ModelSummary:
        """The nearest summary scaled readings could have: every mean in [0, 1], and no
        variance above 1/4 (Popoviciu's bound for values in [0, 1]; a channel beyond it is
        scaled down with its covariances, so the matrix stays positive semi-definite).

        >>> wild = ModelSummary(("a", "b"), 5.0, np.array([1.4, 0.5]), np.diag([1.0, 0.01]))
        >>> fixed = wild.feasible()
        >>> fixed.mean.tolist(), np.diag(fixed.cov).tolist()
        ([1.0, 0.5], [0.25, 0.01])
        """
        scale = np.sqrt(np.minimum(1.0, 0.25 / np.maximum(np.diag(self.cov), 1e-300)))
        return ModelSummary(self.features, self.n, np.clip(self.mean, 0.0, 1.0),
                            self.cov * np.outer(scale, scale))

    def weighted(self, n: float) -> ModelSummary:
        """The same distribution, counted as ``n`` readings (a prior of bounded weight)."""
        return ModelSummary(self.features, float(n), self.mean, self.cov)

    def to_state(self) -> dict[str, object]:
        """The JSON-ready state carried in messages."""
        return {"n": self.n, "mean": self.mean.tolist(), "cov": self.cov.tolist()}
