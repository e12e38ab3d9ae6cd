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
  between may have been lost).
- **replaced total** (``too_many_replaced``): whatever a release replaces was a release of this
  deployment, so no more than ``slack`` times what the rate gives since its first round opened
  (``started_s``), plus a round's worth. This bounds a vehicle's first release after the
  gateway first hears of it (or restarts), which has no accepted release to count from.
- **declared noise** (``noise_mismatch``): a locally noised release carries the noise it
  declares. Packed about the model it names (:mod:`federation.whitening`), it is its clipped
  offset (of norm at most its clip norm, and never more than the gateway's own, or 1.5 times
  it about the public centre) plus noise of ``t`` a coordinate, so its norm (L2 for Gaussian
  noise, L1 for Laplace, the norm it is clipped in) lies within the noise norm's ``1e-9`` and
  ``1 - 1e-9`` quantiles (chi and gamma distributions), widened by the clip norm. A vehicle
  that overstates its noise cannot widen the value checks' margins below, and one that
  understates it cannot pass its noise off as signal. A release about a model the gateway no
  longer holds (one older than the previous) cannot be checked, and is refused as well.
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
(``slack``) with its claim, and so does one whose previous release was made to another
deployment (a gateway started on a new store).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from federation.messages import GlobalModel, Update
from federation.privacy import PUBLIC_CLIP_FACTOR
from federation.whitening import Whitening, public_centre
from gateway.private import CLIP_NORM

__all__ = ["Plausibility"]

TOLERANCE = 1e-6  # rounding in scaled units: a clipped summary is unpacked from a vector
# Vehicles remembered at most: a spray of made-up vehicle ids costs no more memory than this
# (one heard of past it is taken as first heard of now, the strictest bound).
MAX_VEHICLES = 100_000
MAX_VARIANCE = 0.25  # Popoviciu's bound for values in [0, 1]
MAX_CLIPPED_VARIANCE = 0.5  # a clipped release's, mixed with the global model (see above)
NOISE_TAIL = 1e-9  # the chance that an honest release's noise falls outside either bound
MODELS_KEPT = 2  # the newest global models, that releases may be made about (one round late)


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
    started_s: float | None = None  # when the first round opened; default: first heard of any
    clip_norm: float = CLIP_NORM  # the gateway's: no local release is clipped wider
    # A gateway worker's: it knows neither the models nor when the deployment began, and the
    # gateway checks again every release it forwards, so it leaves those checks to it.
    deferred: bool = False
    first_heard_s: dict[str, float] = field(default_factory=dict)
    last: dict[str, tuple[float, float]] = field(default_factory=dict)  # (time, readings)
    models: dict[int, Whitening] = field(default_factory=dict)  # by version, the newest kept
    sent_version: int = 0  # the model last sent to vehicles, kept however many merged since

    def __post_init__(self) -> None:
        if not (0 < self.readings_per_s < float("inf") and self.round_s > 0 and self.slack >= 1):
            raise ValueError("readings_per_s and round_s must be > 0 and finite, slack >= 1")
        _potrf()  # imported now rather than on the first update

    def heard(self, vehicle_id: str, now_s: float) -> None:
        """Note the first time the gateway hears of ``vehicle_id`` (any message)."""
        if self.started_s is None:
            self.started_s = now_s
        if len(self.first_heard_s) < MAX_VEHICLES:
            self.first_heard_s.setdefault(vehicle_id, now_s)

    def published(self, model: GlobalModel, sent: bool = False) -> None:
        """Note a global model: releases made about it are checked against it. A model
        ``sent`` to the vehicles is kept until another is sent, since models that changed
        too little to send (:mod:`gateway.downlink`) reach no vehicle to be released about."""
        self.models[model.version] = Whitening(model.summary)
        if sent:
            self.sent_version = model.version
        for version in sorted(self.models)[:-MODELS_KEPT]:
            if version != self.sent_version:
                del self.models[version]

    def reason(self, update: Update, now_s: float) -> str | None:
        """Why ``update`` cannot be physical, or ``None``."""
        if not self._counts_fit(update, now_s):
            return "too_many_readings"
        if not self.deferred:
            if update.replaces_readings > self._learnable(now_s, self.started_s):
                return "too_many_replaced"
            if update.privacy == "local" and not self._noise_fits(update):
                return "noise_mismatch"
        summary = update.summary
        noisy = update.privacy == "local"
        margin = TOLERANCE + (self.sigmas * update.noise_std if noisy else 0.0)
        widest = MAX_VARIANCE if update.privacy == "off" else MAX_CLIPPED_VARIANCE
        # As Python floats: four NumPy reductions of nine values cost more than the lists.
        means, variances = summary.mean.tolist(), summary.cov.diagonal().tolist()
        # Whitened noise t moves a mean by t times the channel's spread (at most 1/2), and a
        # variance by t (the moment's noise) less t^2 (the mean's, squared) times its variance.
        if (min(means) < -margin / 2 or max(means) > 1 + margin / 2
                or min(variances) < -(margin + margin ** 2) / 4
                or max(variances) > widest + margin / 4):
            return "infeasible"
        if not noisy and not _psd(summary.cov, TOLERANCE):
            return "not_psd"
        return None

    def accepted(self, update: Update, now_s: float) -> None:
        """Remember an accepted update: the readings of the vehicle's next one count from it."""
        if len(self.last) < MAX_VEHICLES or update.vehicle_id in self.last:
            self.last[update.vehicle_id] = (now_s, update.summary.n)

    def _learnable(self, now_s: float, since_s: float | None) -> float:
        """The most readings a vehicle can have learned from ``since_s`` to ``now_s``, with
        the slack and a round's worth."""
        elapsed_s = max(0.0, now_s - (now_s if since_s is None else since_s))
        return self.readings_per_s * (self.slack * elapsed_s + self.round_s)

    def _counts_fit(self, update: Update, now_s: float) -> bool:
        n, replaces = update.summary.n, update.replaces_readings
        since, previous = self.last.get(update.vehicle_id, (None, math.inf))
        if since is None:
            since = self.first_heard_s.get(update.vehicle_id, now_s)
        allowed = self._learnable(now_s, since)
        # An exact update summarises its own readings; a release replaces at most its own and
        # what its vehicle could have released since its last accepted one (a release in
        # between may have been lost or refused).
        most = 0.0 if update.privacy == "off" else min(n, previous + allowed)
        return replaces <= most and n - replaces <= allowed

    def _noise_fits(self, update: Update) -> bool:
        """Whether a locally noised release's offset, about the model it names, is as long as
        its declared noise makes it (see the module)."""
        summary = update.summary
        whitening = self.models.get(update.base_version) if update.base_version else (
            Whitening(public_centre(summary.features)))
        if whitening is None or whitening.features != summary.features:
            return False
        laplace = update.mechanism == "laplace"
        norm = float(np.linalg.norm(whitening.pack(summary), ord=1 if laplace else 2))
        widest = self.clip_norm * (1.0 if update.base_version else PUBLIC_CLIP_FACTOR)
        clip_norm = min(update.clip_norm, widest)
        low, high = _noise_norms(whitening.size, laplace)
        scale = update.noise_std / math.sqrt(2.0) if laplace else update.noise_std
        return scale * low - clip_norm <= norm <= scale * high + clip_norm


