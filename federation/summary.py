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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from river import covariance

__all__ = ["ModelSummary"]


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
        n = self.n + other.n
        shift = other.mean - self.mean
        mean = self.mean + shift * (other.n / n)
        cov = (self.n * self.cov + other.n * other.cov) / n
        cov += np.outer(shift, shift) * (self.n * other.n / n**2)
        return ModelSummary(self.features, n, mean, cov)

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
