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
model (as a prior of bounded weight), the vehicle's own readings already summarised, and a River
``EmpiricalCovariance`` of the readings since the last summary.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
from river import base, compose, covariance

from federation.features import VEHICLE_SCHEMA, Schema
from federation.summary import ModelSummary

__all__ = ["FleetGaussian", "make_pipeline", "prior_weight"]


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
    if noise_std == float("inf"):
        return 0.0
    return float(readings) / (1.0 + (noise_std / noise_scale) ** 2)

Block = tuple[np.ndarray, np.ndarray, np.ndarray]  # columns, residual positions, solve


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
        self._recent = covariance.EmpiricalCovariance(ddof=0)
        self._history = ModelSummary.empty(schema.names)
        self._prior = ModelSummary.empty(schema.names)
        self._mean = np.zeros(len(schema))
        self._precision: np.ndarray | None = None
        self._stale = refresh_every  # readings learned since the precision was computed
        self.recent_readings = 0
        self._z = np.zeros(len(schema.health))
        self._blocks: list[Block] = []
        self._prior_judge: tuple[np.ndarray, list[Block]] | None = None
        self._trust = 1.0  # what the prior's privacy noise leaves of its weight

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        if len(x) == len(self.schema):
            self._recent.update(x)
            self.recent_readings += 1
            self._stale += 1

    def score_one(self, x: dict[Hashable, Any]) -> float:
        if self._stale >= self.refresh_every:
            self._refresh()
        if self._precision is None:
            self._z[:] = 0.0
            return 0.0
        pairs = zip(self.schema.names, self._mean, strict=True)
        row = np.fromiter((x.get(name, mean) for name, mean in pairs), float)
        _standardise(self._precision, self._blocks, row - self._mean, self._z)
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
        prior = self._prior
        if prior.n and own.n > len(self.schema) and self._trust < 1.0:
            t = self._trust
            prior = ModelSummary(prior.features, prior.n, own.mean + t * (prior.mean - own.mean),
                                 own.cov + t * (prior.cov - own.cov))
        if (self.own_mean_after and own.n >= self.own_mean_after and prior.n
                and self._normal_for_the_fleet(own.mean, prior.mean)):
            prior = ModelSummary(prior.features, prior.n, own.mean, prior.cov)
        return prior + own

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
        self._recent = covariance.EmpiricalCovariance(ddof=0)
        self.recent_readings = 0
        return recent

    def set_global(self, summary: ModelSummary, noise_std: float = 0.0) -> None:
        """Adopt a global model as the prior, counted as at most ``prior_readings`` and less
        the more privacy noise it carries (:func:`prior_weight`)."""
        readings = min(summary.n, self.prior_readings)
        weight = prior_weight(readings, noise_std, self.prior_noise_scale)
        self._trust = weight / readings if readings else 0.0
        self._prior = summary.weighted(weight)
        self._prior_judge = None
        self._stale = self.refresh_every

    def _normal_for_the_fleet(self, mean: np.ndarray, fleet_mean: np.ndarray) -> bool:
        """Whether ``mean`` is within ``own_mean_limit`` of ``fleet_mean`` under the prior's
        covariance, health sensor by sensor."""
        if self._prior_judge is None:
            precision = self._precision_of(self._prior.cov)
            self._prior_judge = precision, [self._block(precision, s)
                                             for s in self.schema.subsystems.values()]
        z = np.zeros(len(self.schema.health))
        _standardise(*self._prior_judge, mean - fleet_mean, z)
        return bool(np.abs(z).max() < self.own_mean_limit)

    def _recent_summary(self) -> ModelSummary:
        return ModelSummary.from_river(self._recent, self.schema.names)

    def _refresh(self) -> None:
        self._stale = 0
        model = self.model()
        if model.n < self.min_readings:
            self._precision = None
            return
        self._precision = self._precision_of(model.cov)
        self._mean = model.mean
        self._blocks = [self._block(self._precision, sensors)
                        for sensors in self.schema.subsystems.values()]

    def _precision_of(self, cov: np.ndarray) -> np.ndarray:
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)
        return (vectors / (np.maximum(values, 0.0) + self.ridge)) @ vectors.T

    def _block(self, precision: np.ndarray, sensors: tuple[str, ...]) -> Block:
        """How to turn the precision-weighted offset into one subsystem's standardised residuals.

        A subsystem's sensors are judged against every channel outside it: their residual is
        ``inv(P_SS) @ (P @ (x - mean))_S`` with conditional covariance ``inv(P_SS)``. Sensors of
        one subsystem degrade together, so they are not used to explain each other away.
        """
        columns = np.array([self.schema.names.index(name) for name in sensors])
        positions = np.array([self.schema.health.index(name) for name in sensors])
        conditional = np.linalg.inv(precision[np.ix_(columns, columns)])
        solve = conditional / np.sqrt(np.diag(conditional))[:, None]
        return columns, positions, solve


def _standardise(precision: np.ndarray, blocks: list[Block], offset: np.ndarray,
                 out: np.ndarray) -> None:
    """Write each health sensor's standardised residual of ``offset`` from the mean to ``out``."""
    pull = precision @ offset
    for columns, positions, solve in blocks:
        out[positions] = solve @ pull[columns]


def make_pipeline(detector: FleetGaussian | None = None) -> compose.Pipeline:
    """Scale a physical reading with the fleet-wide limits of the detector's schema, then detect."""
    detector = detector or FleetGaussian()
    return compose.Pipeline(compose.FuncTransformer(detector.schema.scale), detector)
