"""What an update may claim: only what an honest vehicle's readings could make.

:func:`federation.messages.decode` checks an update's form. Here the gateway checks that it is
physical, with bounds no honest vehicle can reach:

- **readings** (``too_many_readings``): a vehicle learns at most ``readings_per_s`` readings a
  second (the fastest sensor rate, times the simulation's speed-up where there is one). The
  readings an update adds (``n``, less the ``replaces_readings`` of a cumulative release) are
  at most ``slack`` times what that rate gives since its last accepted update, or since the
  gateway first heard of it, plus one round's worth (a vehicle learns before it is first heard
  of). An exact update replaces nothing; a release replaces at most its own readings and its
  vehicle's last accepted release plus what the vehicle could have learned since (a release in
  between may have been lost). A vehicle's first release after the gateway first hears of it
  (or restarts) is bounded only in what it adds: it may claim a large total that it says it
  replaces.
- **values** (``infeasible``): readings are scaled to ``[0, 1]``, so an exact summary's means
  lie in ``[0, 1]`` and its variances in ``[0, 1/4]``. A clipped one is ``s`` of the way from
  the (feasible) global model to the vehicle's own, in means and second moments: its means stay
  in ``[0, 1]``, its variances ``(1 - s) a + s b + s (1 - s) d^2`` within ``[0, 1/2]``. A locally
  noised one may leave those by ``sigmas`` times its declared noise ``t``: a mean by ``t / 2``,
  a variance by ``t / 4`` above and ``(t + t^2) / 4`` below (the mean's noise, squared).
- **covariance** (``not_psd``): an exact or clipped summary's covariance is positive
  semi-definite (a locally noised one need not be: noise is left as it fell, so that averages
  stay unbiased).

A vehicle first heard of long ago but offline since is fine; one that learned offline for
longer than it has been heard of sees its first release refused until the rate catches up
(``slack``) with its claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from federation.messages import Update

__all__ = ["Plausibility"]

TOLERANCE = 1e-6  # rounding in scaled units: a clipped summary is unpacked from a vector
# Vehicles remembered at most: a spray of made-up vehicle ids costs no more memory than this
# (one heard of past it is taken as first heard of now, the strictest bound).
MAX_VEHICLES = 100_000
MAX_VARIANCE = 0.25  # Popoviciu's bound for values in [0, 1]
MAX_CLIPPED_VARIANCE = 0.5  # a clipped release's, mixed with the global model (see above)


@dataclass
class Plausibility:
    """The gateway's memory of each vehicle's updates, and the checks of a new one.

    Examples
    --------
    >>> from federation.features import FEATURE_NAMES
    >>> from federation.summary import ModelSummary
    >>> d = len(FEATURE_NAMES)
    >>> summary = ModelSummary(FEATURE_NAMES, 600.0, np.full(d, 0.5), np.eye(d) * 0.01)
    >>> update = Update("veh-1", 1, 0, summary, 0.0, 0.0, 0.0, 0.0, privacy="off")
    >>> bounds = Plausibility(readings_per_s=1.0, round_s=30.0)
    >>> bounds.heard("veh-1", now_s=0.0)
    >>> bounds.reason(update, now_s=100.0), bounds.reason(update, now_s=400.0)
    ('too_many_readings', None)
    >>> wild = ModelSummary(FEATURE_NAMES, 10.0, np.full(d, 3.0), np.eye(d) * 0.01)
    >>> bounds.reason(Update("veh-1", 1, 0, wild, 0.0, 0.0, 0.0, 0.0, privacy="off"), 400.0)
    'infeasible'
    """

    readings_per_s: float
    round_s: float
    slack: float = 2.0
    sigmas: float = 8.0
    first_heard_s: dict[str, float] = field(default_factory=dict)
    last: dict[str, tuple[float, float]] = field(default_factory=dict)  # (time, readings)

    def __post_init__(self) -> None:
        if not (0 < self.readings_per_s < float("inf") and self.round_s > 0 and self.slack >= 1):
            raise ValueError("readings_per_s and round_s must be > 0 and finite, slack >= 1")

    def heard(self, vehicle_id: str, now_s: float) -> None:
        """Note the first time the gateway hears of ``vehicle_id`` (any message)."""
        if len(self.first_heard_s) < MAX_VEHICLES:
            self.first_heard_s.setdefault(vehicle_id, now_s)

    def reason(self, update: Update, now_s: float) -> str | None:
        """Why ``update`` cannot be physical, or ``None``."""
        if not self._counts_fit(update, now_s):
            return "too_many_readings"
        summary = update.summary
        noisy = update.privacy == "local"
        margin = TOLERANCE + (self.sigmas * update.noise_std if noisy else 0.0)
        widest = MAX_VARIANCE if update.privacy == "off" else MAX_CLIPPED_VARIANCE
        variances = np.diag(summary.cov)
        # Whitened noise t moves a mean by t times the channel's spread (at most 1/2), and a
        # variance by t (the moment's noise) less t^2 (the mean's, squared) times its variance.
        if (summary.mean.min() < -margin / 2 or summary.mean.max() > 1 + margin / 2
                or variances.min() < -(margin + margin ** 2) / 4
                or variances.max() > widest + margin / 4):
            return "infeasible"
        if not noisy and np.linalg.eigvalsh(summary.cov).min() < -TOLERANCE:
            return "not_psd"
        return None

    def accepted(self, update: Update, now_s: float) -> None:
        """Remember an accepted update: the readings of the vehicle's next one count from it."""
        if len(self.last) < MAX_VEHICLES or update.vehicle_id in self.last:
            self.last[update.vehicle_id] = (now_s, update.summary.n)

    def _counts_fit(self, update: Update, now_s: float) -> bool:
        n, replaces = update.summary.n, update.replaces_readings
        since, previous = self.last.get(update.vehicle_id, (None, math.inf))
        if since is None:
            since = self.first_heard_s.get(update.vehicle_id, now_s)
        elapsed_s = max(0.0, now_s - since)
        allowed = self.readings_per_s * (self.slack * elapsed_s + self.round_s)
        # An exact update summarises its own readings; a release replaces at most its own and
        # what its vehicle could have released since its last accepted one (a release in
        # between may have been lost or refused).
        most = 0.0 if update.privacy == "off" else min(n, previous + allowed)
        return replaces <= most and n - replaces <= allowed
