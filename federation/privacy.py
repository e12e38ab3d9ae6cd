"""Differential privacy for model summaries: clipping, the Gaussian and Laplace mechanisms.

A summary is released relative to a public centre (the global model the vehicle last
received, or :func:`~federation.whitening.public_centre` before any), packed into one vector
in the centre's whitened coordinates (:mod:`federation.whitening`), clipped to norm
``clip_norm`` (L2 for Gaussian noise, L1 for Laplace noise) and noised there. Any two clipped
vectors differ by at most ``2 * clip_norm`` in that norm: that is the sensitivity to replacing
everything one vehicle released, whatever the features and however many readings. Because the
coordinates are the fleet's own units, the noise is relative: a noise of 0.05 is 5 % of the
fleet's spread in every direction, the smallest included. ``n`` is sent as is. See
``docs/PRIVACY.md`` for the threat model and the derivation.

Noise comes from a :class:`NoiseSource`. :class:`SecureNoise`, the default everywhere, draws
from OpenDP's samplers, which use the operating system's cryptographically secure generator
and sample exactly (no floating-point artefacts an attacker could read the secret from);
it cannot be seeded. Its Gaussian noise is sampled exactly on a fine grid rather than on
every float (see :class:`SecureNoise`): 10-20 times faster, and no less private.
:class:`SeededNoise` is for tests and benchmarks only.
"""

from __future__ import annotations

import abc
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from federation.accounting import Spend, epsilon_spent, gaussian_noise_multiplier
from federation.summary import ModelSummary
from federation.whitening import Whitening, public_centre

__all__ = [
    "MECHANISMS",
    "NOISE_SCALE",
    "PUBLIC_CLIP_FACTOR",
    "GaussianMechanism",
    "LaplaceMechanism",
    "Mechanism",
    "NoiseSource",
    "SecureNoise",
    "SeededNoise",
    "calibrated",
    "clip",
    "credence",
    "make_mechanism",
    "public_centre",
    "relative_noise",
    "resolvable",
    "row_norms",
]

MECHANISMS = ("gaussian", "laplace")
# A release about the public centre (before any fleet model) lies further from it: its clip
# norm is this many times the mechanism's (and its noise too: the privacy cost is the same).
PUBLIC_CLIP_FACTOR = 1.5
# The relative noise at which a summary counts for half its readings (:func:`credence`).
NOISE_SCALE = 0.3
# Secure Gaussian noise of standard deviation sigma is drawn on a grid no coarser than
# sigma * 2**-GRID_BITS / sqrt(d), at a standard deviation raised by 2**-SCALE_BITS: at least
# as private as exact noise for every sensitivity of at least sigma * 2**-SCALE_BITS, that is
# every noise multiplier up to MAX_NOISE_MULTIPLIER.
GRID_BITS = 40
SCALE_BITS = 20
MAX_NOISE_MULTIPLIER = 2.0**SCALE_BITS


class NoiseSource(abc.ABC):
    """Where privacy noise comes from."""

    @abc.abstractmethod
    def gaussian(self, values: np.ndarray, scale: float) -> np.ndarray:
        """``values`` plus independent normal noise of standard deviation ``scale``."""

    @abc.abstractmethod
    def laplace(self, values: np.ndarray, scale: float) -> np.ndarray:
        """``values`` plus independent Laplace noise of scale ``scale``."""

    @abc.abstractmethod
    def bernoulli(self, p: float) -> bool:
        """True with probability ``p``."""


