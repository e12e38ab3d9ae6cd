"""The sensor features every vehicle measures, their fleet-wide limits and subsystems.

The limits are part of the contract: every vehicle scales a reading into ``[0, 1]`` with
the same limits before learning, so that model summaries from different vehicles describe
the same space, merge exactly, and have a bounded sensitivity for differential privacy.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FEATURES", "FEATURE_NAMES", "HEALTH_FEATURES", "Feature", "feature", "scale"]


@dataclass(frozen=True, slots=True)
class Feature:
    """One sensor channel: its name (with unit), physical limits and the subsystem it watches.

    ``subsystem`` is ``None`` for operating-condition channels (engine speed, load, ...),
    which explain the health channels but are not themselves a fault indicator.
    """

    name: str
    low: float
    high: float
    subsystem: str | None = None

    def scale(self, value: float) -> float:
        """Map a physical value into [0, 1], clipping at the fleet-wide limits."""
        unit = (value - self.low) / (self.high - self.low)
        return min(1.0, max(0.0, unit))


FEATURES: tuple[Feature, ...] = (
    Feature("engine_rpm", 0.0, 6000.0),
    Feature("vehicle_speed_kmh", 0.0, 160.0),
    Feature("engine_load_pct", 0.0, 100.0),
    Feature("ambient_temp_c", -30.0, 50.0),
    Feature("coolant_temp_c", 40.0, 130.0, "cooling"),
    Feature("oil_pressure_kpa", 0.0, 600.0, "lubrication"),
    Feature("battery_v", 10.0, 15.5, "charging"),
    Feature("vibration_rms_g", 0.0, 2.0, "bearings"),
    Feature("intake_temp_c", -30.0, 90.0, "intake"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
HEALTH_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.subsystem)
_BY_NAME = {f.name: f for f in FEATURES}


def feature(name: str) -> Feature:
    """Look a feature up by name.

    >>> feature("coolant_temp_c").subsystem
    'cooling'
    """
    return _BY_NAME[name]


def scale(values: dict[str, float]) -> dict[str, float]:
    """Scale the known features of a physical reading into [0, 1]; unknown keys are dropped.

    >>> scale({"coolant_temp_c": 85.0, "battery_v": 99.0, "colour": 3.0})
    {'coolant_temp_c': 0.5, 'battery_v': 1.0}
    """
    return {k: _BY_NAME[k].scale(v) for k, v in values.items() if k in _BY_NAME}
