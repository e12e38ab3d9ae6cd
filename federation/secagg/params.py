"""A round's plan: graph degree, Shamir threshold, the quorum, the fixed point and the noise.

Everything is derived from the fleet's :class:`SecAggConfig` and the number of vehicles the
round is planned for, so that every party computes the same plan and a vehicle can refuse a
round announced with any other.

**Graph and threshold.** With ``N`` vehicles, up to ``D = floor(tolerated_dropout * N)``
dropping out anywhere in the round and up to ``C = floor(tolerated_colluders * N)`` of them
colluding with the gateway, the degree ``k`` is the smallest even one for which

- each secret can be rebuilt: ``N * P[fewer than t of k neighbours survive] <= 2**-20``;
- no secret leaks to colluders: ``N * P[t or more of k neighbours collude] <= 2**-40``;
- the graph of honest survivors stays connected (else the gateway would learn the sums of
  its parts): ``N**2 * ((D + C) / N)**k <= 2**-40``, the union bound on two runs of ``k/2``
  consecutive vehicles gone from the ring;

and ``t`` the smallest threshold (at least 2) meeting the second, with neighbourhoods drawn
as without replacement (hypergeometric tails). Where no ``k < N - 1`` does, the graph is
complete.

**Quorum.** The round unmasks only a sum of at least ``min_inputs = N - D`` vehicles' inputs:
below it the noise in the sum would fall short of its promise, so every party refuses.

**Noise.** The sum must carry discrete Gaussian noise of standard deviation
``sigma_sum = multiplier * Delta`` (:func:`~federation.secagg.noise.distributed_noise_multiplier`
at the release's ``epsilon`` and ``delta``), with ``Delta = 2 (clip_norm * 2**f + sqrt(d))``
the L2 sensitivity in lattice units (replacing a vehicle's clipped vector moves the sum by
``2 * clip_norm``, and stochastic rounding each of the two by less than ``sqrt(d)``). The
colluders know their own shares, so the shares are sized for the honest inputs of the
smallest sum the round unmasks: ``sigma_share = sigma_sum / sqrt(min_inputs - C)``.

**Noise removed once the dropout is known** (after Dordis, Jiang et al., EuroSys 2024). A
round whose sum holds more than ``min_inputs`` inputs would carry more than the promised noise
(``sqrt(N / (N - D - C))`` times it with every vehicle present): the price of tolerating the
dropout. So a vehicle draws its share in parts: one sized for a sum of all ``N`` inputs
(variance ``sigma_sum**2 / (N - C)``), then one step for each of :data:`NOISE_LEVELS` counts
of inputs down to ``min_inputs`` (:attr:`RoundPlan.levels`), each step the variance that the
next smaller count needs more. Once the gateway has told it how many inputs ``s`` are in the
sum, it reveals the sum of the steps past the largest level ``n_j <= s``; the gateway subtracts
what each vehicle revealed. The parts kept, ``sigma_sum**2 / (n_j - C)`` a vehicle, summed
over the ``s - C >= n_j - C`` honest inputs, still carry ``sigma_sum``; a vehicle that reveals
nothing (it dropped out after its input) leaves all its noise in. What a vehicle reveals is
noise only: its masked input stays masked by its neighbours' pairwise masks.

**Fixed point.** ``f``, the bits after the point, is the largest (at most 24) for which the
sum cannot wrap: ``N (clip_norm * 2**f + 1) + 12 * sigma_share * sqrt(N) < 2**(ring_bits-1)``
(12 standard deviations: a wrap has probability below ``1e-32`` a coordinate).

>>> plan = RoundPlan.make(SecAggConfig(dimension=54, clip_norm=4.0, epsilon=0.548), 1000)
>>> plan.degree, plan.threshold, plan.min_inputs, plan.fraction_bits
(72, 24, 667, 18)
>>> round(plan.noise_multiplier, 2), plan.epsilon <= 0.548
(7.04, True)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from federation.secagg.noise import distributed_noise_multiplier, sum_epsilon, tau
from federation.secagg.ring import Ring

__all__ = ["CORRECTNESS_BITS", "NOISE_LEVELS", "SECURITY_BITS", "RoundPlan", "SecAggConfig",
           "release_epsilon"]

CORRECTNESS_BITS = 20
SECURITY_BITS = 40
MAX_FRACTION_BITS = 24
MIN_FRACTION_BITS = 8
TAIL_STDS = 12.0
NOISE_LEVELS = 4  # steps from no dropout to the tolerated dropout at which noise is sized
MAX_VEHICLES = 1_000_000
# A masked vector of 64-bit elements still fits one payload (64 KiB) in base64.
MAX_DIMENSION = 4096


@dataclass(frozen=True, slots=True)
class SecAggConfig:
    """What a fleet's secure rounds promise; public, the same for every party.

    ``epsilon`` and ``delta`` are one release's; ``epsilon = 0`` adds no noise (secure
    aggregation alone). ``clip_norm`` bounds each vehicle's vector in L2.
    """

    dimension: int
    clip_norm: float
    epsilon: float = 0.0
    delta: float = 1e-5
    tolerated_dropout: float = 1 / 3
    tolerated_colluders: float = 0.05
    ring_bits: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.dimension <= MAX_DIMENSION:
            raise ValueError(f"dimension must be in [1, {MAX_DIMENSION}], got {self.dimension}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be finite and > 0, got {self.clip_norm}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0) or not 0 < self.delta < 1:
            raise ValueError("need epsilon >= 0 (0: no noise) and 0 < delta < 1")
        if not 0 <= self.tolerated_dropout < 1 or not 0 <= self.tolerated_colluders < 1:
            raise ValueError("the tolerated dropout and colluders are fractions in [0, 1)")
        if self.tolerated_dropout + self.tolerated_colluders >= 1:
            raise ValueError("the dropouts and colluders together must leave someone honest")
        Ring(self.ring_bits, 0)


@dataclass(frozen=True)
class RoundPlan:
    """The plan of one round of ``vehicles`` vehicles; :meth:`make` derives it."""

    config: SecAggConfig
    vehicles: int
    degree: int
    threshold: int
    min_inputs: int
    colluders: int
    fraction_bits: int
    noise_multiplier: float
    share_noise_std: float

    @classmethod
    def make(cls, config: SecAggConfig, vehicles: int) -> RoundPlan:
        """The plan every party derives; ``ValueError`` if the round is too small to keep
        the config's promises or its sum cannot fit the ring."""
        return _plan(config, vehicles)

    @property
    def ring(self) -> Ring:
        return Ring(self.config.ring_bits, self.fraction_bits)

    @property
    def sensitivity(self) -> float:
        """The L2 sensitivity of the sum, in lattice units."""
        return 2.0 * (self.config.clip_norm * 2.0**self.fraction_bits
                      + math.sqrt(self.config.dimension))

    @cached_property
    def levels(self) -> tuple[int, ...]:
        """The counts of inputs a sum's noise is sized at, from every vehicle down to the
        quorum (:data:`NOISE_LEVELS` steps, fewer where they would repeat a count)."""
        dropped = self.vehicles - self.min_inputs
        return tuple(sorted({self.vehicles - dropped * j // NOISE_LEVELS
                             for j in range(NOISE_LEVELS + 1)}, reverse=True))

    def kept_level(self, inputs: int) -> int:
        """The index of the largest level of :attr:`levels` within a sum of ``inputs``:
        the parts of a vehicle's noise up to it stay in the sum, the later ones are removed."""
        return next(j for j, level in enumerate(self.levels) if level <= inputs)

    def level_variance(self, level: int) -> float:
        """The variance of a vehicle's noise kept at ``levels[level]``, in lattice units: the
        share that many inputs' honest part needs."""
        honest = self.levels[level] - self.colluders
        return (self.noise_multiplier * self.sensitivity) ** 2 / honest

    @cached_property
    def noise_parts(self) -> tuple[float, ...]:
        """The standard deviations of the parts of a vehicle's noise: for a sum of every
        vehicle, then a step to each next level; their variances add up to
        ``share_noise_std**2`` (0 without noise).

        >>> plan = RoundPlan.make(SecAggConfig(dimension=54, clip_norm=4.0, epsilon=0.548), 1000)
        >>> plan.levels, len(plan.noise_parts)
        ((1000, 917, 834, 751, 667), 5)
        >>> import math
        >>> math.isclose(math.hypot(*plan.noise_parts), plan.share_noise_std)
        True
        """
        if self.share_noise_std == 0:
            return (0.0,) * len(self.levels)
        variances = [self.level_variance(j) for j in range(len(self.levels))]
        steps = [b - a for a, b in itertools.pairwise(variances)]
        return (math.sqrt(variances[0]), *(math.sqrt(max(step, 0.0)) for step in steps))

    @property
    def sum_noise_std(self) -> float:
        """The noise of a sum of ``min_inputs - colluders`` honest shares, in the vector's
        units (each coordinate)."""
        honest = self.min_inputs - self.colluders
        return self.share_noise_std * math.sqrt(honest) * self.ring.resolution

    @cached_property
    def rho(self) -> float:
        """What one release costs a vehicle in zero-concentrated DP, with ``tau`` included
        (0 without noise): what its ledger records."""
        if self.share_noise_std == 0:
            return 0.0
        honest = self.min_inputs - self.colluders
        parts = [std for std in self.noise_parts if std > 0]
        return (self.sensitivity**2 / (2 * honest * self.share_noise_std**2)
                + tau(min(parts), self.vehicles * len(parts)) * self.config.dimension / 4)

    @cached_property
    def epsilon(self) -> float:
        """What one release costs a vehicle at the config's ``delta`` (0 without noise)."""
        return sum_epsilon(self.rho, self.config.delta) if self.rho else 0.0