class SecureNoise(NoiseSource):
    """Production noise: OpenDP's exact samplers on the system's secure random generator.

    OpenDP samples Gaussian noise exactly on a grid of ``2**k``; by default ``k`` is the
    smallest float's, and its arithmetic on integers of a thousand bits cost 66-580 µs a
    coordinate here (3.6-31 ms for a release of 54), whatever the batch: one call per vector
    already, and a call's own overhead is about 0.1 ms. On a grid of at most ``sigma *
    2**-40 / sqrt(d)`` it costs about 12 µs a coordinate. OpenDP's privacy map counts the
    rounding to that grid as extra sensitivity, at most ``sigma * 2**-40``; the standard
    deviation is raised by ``2**-20`` of itself to pay for it, so the noise is at least as
    private as exact Gaussian noise of ``sigma`` for every L2 sensitivity of at least ``sigma *
    2**-20`` (a noise multiplier up to :data:`MAX_NOISE_MULTIPLIER`, which
    :class:`GaussianMechanism` enforces). Laplace noise is sampled on every float.

    Examples
    --------
    >>> noisy = SecureNoise().gaussian(np.zeros(3), 1.0)
    >>> noisy.shape, bool(np.isfinite(noisy).all())
    ((3,), True)
    """

    def gaussian(self, values: np.ndarray, scale: float) -> np.ndarray:
        measurement = _opendp_gaussian(scale, len(values))
        return np.asarray(measurement(values.tolist()), dtype=float)

    def laplace(self, values: np.ndarray, scale: float) -> np.ndarray:
        return np.asarray(_opendp_laplace(scale)(values.tolist()), dtype=float)

    def bernoulli(self, p: float) -> bool:
        return secrets.randbelow(2**53) < p * 2**53


def _opendp() -> Any:
    import opendp.prelude as dp  # ~1 s to import: only where secure noise is drawn

    dp.enable_features("contrib")
    return dp


@lru_cache(maxsize=64)
def _opendp_gaussian(scale: float, size: int) -> Any:
    """OpenDP's Gaussian measurement for vectors of ``size``, on the grid :class:`SecureNoise`
    describes (the grid needs the size: its rounding adds up over coordinates)."""
    dp = _opendp()
    grid_exponent = math.floor(math.log2(scale / math.sqrt(max(size, 1)))) - GRID_BITS
    atoms = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=size)
    return dp.m.make_gaussian(atoms, dp.l2_distance(T=float),
                              scale=scale * (1.0 + 2.0**-SCALE_BITS), k=grid_exponent)


@lru_cache(maxsize=64)
def _opendp_laplace(scale: float) -> Any:
    dp = _opendp()
    atoms = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    return dp.m.make_laplace(atoms, dp.l1_distance(T=float), scale=scale)


class SeededNoise(NoiseSource):
    """Reproducible noise from a seeded NumPy generator: for tests and benchmarks only,
    since anyone who knows the seed can subtract the noise.

    Examples
    --------
    >>> a, b = SeededNoise(7), SeededNoise(7)
    >>> bool((a.gaussian(np.zeros(4), 2.0) == b.gaussian(np.zeros(4), 2.0)).all())
    True
    """

    def __init__(self, seed: int | Sequence[int]) -> None:
        self.rng = np.random.default_rng(seed)

    def gaussian(self, values: np.ndarray, scale: float) -> np.ndarray:
        return values + self.rng.normal(0.0, scale, values.shape)

    def laplace(self, values: np.ndarray, scale: float) -> np.ndarray:
        return values + self.rng.laplace(0.0, scale, values.shape)

    def bernoulli(self, p: float) -> bool:
        return bool(self.rng.random() < p)


def clip(vector: np.ndarray, bound: float, order: int = 2) -> np.ndarray:
    """Scale ``vector`` down to norm ``bound`` (L1 or L2) if it is longer.

    >>> clip(np.array([3.0, 4.0]), 1.0)
    array([0.6, 0.8])
    >>> clip(np.array([3.0, -1.0]), 2.0, order=1)
    array([ 1.5, -0.5])
    """
    norm = float(np.linalg.norm(vector, ord=order))
    return vector if norm <= bound else vector * (bound / norm)


