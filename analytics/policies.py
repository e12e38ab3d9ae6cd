"""Many devices' alert charts at once: :class:`devices.onboard.alerts.AlertPolicy` on arrays.

Each device smooths each health sensor's residual with the policy's EWMA, takes each
subsystem's level as the root mean square of its sensors' smoothed residuals (summed in the
schema's order, as the policy sums them) and its level as the highest, and, for a calibrated
policy, sets its threshold on its first readings. The policy's settings come from the device's
own :class:`~devices.onboard.alerts.AlertPolicy`; what the replay records (the level and whether it
passed the threshold) is all it needs of the chart. Alerts themselves (which subsystem, the
cooldown) change neither, and the replay sends none.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from analytics.stack import Stack
from devices.onboard.alerts import AlertPolicy

__all__ = ["Chart", "Policies"]

Rows = np.ndarray | slice


class Chart(NamedTuple):
    """Charts after a reading: smoothed residuals, readings observed, baseline, threshold, level."""

    smoothed: np.ndarray
    observed: np.ndarray
    baseline: np.ndarray
    threshold: np.ndarray
    level: np.ndarray


class Policies(Stack):
    """The alert charts of ``size`` devices that share ``policy``'s settings.

    Examples
    --------
    >>> policy = AlertPolicy(threshold=2.0, alpha=0.5)
    >>> charts = Policies(policy, size=2)
    >>> residuals = np.zeros((2, len(policy.schema.health)))
    >>> residuals[1, 0] = 3.0  # the second device's coolant temperature
    >>> [(charts.observe(np.arange(2), residuals) > charts.threshold).tolist() for _ in range(3)]
    [[False, False], [False, True], [False, True]]
    >>> alone = {name: 0.0 for name in policy.schema.health} | {"coolant_temp_c": 3.0}
    >>> _ = [policy.observe(float(t), alone) for t in range(3)]
    >>> float(charts.level[1]), policy.level
    (2.625, 2.625)
    """

    ROWS = ("smoothed", "observed", "baseline", "threshold", "level")

    def __init__(self, policy: AlertPolicy, size: int) -> None:
        schema = policy.schema
        self.alpha = policy.alpha
        self.calibrate_readings = policy.calibrate_readings
        self.calibrate_factor = policy.calibrate_factor
        self._groups = [[schema.health.index(name) for name in sensors]
                        for sensors in schema.subsystems.values()]
        self.smoothed = np.zeros((size, len(schema.health)))
        self.observed = np.zeros(size, dtype=np.int64)
        self.baseline = np.zeros(size)
        self.threshold = np.full(size, policy.threshold)
        self.level = np.zeros(size)

    def observe(self, rows: Rows, residuals: np.ndarray) -> np.ndarray:
        """``rows`` observe one reading's residuals each; return their levels."""
        chart = self.propose(rows, residuals)
        self.commit(rows, chart)
        return chart.level

    def propose(self, rows: Rows, residuals: np.ndarray) -> Chart:
        """What ``rows``' charts would be after one reading's residuals each (not kept)."""
        previous = self.smoothed[rows]
        smoothed = previous + self.alpha * (residuals - previous)
        squares = smoothed * smoothed
        level = np.zeros(len(smoothed))
        for columns in self._groups:
            total = squares[:, columns[0]]
            for column in columns[1:]:
                total = total + squares[:, column]
            level = np.maximum(level, np.sqrt(total / len(columns)))
        observed = self.observed[rows] + 1
        baseline, threshold = self.baseline[rows], self.threshold[rows]
        if self.calibrate_readings:  # the baseline's highest level, then the threshold on it
            baseline = np.where(observed <= self.calibrate_readings,
                                np.maximum(baseline, level), baseline)
            done = (observed == self.calibrate_readings) & (baseline > 0)
            threshold = np.where(done, self.calibrate_factor * baseline, threshold)
        return Chart(smoothed, observed, baseline, threshold, level)

    def commit(self, rows: Rows, chart: Chart) -> None:
        """Keep what :meth:`propose` gave for ``rows``."""
        (self.smoothed[rows], self.observed[rows], self.baseline[rows], self.threshold[rows],
         self.level[rows]) = chart