def _psd(cov: np.ndarray, tolerance: float) -> bool:
    """Whether the symmetric ``cov``'s least eigenvalue is at least ``-tolerance``.

    Whether ``cov + tolerance I`` has a Cholesky factor, that is, is positive definite: the
    same verdict as ``eigvalsh(cov).min() >= -tolerance`` but for a least eigenvalue within
    rounding (about ``1e-15`` here) of ``-tolerance`` itself, at half the cost for the
    schema's 9 x 9 (``tests/test_validation.py`` checks both sides of the boundary). Like
    ``eigvalsh`` it reads one triangle: decoding makes every covariance symmetric. LAPACK's
    ``potrf`` is called directly (``scipy.linalg.lapack``): ``np.linalg.cholesky``'s checks
    and error state around the same call cost four times the factorisation of a 9 x 9.

    >>> _psd(np.array([[0.01, 0.02], [0.02, 0.01]]), 1e-6)  # eigenvalues 0.03 and -0.01
    False
    >>> _psd(np.diag([0.01, -1e-7]), 1e-6)
    True
    """
    _, info = _potrf()(cov + _shift(len(cov), tolerance))
    return bool(info == 0)  # > 0: a leading minor is not positive definite


@lru_cache(maxsize=1)
def _potrf() -> Callable[..., tuple[np.ndarray, int]]:
    """LAPACK's Cholesky factorisation of a float64 matrix, imported on first use: SciPy's
    linear algebra costs every process that imports the gateway (the fleet's among them)
    26 MiB, and only the gateway's own checks need it."""
    from scipy.linalg import lapack

    return lapack.dpotrf  # type: ignore[no-any-return]


@lru_cache(maxsize=16)
def _shift(d: int, tolerance: float) -> np.ndarray:
    """``tolerance`` times the ``d`` x ``d`` identity, made once (read-only)."""
    shift = tolerance * np.eye(d)
    shift.flags.writeable = False
    return shift


@lru_cache(maxsize=16)
def _noise_norms(size: int, laplace: bool) -> tuple[float, float]:
    """The :data:`NOISE_TAIL` and ``1 - NOISE_TAIL`` quantiles of the norm of ``size``
    coordinates of unit noise: the L1 norm of Laplace noise of scale 1 (a sum of exponentials,
    gamma distributed), the L2 norm of Gaussian noise (chi distributed).

    >>> [round(q, 2) for q in _noise_norms(54, laplace=False)]
    [3.57, 11.88]
    """
    # Imported here: scipy.stats costs every process that imports the gateway (the fleet's
    # among them, through the command line) tens of MiB, and only noised releases need it.
    from scipy import stats

    if laplace:
        norm = stats.gamma(size)
        return float(norm.ppf(NOISE_TAIL)), float(norm.isf(NOISE_TAIL))
    chi = stats.chi(size)
    return float(chi.ppf(NOISE_TAIL)), float(chi.isf(NOISE_TAIL))