def row_norms(vectors: np.ndarray, order: int = 2) -> np.ndarray:
    """The L1 or L2 norm of each row of ``vectors``, with no temporary as large as they are
    (a round's 50,000 rows: 1.5 ms rather than 27).

    >>> row_norms(np.array([[3.0, 4.0], [1.0, -1.0]])).tolist()
    [5.0, 1.4142135623730951]
    >>> row_norms(np.array([[3.0, -4.0]]), order=1).tolist()
    [7.0]
    """
    if order == 1:
        return np.asarray(np.abs(vectors).sum(axis=1))
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors))


@dataclass(frozen=True)
class Mechanism(abc.ABC):
    """Clip a summary around a public centre, then add calibrated noise."""

    epsilon: float
    delta: float
    clip_norm: float

    name = ""
    order = 2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be finite and > 0, got {self.clip_norm}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be finite and > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")

    @property
    def sensitivity(self) -> float:
        """How far two clipped offsets can be apart: twice the clip norm."""
        return 2.0 * self.clip_norm

    @property
    @abc.abstractmethod
    def scale(self) -> float:
        """The noise scale: standard deviation (Gaussian) or Laplace scale ``b``."""

    @property
    @abc.abstractmethod
    def noise_std(self) -> float:
        """The standard deviation of the noise added to each coordinate."""

    @property
    def spend(self) -> Spend:
        """What one release costs, for the accountant."""
        return Spend(self.name, self.scale / self.sensitivity)

    def about(self, public: bool) -> Mechanism:
        """The mechanism for a release about the public centre (``public``) or a fleet model:
        the first is clipped at :data:`PUBLIC_CLIP_FACTOR` times the clip norm, at the same
        epsilon and delta.

        >>> GaussianMechanism(1.0, 1e-5, 4.0).about(public=True).clip_norm
        6.0
        """
        return replace(self, clip_norm=self.clip_norm * PUBLIC_CLIP_FACTOR) if public else self

    def clip(self, summary: ModelSummary, centre: ModelSummary | Whitening) -> np.ndarray:
        """``summary`` packed in ``centre``'s whitened coordinates, clipped to ``clip_norm``."""
        whitening = centre if isinstance(centre, Whitening) else Whitening(centre)
        return clip(whitening.pack(summary), self.clip_norm, self.order)

    def clip_all(self, summaries: Sequence[ModelSummary], centre: ModelSummary) -> np.ndarray:
        """Each of ``summaries`` as :meth:`clip` makes it, one row each, in one pass."""
        return self.clip_rows(Whitening(centre).pack_all(summaries))

    def clip_rows(self, vectors: np.ndarray) -> np.ndarray:
        """Each row of ``vectors`` (summaries packed already) clipped to ``clip_norm``."""
        norms = row_norms(vectors, self.order)
        return vectors * np.minimum(1.0, self.clip_norm / np.maximum(norms, 1e-300))[:, None]

    def clipped(self, summary: ModelSummary, centre: ModelSummary) -> ModelSummary:
        """The clipped summary without noise: what a vehicle sends to a trusted gateway."""
        whitening = Whitening(centre)  # once: its decomposition is most of a clip's cost
        return whitening.unpack(self.clip(summary, whitening), summary.n)

    @abc.abstractmethod
    def add_noise(self, values: np.ndarray, noise: NoiseSource, scale: float) -> np.ndarray:
        """``values`` plus this mechanism's kind of noise at ``scale``."""

    def privatize(self, summary: ModelSummary, centre: ModelSummary,
                  noise: NoiseSource) -> ModelSummary:
        """The released summary: the clipped vector plus noise, unpacked (its covariance is
        left as the noise made it, so that averaging releases stays unbiased)."""
        whitening = Whitening(centre)
        vector = self.add_noise(self.clip(summary, whitening), noise, self.scale)
        return whitening.unpack(vector, summary.n)


