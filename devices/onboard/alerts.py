"""When residuals become an alert: an EWMA chart per health sensor, and a cooldown.

Slow degradation hides in single readings (a fault a third developed moves a sensor by about
three standard deviations, which healthy driving also reaches now and then) but not in their
average: an exponentially weighted moving average of each sensor's signed residual stays near
zero while the vehicle is healthy and climbs steadily once a fault develops. A subsystem's
level is the root mean square of its sensors' smoothed residuals: one sensor's for a subsystem
watched by one, and the common drift of many for a machine that wears as a whole.

Where no fixed level fits every machine (test-rig set-ups differ in how steady their healthy
readings are), the threshold can be calibrated from the machine's own healthy start: a factor
over the highest level of its first ``calibrate_readings`` readings, as a control chart's
limit is set on a training period. Only readings, never labels, enter the calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from federation.features import VEHICLE_SCHEMA, Schema

__all__ = ["AlertPolicy"]


@dataclass
class AlertPolicy:
    """Alert when a health sensor's smoothed residual passes ``threshold``.

    Parameters
    ----------
    threshold
        Alert level for ``|EWMA|`` of a sensor's standardised residual.
    alpha
        EWMA weight of the newest reading (about ``2 / alpha`` readings of memory).
    cooldown_s
        A subsystem that has alerted stays quiet this long (seconds of reading time).
    schema
        Names the subsystem each health sensor watches.
    calibrate_readings
        If positive, the first this many readings are the healthy baseline: once they are
        observed, ``threshold`` becomes ``calibrate_factor`` times their highest level (it
        stays as given while that is 0, a model that never scored).
    calibrate_factor
        The calibrated threshold over the baseline's highest level.

    Examples
    --------
    >>> policy = AlertPolicy(threshold=2.0, alpha=0.5, cooldown_s=60)
    >>> [policy.observe(t, {"coolant_temp_c": z}) for t, z in enumerate([1, 3, 3, 3])]
    [None, None, 'cooling', None]
    >>> policy.top()
    [('coolant_temp_c', 2.69)]
    >>> calibrated = AlertPolicy(threshold=9.0, alpha=1.0, calibrate_readings=2,
    ...                          calibrate_factor=1.5)
    >>> [calibrated.observe(t, {"coolant_temp_c": z}) for t, z in enumerate([1, 2, 2.5, 3.5])]
    [None, None, None, 'cooling']
    >>> calibrated.threshold
    3.0
    """

    threshold: float = 4.0
    alpha: float = 0.02
    cooldown_s: float = 1800.0
    schema: Schema = field(default=VEHICLE_SCHEMA, repr=False)
    calibrate_readings: int = 0
    calibrate_factor: float = 1.0
    smoothed: dict[str, float] = field(default_factory=dict)
    observed: int = 0
    baseline_level: float = 0.0
    _last_alert_s: dict[str, float] = field(default_factory=dict, repr=False)
    _level: float | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1 or not self.threshold > 0:
            raise ValueError("need 0 < alpha <= 1 and threshold > 0")
        if self.calibrate_readings < 0 or not self.calibrate_factor > 0:
            raise ValueError("need calibrate_readings >= 0 and calibrate_factor > 0")

    @property
    def level(self) -> float:
        """The largest subsystem level: root mean square of its sensors' smoothed residuals
        (kept from the last :meth:`observe`, which computed it)."""
        if self._level is None:
            self._level = max(self.levels().values(), default=0.0)
        return self._level

    def levels(self) -> dict[str, float]:
        """Each subsystem's level, in standard deviations."""
        smoothed, out = self.smoothed, {}
        for subsystem, sensors in self.schema.subsystems.items():
            # Loops, not lists: this runs for every reading of every vehicle.
            squares, count = 0.0, 0
            for name in sensors:
                if name in smoothed:
                    squares += smoothed[name] ** 2
                    count += 1
            if count:
                out[subsystem] = math.sqrt(squares / count)
        return out

    def observe(self, ts_s: float, residuals: dict[str, float]) -> str | None:
        """Record one reading's residuals; return the subsystem to alert on, if any."""
        smoothed, alpha = self.smoothed, self.alpha
        for name, z in residuals.items():
            previous = smoothed.get(name, 0.0)
            smoothed[name] = previous + alpha * (z - previous)
        subsystem, level = "", -1.0
        for name, value in self.levels().items():  # the first of the highest
            if value > level:
                subsystem, level = name, value
        self._level = max(level, 0.0)
        self._calibrate(self._level)
        if not subsystem or level <= self.threshold:
            return None
        last = self._last_alert_s.get(subsystem)
        if last is not None and ts_s - last < self.cooldown_s:
            return None
        self._last_alert_s[subsystem] = ts_s
        return subsystem

    def _calibrate(self, level: float) -> None:
        """Track the baseline's highest level; set the threshold when the baseline is over."""
        self.observed += 1
        if self.observed > self.calibrate_readings:
            return
        self.baseline_level = max(self.baseline_level, level)
        if self.observed == self.calibrate_readings and self.baseline_level > 0:
            self.threshold = self.calibrate_factor * self.baseline_level

    def top(self, count: int = 3) -> list[tuple[str, float]]:
        """The sensors with the largest smoothed residuals, largest first."""
        ranked = sorted(self.smoothed.items(), key=lambda item: -abs(item[1]))
        return [(name, round(z, 2)) for name, z in ranked[:count]]
