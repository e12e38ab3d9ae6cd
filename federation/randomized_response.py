"""Randomized response: a yes/no fact reported privately, and the fleet-wide rate estimated.

The classic coin-flip scheme: a vehicle flips a coin; on heads (probability ``truth_p``) it
answers truthfully, on tails it flips a second, fair coin and answers that instead. So
``P(yes | yes) = (1 + q) / 2`` and ``P(yes | no) = (1 - q) / 2`` with ``q = truth_p``, and
one answer is ``ln((1 + q) / (1 - q))``-DP (``ln 3`` for the classic ``q = 1/2``): whatever
the answer, the truth stays deniable. Over many vehicles the observed share of yes answers
``lam`` has expectation ``(1 - q) / 2 + q * rate``, so ``(lam - (1 - q) / 2) / q`` is an
unbiased estimate of the true rate among those who answered. Given the true answers, each
reported answer is a coin with probability ``(1 + q) / 2`` or ``(1 - q) / 2`` of yes, whose
variance is ``(1 - q^2) / 4`` either way; so the estimate's standard error is exactly
``sqrt((1 - q^2) / (4 n)) / q``, whatever the rate, and the interval is the estimate plus or
minus that many normal quantiles, clamped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from federation.accounting import Spend
from federation.privacy import NoiseSource

__all__ = ["RandomizedResponse", "RateEstimate"]


@dataclass(frozen=True, slots=True)
class RateEstimate:
    """The estimated share of yes, its confidence interval, and how many answered."""

    rate: float
    low: float
    high: float
    answers: int
    confidence: float


@dataclass(frozen=True, slots=True)
class RandomizedResponse:
    """The coin-flip scheme with probability ``truth_p`` of answering truthfully.

    Examples
    --------
    >>> rr = RandomizedResponse()
    >>> round(rr.epsilon, 4)  # ln 3
    1.0986
    >>> est = rr.estimate(yes=300, answers=1000)
    >>> round(est.rate, 2), round(est.low, 3), round(est.high, 3)
    (0.1, 0.046, 0.154)
    """

    truth_p: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.truth_p < 1:
            raise ValueError(f"truth_p must be in (0, 1), got {self.truth_p}")

    @classmethod
    def for_epsilon(cls, epsilon: float) -> RandomizedResponse:
        """The scheme whose one answer is ``epsilon``-DP.

        >>> round(RandomizedResponse.for_epsilon(math.log(3)).truth_p, 6)
        0.5
        """
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be finite and > 0, got {epsilon}")
        return cls(math.tanh(epsilon / 2))

    @property
    def epsilon(self) -> float:
        return math.log((1 + self.truth_p) / (1 - self.truth_p))

    @property
    def spend(self) -> Spend:
        """One answer, for the accountant: a fair coin with probability ``1 - truth_p``."""
        return Spend("randomized_response", 1.0 - self.truth_p)

    def respond(self, truth: bool, noise: NoiseSource) -> bool:
        """The randomized answer to report for ``truth``."""
        if noise.bernoulli(self.truth_p):
            return truth
        return noise.bernoulli(0.5)

    def estimate(self, yes: int, answers: int, confidence: float = 0.95) -> RateEstimate:
        """The debiased rate of true yes among ``answers`` reports of which ``yes`` said yes,
        and its interval at ``confidence``. The rate itself is not clamped (that would bias it);
        the interval is, to [0, 1], where the true rate lies.

        >>> est = RandomizedResponse().estimate(yes=0, answers=20)  # all said no: rate -0.5
        >>> round(est.rate, 2), est.low, est.high
        (-0.5, 0.0, 0.0)
        """
        if answers <= 0 or not 0 <= yes <= answers:
            raise ValueError(f"need 0 <= yes <= answers and answers > 0, got {yes}, {answers}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        q = self.truth_p
        rate = (yes / answers - (1 - q) / 2) / q
        half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(
            (1 - q * q) / (4 * answers)) / q
        low, high = (min(max(bound, 0.0), 1.0) for bound in (rate - half, rate + half))
        return RateEstimate(rate, low, high, answers, confidence)