def credence(noise_std: float, scale: float = NOISE_SCALE) -> float:
    """The share of its readings a summary with ``noise_std`` of relative privacy noise counts
    for: ``1 / (1 + (noise_std / scale)^2)``, half at ``scale``, never rising with noise, 0 for
    infinite noise. A vehicle weighs the fleet's model by it, and the gateway each private
    aggregate it merges, so that a round of one or two releases (whose noise dwarfs the model)
    cannot drag the model with the readings it claims.

    >>> credence(0.0), credence(0.3), round(credence(3.0), 4), credence(float("inf"))
    (1.0, 0.5, 0.0099, 0.0)
    """
    if noise_std == math.inf:
        return 0.0
    return 1.0 / (1.0 + (noise_std / scale) ** 2)


def resolvable(noise_std: float) -> float:
    """The narrowest spread, relative to the centre's, that an aggregate with ``noise_std`` of
    noise per whitened coordinate keeps: half its noise. A direction the noise makes narrower
    (or negative) is set to this, not squeezed to nothing, so that the next release, whitened
    by the model, stays bounded; the model's relative noise then says it is unresolved.

    >>> resolvable(0.0), resolvable(0.01)
    (0.0, 0.005)
    """
    return 0.5 * noise_std


def relative_noise(noise_std: float, summary: ModelSummary, centre: ModelSummary) -> float:
    """The noise of an aggregate made about ``centre`` relative to the aggregate's own spread:
    ``noise_std`` (in the centre's units) over each of the aggregate's variances relative to
    the centre's (no less than :func:`resolvable`), the root mean square over directions.
    Near the centre it is ``noise_std``; where the aggregate narrowed directions to what the
    noise cannot resolve it is large, and a vehicle then gives the model little weight.

    >>> names = ("a", "b")
    >>> centre = ModelSummary(names, 10.0, np.array([0.5, 0.5]), np.eye(2) * 0.01)
    >>> narrower = ModelSummary(names, 10.0, np.array([0.5, 0.5]), np.diag([0.01, 0.0025]))
    >>> [round(relative_noise(0.1, s, centre), 3) for s in (centre, narrower)]
    [0.1, 0.292]
    """
    if noise_std == 0.0:
        return 0.0
    spreads = np.maximum(Whitening(centre).spreads(summary), resolvable(noise_std))
    return float(noise_std * np.sqrt(np.mean(1.0 / spreads ** 2)))


@dataclass(frozen=True)
class GaussianMechanism(Mechanism):
    """The Gaussian mechanism, calibrated exactly for (epsilon, delta) on L2-clipped offsets.

    The noise multiplier is the analytic Gaussian mechanism's (Balle & Wang, 2018), found by
    the privacy accountant (:func:`~federation.accounting.gaussian_noise_multiplier`).

    Examples
    --------
    >>> mech = GaussianMechanism(epsilon=1.0, delta=1e-5, clip_norm=0.25)
    >>> round(mech.scale, 4), mech.spend.kind
    (1.8653, 'gaussian')
    >>> names = ("a", "b")
    >>> mine = ModelSummary.from_array(names, np.array([[0.2, 0.4], [0.4, 0.6]]))
    >>> noisy = mech.privatize(mine, public_centre(names), SeededNoise(7))
    >>> noisy.n, noisy.cov.shape, bool(np.allclose(noisy.cov, noisy.cov.T))
    (2.0, (2, 2), True)
    """

    name = "gaussian"
    order = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale > MAX_NOISE_MULTIPLIER * self.sensitivity:  # calibrated now: fails at once
            raise ValueError(f"epsilon {self.epsilon:g} at delta {self.delta:g} needs a noise "
                             f"multiplier above {MAX_NOISE_MULTIPLIER:g}: too small to use")

    @cached_property
    def scale(self) -> float:
        return gaussian_noise_multiplier(self.epsilon, self.delta) * self.sensitivity

    @property
    def noise_std(self) -> float:
        return self.scale

    def add_noise(self, values: np.ndarray, noise: NoiseSource, scale: float) -> np.ndarray:
        return noise.gaussian(values, scale)


