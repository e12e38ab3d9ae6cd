"""The fleet-wide alert rate, estimated from vehicles' randomized-response answers.

Each update may carry a randomized answer to "did you raise an alert on day D?". The gateway
keeps each vehicle's latest answer per day and estimates, for the most recent day, the share
of vehicles that did, with the debiased estimator and its confidence interval
(:mod:`federation.randomized_response`). It never learns which vehicle had an alert from an
answer alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from federation.messages import AlertReport
from federation.randomized_response import RandomizedResponse, RateEstimate

__all__ = ["AlertRate", "DayRate"]

_DAYS_KEPT = 7


@dataclass(frozen=True, slots=True)
class DayRate:
    """The estimated alert rate of one day of the vehicles' reading clocks."""

    day: int
    estimate: RateEstimate


@dataclass
class AlertRate:
    """Latest randomized answers per day and vehicle, and the rate they estimate.

    Examples
    --------
    >>> rate = AlertRate()
    >>> for i in range(100):
    ...     rate.add(f"veh-{i:04d}", AlertReport(day=3, answer=i < 40, epsilon=1.0986))
    >>> found = rate.latest()
    >>> found.day, round(found.estimate.rate, 2), found.estimate.answers
    (3, 0.3, 100)
    """

    answers: dict[int, dict[str, AlertReport]] = field(default_factory=dict)

    def add(self, vehicle_id: str, report: AlertReport) -> None:
        self.answers.setdefault(report.day, {})[vehicle_id] = report
        for day in sorted(self.answers)[:-_DAYS_KEPT]:
            del self.answers[day]

    def latest(self, confidence: float = 0.95) -> DayRate | None:
        """The estimate for the most recent day anyone answered for (``None`` before any).

        Answers given at a different epsilon than the day's most common one are left out: one
        estimator needs one truth probability."""
        if not self.answers:
            return None
        day = max(self.answers)
        reports = list(self.answers[day].values())
        epsilon = Counter(r.epsilon for r in reports).most_common(1)[0][0]
        used = [r for r in reports if r.epsilon == epsilon]
        scheme = RandomizedResponse.for_epsilon(epsilon)
        return DayRate(day, scheme.estimate(sum(r.answer for r in used), len(used), confidence))