@lru_cache(maxsize=64)
def release_epsilon(budget: float, releases: int, delta: float) -> float:
    """The ``epsilon`` of one secure release such that ``releases`` of them compose, in
    zCDP (their ``rho`` add up), to ``budget`` at ``delta``: the config's ``epsilon`` for a
    vehicle's lifetime ``budget`` spread over ``releases``.

    >>> round(release_epsilon(1.0, 3, 1e-5), 3)
    0.551
    """
    if releases < 1:
        raise ValueError(f"releases must be >= 1, got {releases}")
    total_rho = 1.0 / (2.0 * distributed_noise_multiplier(budget, delta) ** 2)
    return sum_epsilon(total_rho / releases, delta)


@lru_cache(maxsize=256)
def _plan(config: SecAggConfig, vehicles: int) -> RoundPlan:
    if not 2 <= vehicles <= MAX_VEHICLES:
        raise ValueError(f"a round needs 2 to {MAX_VEHICLES} vehicles, got {vehicles}")
    dropped = math.floor(config.tolerated_dropout * vehicles)
    colluders = math.floor(config.tolerated_colluders * vehicles)
    degree, threshold = _degree(vehicles, dropped, colluders)
    min_inputs = vehicles - dropped
    if threshold > min_inputs - 1 or min_inputs - colluders < 1:
        raise ValueError(f"{vehicles} vehicles are too few to tolerate {dropped} dropping "
                         f"out and {colluders} colluding")
    multiplier = (distributed_noise_multiplier(config.epsilon, config.delta)
                  if config.epsilon > 0 else 0.0)
    for bits in range(MAX_FRACTION_BITS, MIN_FRACTION_BITS - 1, -1):
        scaled_clip = config.clip_norm * 2.0**bits
        share_std = (multiplier * 2 * (scaled_clip + math.sqrt(config.dimension))
                     / math.sqrt(min_inputs - colluders))
        bound = vehicles * (scaled_clip + 1) + TAIL_STDS * share_std * math.sqrt(vehicles)
        if bound < 2.0 ** (config.ring_bits - 1):
            return RoundPlan(config, vehicles, degree, threshold, min_inputs, colluders, bits,
                             multiplier, share_std)
    raise ValueError(f"a sum of {vehicles} vectors does not fit {config.ring_bits} bits at "
                     f"a resolution of 2**-{MIN_FRACTION_BITS}: use a wider ring")