@dataclass(frozen=True)
class LaplaceMechanism(Mechanism):
    """The Laplace mechanism: pure epsilon-DP on L1-clipped offsets, ``b = 2 clip_norm / eps``.

    ``delta`` is not used by the noise; it is the delta at which totals are reported.

    Examples
    --------
    >>> mech = LaplaceMechanism(epsilon=0.5, delta=1e-5, clip_norm=0.25)
    >>> mech.scale, round(mech.noise_std, 4), mech.spend.epsilon
    (1.0, 1.4142, 0.5)
    """

    name = "laplace"
    order = 1

    @property
    def scale(self) -> float:
        return self.sensitivity / self.epsilon

    @property
    def noise_std(self) -> float:
        return self.scale * math.sqrt(2.0)

    def add_noise(self, values: np.ndarray, noise: NoiseSource, scale: float) -> np.ndarray:
        return noise.laplace(values, scale)


def make_mechanism(name: str, epsilon: float, delta: float, clip_norm: float) -> Mechanism:
    """The mechanism called ``name`` (``"gaussian"`` or ``"laplace"``).

    >>> make_mechanism("laplace", 1.0, 1e-5, 0.5).scale
    1.0
    >>> make_mechanism("exponential", 1.0, 1e-5, 0.5)
    Traceback (most recent call last):
    ...
    ValueError: unknown mechanism 'exponential': use one of ('gaussian', 'laplace')
    """
    kinds: dict[str, type[Mechanism]] = {"gaussian": GaussianMechanism,
                                         "laplace": LaplaceMechanism}
    if name not in kinds:
        raise ValueError(f"unknown mechanism {name!r}: use one of {MECHANISMS}")
    return kinds[name](epsilon, delta, clip_norm)


@lru_cache(maxsize=64)
def calibrated(kind: str, budget: float, releases: int, delta: float,
               clip_norm: float) -> Mechanism:
    """The mechanism whose ``releases`` releases compose to ``budget``: the largest epsilon
    per release (to a relative 1e-3) for which they do, at ``delta``, by the very accountant a
    vehicle's ledger uses. An even split would leave most of a Gaussian budget unspent:
    ``k`` Gaussian releases compose far below ``k`` times one.

    >>> mechanism = calibrated("gaussian", 1.0, 3, 1e-5, 4.0)
    >>> total = epsilon_spent([mechanism.spend] * 3, 1e-5)
    >>> mechanism.epsilon > 1.0 / 3, 0.999 <= total <= 1.0
    (True, True)
    """
    def total(per_release: float) -> float:
        spend = make_mechanism(kind, per_release, delta, clip_norm).spend
        return epsilon_spent([spend] * releases, delta)

    if releases <= 1:
        return make_mechanism(kind, budget, delta, clip_norm)
    guess, step = _first_guess(kind, budget, releases, delta), 1.02
    if total(guess) <= budget:
        low, high = guess, guess * step
        while total(high) <= budget:
            low, high = high, high * step
    else:
        low, high = guess / step, guess
        while total(low) > budget:
            low, high = low / step, low
    while high / low > 1 + 1e-3:
        middle = math.sqrt(low * high)
        low, high = (middle, high) if total(middle) <= budget else (low, middle)
    return make_mechanism(kind, low, delta, clip_norm)


def _first_guess(kind: str, budget: float, releases: int, delta: float) -> float:
    """Close to the calibrated epsilon per release: ``k`` Gaussian releases at multiplier
    ``m`` are one at ``m / sqrt(k)``; Laplace releases compose nearly additively."""
    if kind != "gaussian":
        return budget / releases
    multiplier = gaussian_noise_multiplier(budget, delta) * math.sqrt(releases)
    return epsilon_spent([Spend("gaussian", multiplier)], delta)
