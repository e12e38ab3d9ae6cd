"""Privacy accounting: what each release costs, and what a sequence of them costs in total.

Every release a vehicle makes is one :class:`Spend`: a Gaussian or Laplace mechanism described
by its noise multiplier (noise scale divided by the sensitivity), or one randomized response.
The total of any sequence is composed with privacy loss distributions (PLD) from Google's
``dp-accounting`` library, which is tight for these mechanisms: ``k`` Gaussian rounds cost far
less than ``k`` times one round. The total is reported as epsilon at a fixed target delta.

Each PLD is the dominating pair of its mechanism for the replacement of one vehicle's data:
a shift of one noise multiplier for Gaussian and Laplace noise (sensitivity normalised to 1),
and a flipped true bit for randomized response.

A secure release (:mod:`federation.secagg`) is a ``"zcdp"`` spend: its parameter is the
``rho`` of the distributed discrete Gaussian, which is not the continuous Gaussian these PLDs
describe. Such spends compose by adding their ``rho`` and convert to epsilon with
dp-accounting's RDP accountant; beside spends of other kinds, the two totals are added, each
at half the ``delta`` (basic composition: sound, a little loose).

``dp-accounting`` is imported on first use: it takes about a second, which commands that do not
account (``fedfleet --help``, ``--privacy off``) should not pay.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["KINDS", "Spend", "epsilon_spent", "gaussian_noise_multiplier", "rounds_within",
           "zcdp_epsilon"]

KINDS = ("gaussian", "laplace", "randomized_response", "zcdp")
# Width of the privacy-loss grid; the library's estimate is pessimistic (never too small).
_DISCRETIZATION = 1e-3
# The most grid steps across a loss's reach: at a huge epsilon a 1e-3 grid would need
# gigabytes, so the grid coarsens instead (the estimate stays pessimistic).
_MAX_STEPS = 100_000


@dataclass(frozen=True, slots=True)
class Spend:
    """One release: its mechanism and the parameter that fixes its privacy loss.

    ``parameter`` is the noise multiplier (noise scale / sensitivity) for ``"gaussian"`` and
    ``"laplace"``, the probability of answering with a fair coin instead of the truth for
    ``"randomized_response"``, and ``rho`` for ``"zcdp"`` (a secure release).

    >>> Spend("laplace", 2.0).epsilon
    0.5
    >>> round(Spend("randomized_response", 0.5).epsilon, 4)  # the classic coin flip: ln 3
    1.0986
    """

    kind: str
    parameter: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown mechanism {self.kind!r}: use one of {KINDS}")
        if not (math.isfinite(self.parameter) and self.parameter > 0):
            raise ValueError(f"{self.kind} parameter must be finite and > 0, got {self.parameter}")
        if self.kind == "randomized_response" and self.parameter > 1:
            raise ValueError(f"randomized response parameter must be <= 1, got {self.parameter}")

    @property
    def epsilon(self) -> float:
        """The pure epsilon of this release alone (infinite for Gaussian noise)."""
        if self.kind == "laplace":
            return 1.0 / self.parameter
        if self.kind == "randomized_response":
            return math.log((2.0 - self.parameter) / self.parameter)
        return math.inf

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "parameter": self.parameter}


def _reach(spend: Spend, count: int) -> float:
    """About how far the privacy loss of ``count`` such releases extends (in nats)."""
    if spend.kind == "gaussian":  # loss ~ N(mu^2/2, mu) with mu = sqrt(count) / multiplier
        mu = math.sqrt(count) / spend.parameter
        return mu * mu / 2 + 10 * mu
    return count * spend.epsilon


def _pld(spend: Spend, count: int, interval: float) -> Any:
    from dp_accounting.pld import privacy_loss_distribution as pld

    if spend.kind == "gaussian":  # k Gaussian releases are one with sqrt(k) less noise
        return pld.from_gaussian_mechanism(
            spend.parameter / math.sqrt(count), value_discretization_interval=interval)
    if spend.kind == "laplace":
        one = pld.from_laplace_mechanism(spend.parameter, value_discretization_interval=interval)
    else:
        one = pld.from_randomized_response(spend.parameter, 2,
                                           value_discretization_interval=interval)
    return one.self_compose(count) if count > 1 else one


@lru_cache(maxsize=4096)
def _composed(counts: tuple[tuple[Spend, int], ...], delta: float) -> float:
    reach = sum(_reach(spend, count) for spend, count in counts)
    interval = max(_DISCRETIZATION, reach / _MAX_STEPS)
    total = None
    for spend, count in counts:
        part = _pld(spend, count, interval)
        total = part if total is None else total.compose(part)
    return 0.0 if total is None else float(total.get_epsilon_for_delta(delta))


def epsilon_spent(spends: Iterable[Spend], delta: float) -> float:
    """The total epsilon, at ``delta``, of all ``spends`` composed (0 for none).

    Results are cached, so a fleet whose vehicles spend alike composes each total once.

    >>> one = Spend("gaussian", 3.7306)
    >>> round(epsilon_spent([one], 1e-5), 3), round(epsilon_spent([one] * 4, 1e-5), 3)
    (1.0, 2.155)
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    counts = Counter(spends)
    rho = sum(s.parameter * n for s, n in counts.items() if s.kind == "zcdp")
    key = tuple(sorted(((s, n) for s, n in counts.items() if s.kind != "zcdp"),
                       key=lambda item: (item[0].kind, item[0].parameter)))
    if not rho:
        return _composed(key, delta)
    if not key:
        return zcdp_epsilon(rho, delta)
    return _composed(key, delta / 2) + zcdp_epsilon(rho, delta / 2)


