"""Distributed discrete Gaussian noise: each vehicle adds a share, the sum carries it all.

Noise added to an integer vector must itself be an integer to survive the modular sum, so
each vehicle adds discrete Gaussian noise ``N_Z(0, sigma_share**2)`` (integers ``z`` with
probability proportional to ``exp(-z**2 / (2 sigma**2))``) to its fixed-point vector. Its own
share is far too small to protect it; only the sum, which no one sees unmasked but the
gateway, carries the noise of ``n`` shares. Kairouz, Liu & Steinke (ICML 2021, Theorem 1):
the sum of ``n`` such shares, for an L2 sensitivity ``Delta`` in lattice units, satisfies
``rho``-zero-concentrated DP with

    rho = Delta**2 / (2 n sigma_share**2) + tau d / 4,
    tau = 10 sum_{k=1}^{n-1} exp(-2 pi**2 sigma_share**2 k / (k + 1))

(``d`` the dimension): the continuous Gaussian's ``rho`` at the same total variance, plus a
term that is zero in floating point once ``sigma_share`` is a few units (ours are tens of
thousands). zCDP is Renyi DP of every order, so the calibration and the conversion to
``(epsilon, delta)`` are dp-accounting's RDP accountant with a Gaussian event of that
``rho``, not the tighter privacy-loss-distribution accounting of continuous central noise:
for one release at ``epsilon = 0.548, delta = 1e-5`` it costs 9 % more noise (multiplier
7.04 against 6.46).

Samplers: :class:`SecureIntegerNoise`, the default, is OpenDP's exact discrete Gaussian on
the system's secure generator; :class:`SeededIntegerNoise` is Canonne, Kamath & Steinke's
exact rejection sampler (NeurIPS 2020, Algorithm 3) on a seeded NumPy generator, for tests
and benchmarks only.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from federation.accounting import zcdp_epsilon

__all__ = ["IntegerNoise", "SecureIntegerNoise", "SeededIntegerNoise",
           "distributed_noise_multiplier", "sum_epsilon", "tau"]


class IntegerNoise(abc.ABC):
    """Where a vehicle's share of the noise comes from."""

    @abc.abstractmethod
    def discrete_gaussian(self, size: int, sigma: float) -> np.ndarray:
        """``size`` independent draws of ``N_Z(0, sigma**2)`` as 64-bit integers."""


class SecureIntegerNoise(IntegerNoise):
    """OpenDP's exact discrete Gaussian sampler on the system's secure generator.

    Examples
    --------
    >>> draws = SecureIntegerNoise().discrete_gaussian(3, 1000.0)
    >>> draws.shape, draws.dtype.name
    ((3,), 'int64')
    """

    def discrete_gaussian(self, size: int, sigma: float) -> np.ndarray:
        return np.asarray(_opendp_discrete_gaussian(sigma)([0] * size), dtype=np.int64)


@lru_cache(maxsize=64)
def _opendp_discrete_gaussian(sigma: float) -> Any:
    import opendp.prelude as dp  # ~1 s to import: only where noise is drawn

    dp.enable_features("contrib")
    integers = dp.vector_domain(dp.atom_domain(T="i64"))
    return dp.m.make_gaussian(integers, dp.l2_distance(T="i64"), scale=sigma)


class SeededIntegerNoise(IntegerNoise):
    """The discrete Gaussian from a seeded generator: tests and benchmarks only.

    Examples
    --------
    >>> a, b = SeededIntegerNoise(3), SeededIntegerNoise(3)
    >>> bool((a.discrete_gaussian(5, 40.0) == b.discrete_gaussian(5, 40.0)).all())
    True
    """

    def __init__(self, seed: int | Sequence[int]) -> None:
        self.rng = np.random.default_rng(seed)

    def discrete_gaussian(self, size: int, sigma: float) -> np.ndarray:
        if size == 0:
            return np.zeros(0, dtype=np.int64)
        t = math.floor(sigma) + 1
        keep: list[np.ndarray] = []
        while sum(len(k) for k in keep) < size:
            # A discrete Laplace proposal of scale t, accepted with the Gaussian's ratio.
            q = -math.expm1(-1.0 / t)
            y = self.rng.geometric(q, 2 * size) - self.rng.geometric(q, 2 * size)
            ratio = np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
            keep.append(y[self.rng.random(2 * size) < ratio])
        return np.concatenate(keep)[:size].astype(np.int64)


@lru_cache(maxsize=256)
def distributed_noise_multiplier(epsilon: float, delta: float) -> float:
    """The smallest ``sigma / Delta`` of the summed noise for which one release is
    ``(epsilon, delta)``-DP under zCDP (dp-accounting's RDP accountant).

    >>> round(distributed_noise_multiplier(1.0, 1e-5), 2)
    4.05
    """
    if not (math.isfinite(epsilon) and epsilon > 0) or not 0 < delta < 1:
        raise ValueError(f"need a finite epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    import dp_accounting

    return float(dp_accounting.calibrate_dp_mechanism(
        dp_accounting.rdp.RdpAccountant, dp_accounting.GaussianDpEvent, epsilon, delta,
        tol=1e-7))


def tau(sigma_share: float, shares: int) -> float:
    """Kairouz et al.'s ``tau`` for ``shares`` summed shares, bounded above by
    ``10 (n - 1) exp(-pi**2 sigma**2)`` (each ``k / (k + 1)`` is at least 1/2); where the
    shares differ (the parts of a vehicle's noise), ``sigma_share`` is the smallest of them.
    Either way it underflows to 0 once ``sigma_share`` is a few lattice units."""
    return 10.0 * max(shares - 1, 0) * math.exp(-(math.pi**2) * sigma_share**2)


def sum_epsilon(rho: float, delta: float) -> float:
    """The ``epsilon`` at ``delta`` of a ``rho``-zCDP release: the one conversion the ledger
    uses too (:func:`federation.accounting.zcdp_epsilon`).

    >>> round(sum_epsilon(1 / (2 * 4.0454**2), 1e-5), 3)
    1.0
    """
    return zcdp_epsilon(rho, delta)