def _degree(vehicles: int, dropped: int, colluders: int) -> tuple[int, int]:
    others = vehicles - 1
    for degree in range(2, others, 2):
        threshold = _threshold(vehicles, colluders, degree)
        if threshold is None:
            continue
        lost = _tail(others, dropped, degree, degree - threshold + 1)
        gone = (dropped + colluders) / vehicles
        if (vehicles * lost <= 2.0**-CORRECTNESS_BITS
                and vehicles**2 * gone**degree <= 2.0**-SECURITY_BITS):
            return degree, threshold
    threshold = _threshold(vehicles, colluders, others)
    if threshold is None:
        raise ValueError(f"{vehicles} vehicles are too few to hide one among {colluders} "
                         "colluders")
    return others, threshold


def _threshold(vehicles: int, colluders: int, degree: int) -> int | None:
    """The smallest threshold (at least 2) that ``degree`` neighbours drawn from the others
    reach in colluders with probability at most ``2**-SECURITY_BITS / vehicles``."""
    for threshold in range(2, degree + 1):
        if vehicles * _tail(vehicles - 1, colluders, degree, threshold) <= 2.0**-SECURITY_BITS:
            return threshold
    return None


def _tail(population: int, marked: int, draws: int, at_least: int) -> float:
    """``P[X >= at_least]`` for ``X`` hypergeometric: marked ones among ``draws`` drawn
    without replacement from ``population``."""
    top = min(marked, draws)
    if at_least > top:
        return 0.0
    if at_least <= 0:
        return 1.0
    log_total = _log_comb(population, draws)
    logs = [_log_comb(marked, k) + _log_comb(population - marked, draws - k) - log_total
            for k in range(at_least, top + 1)]
    return float(np.exp(logs).sum())


def _log_comb(n: int, k: int) -> float:
    if not 0 <= k <= n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