@lru_cache(maxsize=4096)
def zcdp_epsilon(rho: float, delta: float) -> float:
    """The ``epsilon`` at ``delta`` of a ``rho``-zCDP release (dp-accounting, RDP: zCDP is
    Renyi DP of every order, that of a Gaussian of multiplier ``1 / sqrt(2 rho)``).

    >>> round(zcdp_epsilon(1 / (2 * 4.0454**2), 1e-5), 3)
    1.0
    """
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(1.0 / math.sqrt(2.0 * rho)))
    return float(accountant.get_epsilon(delta))


def rounds_within(spend: Spend, budget: float, delta: float, limit: int = 100_000) -> int:
    """How many times ``spend`` can be made before its total passes ``budget`` at ``delta``.

    >>> rounds_within(Spend("laplace", 1.0), 3.0, 1e-5)
    3
    """
    if epsilon_spent([spend], delta) > budget:
        return 0
    low, high = 1, 2
    while high <= limit and epsilon_spent([spend] * high, delta) <= budget:
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if epsilon_spent([spend] * mid, delta) <= budget else (low, mid)
    return low


@lru_cache(maxsize=256)
def gaussian_noise_multiplier(epsilon: float, delta: float) -> float:
    """The smallest noise multiplier (sigma / L2 sensitivity) that makes one Gaussian release
    (epsilon, delta)-DP, found by the accountant itself so that one round costs at most
    ``epsilon`` in the very accounting that adds the rounds up.

    The result is the analytic Gaussian mechanism of Balle & Wang (2018), tight for every
    epsilon, and smaller than the classical ``sqrt(2 ln(1.25/delta)) / epsilon``:

    >>> round(gaussian_noise_multiplier(1.0, 1e-5), 3)
    3.731
    >>> gaussian_noise_multiplier(1.0, 1e-5) < math.sqrt(2 * math.log(1.25 / 1e-5))
    True
    """
    if not (math.isfinite(epsilon) and epsilon > 0) or not 0 < delta < 1:
        raise ValueError(f"need a finite epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    import dp_accounting

    def accountant() -> Any:  # a grid relative to epsilon: as precise, and fast for large ones
        interval = _DISCRETIZATION * max(1.0, epsilon)
        return dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)

    return float(dp_accounting.calibrate_dp_mechanism(
        accountant, dp_accounting.GaussianDpEvent, epsilon, delta, tol=1e-7))
