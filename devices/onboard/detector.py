"""The on-device detector: a River anomaly model whose state is a mergeable summary.

The model is a joint Gaussian over the scaled features. The health sensors of each subsystem
are compared with what the channels *outside* that subsystem predict for them (the conditional
mean, read off the precision matrix), so a coolant temperature is judged against engine load,
speed and ambient temperature rather than against a fixed band. Sensors of one subsystem are
not used to predict each other: they wear together, and a slow fault that moves them all in
step would otherwise be explained away (on the C-MAPSS turbofan data, conditioning each of 14
sensors on the 13 others gives PR-AUC 0.40; judging them as one subsystem, 0.94). The score
is the largest standardised residual among the health sensors.

The state is three summaries that merge by the rule of :mod:`federation.summary`: the global
model (as a prior of bounded weight), the vehicle's own readings already summarised, and the
running covariance of the readings since the last summary (River's ``EmpiricalCovariance`` on
arrays: :mod:`devices.onboard.running`).

How the model is assembled from them (:meth:`FleetGaussian.assemble`) and turned into residual
weights (:meth:`FleetGaussian.weights`) is written once, on arrays that may stack many
vehicles' models: the offline replay refreshes a whole fleet's models at once with the very
same rules.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
from river import base, compose

from devices.onboard.running import Running, RunningCovariance
from federation.features import VEHICLE_SCHEMA, Schema
from federation.privacy import credence
from federation.summary import ModelSummary, Moments, merge

__all__ = ["ADOPT_WITHIN_READINGS", "FleetGaussian", "make_pipeline", "prior_weight"]

# A staggered detector adopts a new global model within this many readings.
ADOPT_WITHIN_READINGS = 10


def prior_weight(readings: float, noise_std: float, noise_scale: float) -> float:
    """How many readings a global model counts for: ``readings``, shrunk by its privacy noise.

    The noise is relative (per whitened coordinate: a share of the fleet's own spread, see
    :mod:`federation.whitening`), and public. A model carrying noise ``noise_scale`` counts
    half; the weight falls as ``1 / (1 + (noise / noise_scale)^2)``, never rises with noise,
    and is 0 for infinite noise: a little noise costs a little, not everything.

    >>> prior_weight(3600, 0.0, 0.3), prior_weight(3600, 0.3, 0.3), prior_weight(3600, 3.0, 0.3)
    (3600.0, 1800.0, 35.64...)
    >>> prior_weight(3600, float("inf"), 0.3)
    0.0
    """
    return float(readings) * credence(noise_std, noise_scale)

class FleetGaussian(base.AnomalyDetector):
    """Conditional-Gaussian anomaly detector over complete, scaled readings.

    Parameters
    ----------
    schema
        The fleet's features: the operating conditions and the health sensors.
    prior_readings
        The most readings the global model counts for when merged with local data: a new
        vehicle relies on the fleet, an old one mostly on itself.
    refresh_every
        Readings between recomputations of the precision matrix.
    ridge
        Variance floor (in scaled units) that keeps the precision matrix well conditioned.
    min_readings
        Below this many readings in the model, every score is 0 (still warming up).
    prior_noise_scale
        The privacy noise (relative, per whitened coordinate) at which the global model counts
        half of what it would without noise (:func:`prior_weight`).
    own_mean_after
        Once the vehicle's own model holds this many readings, the prior is centred on the
        vehicle's own mean: the fleet still says how the channels vary together, but where
        this vehicle's healthy readings sit is its own (0: never). Vehicles differ (a hot
        climate, another model year): centred on the fleet's mean, a new vehicle's first
        readings look anomalous until its own data outweighs the prior, and a fault that
        begins then is hidden among them.
    own_mean_limit
        The own mean is adopted only while it is itself normal for the fleet: while its
        standardised residual under the fleet's model (the largest over the health sensors) is
        below this. A vehicle whose own readings sit further from the fleet's than vehicles
        differ among themselves is judged on the fleet's mean, or a fault it arrived with would
        become its normal.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> det = FleetGaussian(VEHICLE_SCHEMA, refresh_every=1, min_readings=100)
    >>> for _ in range(500):
    ...     load = rng.random()
    ...     x = dict.fromkeys(VEHICLE_SCHEMA.names, 0.5) | {
    ...         "engine_load_pct": load, "coolant_temp_c": 0.5 + 0.2 * load + rng.normal(0, 0.01)}
    ...     det.learn_one(x)
    >>> normal = dict.fromkeys(VEHICLE_SCHEMA.names, 0.5) | {
    ...     "engine_load_pct": 0.9, "coolant_temp_c": 0.68}
    >>> hot = normal | {"coolant_temp_c": 0.8}
    >>> round(det.score_one(normal), 1) < 3 < det.score_one(hot)
    True
    >>> max(det.residuals(), key=lambda name: abs(det.residuals()[name]))
    'coolant_temp_c'
    """

    def __init__(
        self,
        schema: Schema = VEHICLE_SCHEMA,
        prior_readings: float = 3600.0,
        refresh_every: int = 120,
        ridge: float = 1e-5,
        min_readings: int = 3000,
        prior_noise_scale: float = 0.3,
        own_mean_after: int = 60,
        own_mean_limit: float = 2.0,
    ) -> None:
        self.schema = schema
        self.prior_noise_scale = prior_noise_scale
        self.prior_readings = prior_readings
        self.refresh_every = refresh_every
        self.ridge = ridge
        self.min_readings = min_readings
        self.own_mean_after = own_mean_after
        self.own_mean_limit = own_mean_limit
        self._recent: Running = RunningCovariance(schema.names)
        self._folded = ModelSummary.empty(schema.names)
        self._history = ModelSummary.empty(schema.names)
        self._prior = ModelSummary.empty(schema.names)
        self._mean = np.zeros(len(schema))
        self._weights: np.ndarray | None = None
        self._stale = refresh_every  # readings learned since the weights were computed
        self._phase = 0  # readings by which the regular refreshes are offset (:meth:`stagger`)
        self._forced = True  # the next refresh is the first, or follows a new global model
        self._delay = 0  # readings by which a new global model waits for its refresh
        self.recent_readings = 0
        self._z = np.zeros(len(schema.health))
        self._prior_judge: np.ndarray | None = None
        self._trust = 1.0  # what the prior's privacy noise leaves of its weight
        by_size: dict[int, list[tuple[str, ...]]] = {}
        for sensors in schema.subsystems.values():
            by_size.setdefault(len(sensors), []).append(sensors)
        self._subsystems = [
            (np.array([[schema.names.index(name) for name in sensors] for sensors in group]),
             np.array([schema.health.index(name) for sensors in group for name in sensors]))
            for group in by_size.values()]

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        if len(x) == len(self.schema):
            self._recent.update(x)
            self.recent_readings += 1
            self._stale += 1

    def fold(self, summary: ModelSummary) -> None:
        """Learn a block of complete, scaled readings given by their summary, as that many
        ``learn_one`` calls would (up to rounding): the offline replay learns a fleet's readings
        on arrays and hands each vehicle what it learned when the vehicle needs it."""
        self._folded = self._folded + summary
        self.recent_readings += int(summary.n)
        self._stale += int(summary.n)

    def score_one(self, x: dict[Hashable, Any]) -> float:
        if self._stale >= self.refresh_every:
            self._refresh()
        if self._weights is None:
            self._z[:] = 0.0
            return 0.0
        pairs = zip(self.schema.names, self._mean, strict=True)
        row = np.fromiter((x.get(name, mean) for name, mean in pairs), float)
        self._z = self._weights @ (row - self._mean)
        return float(np.abs(self._z).max())

    def residuals(self) -> dict[str, float]:
        """Each health sensor's signed standardised residual in the last scored reading."""
        return dict(zip(self.schema.health, self._z.tolist(), strict=True))

    def model(self) -> ModelSummary:
        """Everything the detector currently believes: prior, own history and recent data.

        A prior carrying privacy noise counts for fewer readings (:func:`prior_weight`), and
        its mean and covariance are drawn towards the vehicle's own by the same factor (once
        the vehicle has readings enough for a covariance): a noisy model, far off or too wide,
        would otherwise move or widen the vehicle's however little it weighs.
        """
        own = self._history + self._recent_summary()
        if self._prior_judge is None:
            self._prior_judge = self.weights(self._prior.cov)
        n, mean, cov = self.assemble(self._prior.moments, own.moments, self._prior_judge,
                                     np.asarray(self._trust))
        return ModelSummary(self.schema.names, float(n), mean, cov)

    def assemble(self, prior: Moments, own: Moments, judge: np.ndarray,
                 trust: np.ndarray) -> Moments:
        """The model of one vehicle, or of stacked vehicles, from the prior (with the ``trust``
        its noise leaves it, and ``judge``: the prior's :meth:`weights`) and the vehicle's own
        readings: the prior drawn towards them by its trust, centred on their mean once they
        number ``own_mean_after`` and while that mean is normal for the fleet, then merged."""
        t = trust[..., None]
        drawn = (prior.n > 0) & (own.n > len(self.schema)) & (trust < 1.0)
        mean = np.where(drawn[..., None], own.mean + t * (prior.mean - own.mean), prior.mean)
        cov = np.where(drawn[..., None, None], own.cov + t[..., None] * (prior.cov - own.cov),
                       prior.cov)
        z = judge @ (own.mean - mean)[..., None]
        centred = ((self.own_mean_after > 0) & (own.n >= self.own_mean_after) & (prior.n > 0)
                   & (np.abs(z[..., 0]).max(axis=-1) < self.own_mean_limit))
        mean = np.where(centred[..., None], own.mean, mean)
        return merge(Moments(prior.n, mean, cov), own)

    def weights(self, cov: np.ndarray) -> np.ndarray:
        """Residual weights ``W`` of the Gaussian with covariance ``cov`` (one, or stacked): a
        reading's standardised health residuals are ``W @ (x - mean)``, one row per sensor.

        A subsystem's sensors ``S`` are judged against every channel outside it: with ``P`` the
        precision, their residuals are ``inv(P_SS) @ (P @ (x - mean))_S``, each divided by its
        conditional standard deviation. Sensors of one subsystem degrade together, so they are
        not used to explain each other away.
        """
        values, vectors = np.linalg.eigh((cov + np.swapaxes(cov, -1, -2)) / 2)
        scaled = vectors / (np.maximum(values, 0.0) + self.ridge)[..., None, :]
        precision = scaled @ np.swapaxes(vectors, -1, -2)
        out = np.zeros((*cov.shape[:-2], len(self.schema.health), len(self.schema)))
        for columns, positions in self._subsystems:  # subsystems of one size at a time
            conditional = np.linalg.inv(precision[..., columns[:, :, None], columns[:, None, :]])
            spread = np.sqrt(np.diagonal(conditional, axis1=-2, axis2=-1))
            rows = conditional / spread[..., None] @ precision[..., columns, :]
            out[..., positions, :] = rows.reshape(*rows.shape[:-3], len(positions), rows.shape[-1])
        return out

    def own_summary(self) -> ModelSummary:
        """Everything the vehicle learned itself: its history and its recent readings."""
        return self._history + self._recent_summary()

    @property
    def learned_readings(self) -> int:
        """How many readings the vehicle has learned itself."""
        return round(self._history.n) + self.recent_readings

    def take_summary(self) -> ModelSummary:
        """Summarise the readings learned since the last call, and fold them into history."""
        recent = self._recent_summary()
        self._history = self._history + recent
        self._recent.reset()
        self._folded = ModelSummary.empty(self.schema.names)
        self.recent_readings = 0
        return recent

    def learn_in(self, running: Running) -> None:
        """Learn the recent readings in ``running`` (a lane of a fleet process's
        :class:`~devices.onboard.running.RunningStack`) from now on: before any is learned."""
        if self.recent_readings or self._history.n:
            raise ValueError("a detector that has learned keeps its running covariance")
        if tuple(running.names) != tuple(self.schema.names):
            raise ValueError("the running covariance is not on the detector's schema")
        self._recent = running

    def stagger(self, share: float) -> None:
        """Offset this detector's refreshes by ``share`` (in [0, 1)) of ``refresh_every``.

        Vehicles that start together, or adopt one global model together, would otherwise
        all recompute their weights on the same reading: a fleet simulated in one process
        would pay for every vehicle's refresh in one step. A staggered detector adopts a
        global model within ``ADOPT_WITHIN_READINGS`` readings (at its own place among them),
        and its regular refreshes fall at its own place in the period.

        >>> det = FleetGaussian(VEHICLE_SCHEMA, refresh_every=120)
        >>> det.stagger(0.3)  # its place: reading 36 of 120, and 6 of 10
        >>> det.set_global(ModelSummary.empty(VEHICLE_SCHEMA.names))
        >>> det.readings_to_refresh
        6
        """
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share must be in [0, 1), got {share}")
        self._phase = int(share * self.refresh_every)

    @property
    def readings_to_refresh(self) -> int:
        """Readings to learn before a score recomputes the weights (0: the next score does)."""
        return max(self.refresh_every - self._stale, 0)

    def set_global(self, summary: ModelSummary, noise_std: float = 0.0) -> None:
        """Adopt a global model as the prior (:meth:`prior_for`), from the next refresh:
        the next score's, or for a staggered detector (:meth:`stagger`) one at most
        ``ADOPT_WITHIN_READINGS`` readings later."""
        self._prior, self._trust = self.prior_for(summary, noise_std)
        self._prior_judge = None
        self._delay = self._phase % ADOPT_WITHIN_READINGS
        self._stale, self._forced = self.refresh_every - self._delay, True

    def prior_for(self, summary: ModelSummary, noise_std: float) -> tuple[ModelSummary, float]:
        """A global model as this detector's prior, and the share of its weight its noise
        leaves (its trust): counted as at most ``prior_readings``, and less the more privacy
        noise it carries (:func:`prior_weight`)."""
        readings = min(summary.n, self.prior_readings)
        weight = prior_weight(readings, noise_std, self.prior_noise_scale)
        return summary.weighted(weight), weight / readings if readings else 0.0

    def _recent_summary(self) -> ModelSummary:
        return self._recent.summary() + self._folded

    def _refresh(self) -> None:
        # After a forced refresh the period goes on from the detector's own place in it.
        self._stale = (self._phase + self._delay) % self.refresh_every if self._forced else 0
        self._forced = False
        model = self.model()
        if model.n < self.min_readings:
            self._weights = None
            return
        self._weights = self.weights(model.cov)
        self._mean = model.mean


def make_pipeline(detector: FleetGaussian | None = None) -> compose.Pipeline:
    """Scale a physical reading with the fleet-wide limits of the detector's schema, then detect."""
    detector = detector or FleetGaussian()
    return compose.Pipeline(compose.FuncTransformer(detector.schema.scale), detector)
