"""Differential privacy for model summaries: clipping, the Gaussian mechanism, accounting.

The privacy unit is one vehicle's contribution to one round. A vehicle expresses its round
summary as an offset from a public centre (the global model it last received), clips the
offset's L2 norm to ``clip_norm`` and adds Gaussian noise calibrated with the analytic
Gaussian mechanism (Balle & Wang, 2018), which is tight for every epsilon, unlike the classical
``sqrt(2 ln(1.25/delta)) / epsilon`` bound that only holds for epsilon < 1. Replacing one
vehicle's round data moves the clipped offset by at most ``2 * clip_norm``: that is the L2
sensitivity. The reading count ``n`` is published in the clear (participation and volume are
visible), so it is not noised.

Spending is composed across rounds by basic composition (epsilons and deltas add).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from federation.summary import ModelSummary

__all__ = ["GaussianMechanism", "Ledger", "analytic_gaussian_sigma", "clip_l2"]


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _delta_for(sigma: float, epsilon: float, sensitivity: float) -> float:
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    return _phi(a - b) - math.exp(epsilon) * _phi(-a - b)


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """The smallest noise standard deviation that makes a Gaussian mechanism (epsilon, delta)-DP.

    >>> round(analytic_gaussian_sigma(1.0, 1e-5, 1.0), 3)
    3.731
    >>> classical = math.sqrt(2 * math.log(1.25 / 1e-5)) / 1.0
    >>> analytic_gaussian_sigma(1.0, 1e-5, 1.0) < classical
    True
    """
    if not epsilon > 0 or not 0 < delta < 1 or not sensitivity > 0:
        raise ValueError("need epsilon > 0, 0 < delta < 1 and sensitivity > 0")
    low, high = 1e-6 * sensitivity, sensitivity
    while _delta_for(high, epsilon, sensitivity) > delta:
        low, high = high, high * 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _delta_for(mid, epsilon, sensitivity) > delta else (low, mid)
    return high


def clip_l2(vector: np.ndarray, bound: float) -> tuple[np.ndarray, bool]:
    """Scale ``vector`` down to L2 norm ``bound`` if it is longer; say whether it was clipped.

    >>> clip_l2(np.array([3.0, 4.0]), 1.0)
    (array([0.6, 0.8]), True)
    """
    norm = float(np.linalg.norm(vector))
    if norm <= bound:
        return vector, False
    return vector * (bound / norm), True


def _pack(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    return np.concatenate([mean, cov[np.triu_indices(len(mean))]])


def _unpack(vector: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    cov = np.zeros((d, d))
    cov[np.triu_indices(d)] = vector[d:]
    return vector[:d], cov + np.triu(cov, 1).T


@dataclass(frozen=True)
class GaussianMechanism:
    """Clip a summary around a public centre and add calibrated Gaussian noise.

    Examples
    --------
    >>> mech = GaussianMechanism(epsilon=1.0, delta=1e-5, clip_norm=0.25)
    >>> round(mech.sigma, 4)
    1.8653
    >>> names = ("a", "b")
    >>> mine = ModelSummary.from_array(names, np.array([[0.2, 0.4], [0.4, 0.6]]))
    >>> noisy = mech.privatize(mine, ModelSummary.empty(names), np.random.default_rng(7))
    >>> noisy.n, noisy.cov.shape, bool(np.allclose(noisy.cov, noisy.cov.T))
    (2.0, (2, 2), True)
    """

    epsilon: float
    delta: float
    clip_norm: float

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        analytic_gaussian_sigma(self.epsilon, self.delta, 2 * self.clip_norm)

    @cached_property
    def sigma(self) -> float:
        """Noise standard deviation per coordinate: sensitivity is twice the clip norm."""
        return analytic_gaussian_sigma(self.epsilon, self.delta, 2 * self.clip_norm)

    def privatize(
        self, summary: ModelSummary, centre: ModelSummary, rng: np.random.Generator
    ) -> ModelSummary:
        """The noised summary: ``centre + clip(summary - centre) + N(0, sigma^2)``."""
        d = len(summary.features)
        offset = _pack(summary.mean, summary.cov) - _pack(centre.mean, centre.cov)
        clipped, _ = clip_l2(offset, self.clip_norm)
        noisy = _pack(centre.mean, centre.cov) + clipped + rng.normal(0, self.sigma, len(offset))
        mean, cov = _unpack(noisy, d)
        return ModelSummary(summary.features, summary.n, mean, cov)


@dataclass
class Ledger:
    """What one vehicle has spent, composed by basic composition.

    >>> ledger = Ledger()
    >>> ledger.spend(0.5, 1e-6); ledger.spend(0.5, 1e-6)
    >>> ledger.epsilon_total, ledger.rounds
    (1.0, 2)
    """

    epsilon_total: float = 0.0
    delta_total: float = 0.0
    rounds: int = 0

    def spend(self, epsilon: float, delta: float) -> None:
        self.epsilon_total += epsilon
        self.delta_total += delta
        self.rounds += 1
