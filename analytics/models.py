"""Many devices' detectors as arrays: what each learned, its prior, and what it scores with.

A row holds what one device's :class:`devices.onboard.detector.FleetGaussian` holds: its own
readings already summarised (``history``), those learned since (``recent``, kept as River keeps
them), the global model it took as its prior, the readings learned since its weights were
computed, and the mean and residual weights it scores with. The rules are the detector's own,
applied to the stacked rows: a refresh is
:meth:`~devices.onboard.detector.FleetGaussian.assemble` then
:meth:`~devices.onboard.detector.FleetGaussian.weights`, a prior is
:meth:`~devices.onboard.detector.FleetGaussian.prior_for`, merges are
:func:`federation.summary.merge`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from analytics.moments import RunningMoments
from analytics.stack import Stack
from devices.onboard.detector import FleetGaussian
from federation.messages import GlobalModel
from federation.summary import Moments, merge

__all__ = ["Fit", "Models", "Priors", "residuals"]

Rows = np.ndarray | slice


class Fit(NamedTuple):
    """What detectors score with: whether ready, their means and residual weights."""

    ready: np.ndarray
    mean: np.ndarray
    weights: np.ndarray


def residuals(fit: Fit, scaled: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """Each reading's standardised health residuals under its row of ``fit`` (0 before the
    model is ready; a missing channel sits at the model's mean)."""
    offset = np.where(finite, scaled - fit.mean, 0.0)
    z = np.einsum("ahd,ad->ah", fit.weights, offset)
    return np.where(fit.ready[:, None], z, 0.0)


class Priors:
    """The global models the devices adopted, each as ``detector``'s prior, by position (0: none).

    Examples
    --------
    >>> from federation.summary import ModelSummary
    >>> detector = FleetGaussian(prior_readings=100)
    >>> priors = Priors(detector)
    >>> rows = np.random.default_rng(0).random((500, 9))
    >>> fleet = ModelSummary.from_array(detector.schema.names, rows)
    >>> priors.add(GlobalModel(1, 1, 3, fleet, 0.0))
    1
    >>> prior, _, trust = priors.of(np.array([0, 1, 1]))
    >>> prior.n.tolist(), trust.tolist()
    ([0.0, 100.0, 100.0], [1.0, 1.0, 1.0])
    """

    def __init__(self, detector: FleetGaussian) -> None:
        self.detector = detector
        d = len(detector.schema)
        self.models: list[GlobalModel | None] = [None]
        self._n, self._mean, self._cov = [0.0], [np.zeros(d)], [np.zeros((d, d))]
        self._judge = [detector.weights(self._cov[0])]
        self._trust = [1.0]
        self._arrays: tuple[np.ndarray, ...] | None = None
        self.versions = np.zeros(1, dtype=np.int64)

    def add(self, model: GlobalModel) -> int:
        """Take ``model`` as a prior; its position."""
        prior, trust = self.detector.prior_for(model.summary, model.noise_std)
        self.models.append(model)
        self._trust.append(trust)
        self._n.append(prior.n)
        self._mean.append(prior.mean)
        self._cov.append(prior.cov)
        self._judge.append(self.detector.weights(prior.cov))
        self._arrays = None
        self.versions = np.append(self.versions, model.version)
        return len(self.models) - 1

    def of(self, positions: np.ndarray) -> tuple[Moments, np.ndarray, np.ndarray]:
        """The priors at ``positions``, the weights that judge a mean against each, and the
        share of its weight each one's noise leaves."""
        if self._arrays is None:
            self._arrays = tuple(np.array(part) for part in (self._n, self._mean, self._cov,
                                                              self._judge, self._trust))
        n, mean, cov, judge, trust = (part[positions] for part in self._arrays)
        return Moments(n, mean, cov), judge, trust


class Models(Stack):
    """The detectors of ``size`` devices with ``detector``'s settings, as new."""

    ROWS = ("history_n", "history_mean", "history_cov", "recent", "prior", "stale", "ready",
            "mean", "weights")

    def __init__(self, detector: FleetGaussian, size: int) -> None:
        schema = detector.schema
        d, h = len(schema), len(schema.health)
        self.detector = detector
        self.history_n = np.zeros(size)
        self.history_mean = np.zeros((size, d))
        self.history_cov = np.zeros((size, d, d))
        self.recent = RunningMoments(schema.names, size)
        self.prior = np.zeros(size, dtype=np.int64)
        self.stale = np.full(size, detector.refresh_every, dtype=np.int64)
        self.ready = np.zeros(size, dtype=bool)
        self.mean = np.zeros((size, d))
        self.weights = np.zeros((size, h, d))

    def refresh(self, rows: np.ndarray, priors: Priors) -> None:
        """Recompute the model of ``rows`` from prior, history and recent readings."""
        fit = self.fit(rows, self.recent.moments(rows), priors)
        self.stale[rows] = 0
        self.ready[rows] = fit.ready
        self.mean[rows[fit.ready]] = fit.mean[fit.ready]
        self.weights[rows[fit.ready]] = fit.weights[fit.ready]

    def fit(self, rows: np.ndarray, recent: Moments, priors: Priors) -> Fit:
        """What ``rows`` would score with if their recent readings were ``recent``."""
        own = merge(Moments(self.history_n[rows], self.history_mean[rows],
                            self.history_cov[rows]), recent)
        prior, judge, trust = priors.of(self.prior[rows])
        model = self.detector.assemble(prior, own, judge, trust)
        return Fit(model.n >= self.detector.min_readings, model.mean,
                   self.detector.weights(model.cov))

    def residuals(self, rows: Rows, scaled: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """Each reading's standardised health residuals under its row's model."""
        return residuals(Fit(self.ready[rows], self.mean[rows], self.weights[rows]), scaled,
                         finite)

    def learn(self, rows: np.ndarray, scaled: np.ndarray) -> None:
        """Each of ``rows`` learns one complete reading."""
        self.recent.learn(rows, scaled)
        self.stale[rows] += 1

    def fold(self, rows: np.ndarray, blocks: Moments) -> None:
        """Each of ``rows`` learns a block of complete readings given by its summary."""
        self.recent.fold(rows, blocks)
        self.stale[rows] += blocks.n.astype(np.int64)

    def take_summary(self, rows: np.ndarray) -> Moments:
        """The recent readings of ``rows``, folded into their history, as the detector's
        :meth:`~devices.onboard.detector.FleetGaussian.take_summary` does."""
        recent = self.recent.moments(rows)
        history = merge(Moments(self.history_n[rows], self.history_mean[rows],
                                self.history_cov[rows]), recent)
        self.history_n[rows], self.history_mean[rows], self.history_cov[rows] = history
        self.recent.reset(rows)
        return recent

    def adopt(self, rows: np.ndarray, position: int) -> None:
        """``rows`` take the prior at ``position``: their next score refreshes their model."""
        self.prior[rows] = position
        self.stale[rows] = self.detector.refresh_every
