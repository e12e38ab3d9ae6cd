"""The faults the simulator injects, and the ground truth of which vehicle has which.

Each :class:`FaultMode` degrades one subsystem, named exactly as the ``subsystem`` of the
feature that watches it in :mod:`federation.features`, so an alert's subsystem can be checked
against the injected fault. A :class:`FaultSpec` starts at ``onset_s`` and grows until the part
has failed at ``failure_s`` (simulated seconds since the start of the simulation);
:func:`plan_faults` draws one for a seeded share of a fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["FaultMode", "FaultSpec", "plan_faults", "severity"]

# Wear feeds on itself: a fault grows slowly at first, then faster towards failure.
_RAMP_EXPONENT = 1.5


class FaultMode(StrEnum):
    """A way a vehicle wears out; :attr:`subsystem` names the subsystem it degrades.

    Attributes
    ----------
    COOLING_DEGRADATION
        Radiator, fan or thermostat losing capacity: the coolant runs above the thermostat
        setpoint, more under load and in hot weather.
    OIL_PRESSURE_LOSS
        Pump wear or a leak: oil pressure falls below what engine speed and oil temperature
        predict.
    CHARGING_FAILURE
        A failing alternator: the battery voltage falls from the charging level (~14.1 V)
        towards 12 V, the voltage of a battery that is no longer charged.
    BEARING_WEAR
        Worn bearings: vibration grows, the more so the faster the engine turns.
    INTERCOOLER_FOULING
        A fouled or leaking intercooler: the intake air runs hotter than ambient plus the
        usual heat soak, the more so under load (more boost to cool).

    Examples
    --------
    >>> FaultMode.CHARGING_FAILURE.subsystem
    'charging'
    >>> [mode.value for mode in FaultMode]
    ['cooling_degradation', 'oil_pressure_loss', 'charging_failure', 'bearing_wear', \
'intercooler_fouling']
    """

    COOLING_DEGRADATION = "cooling_degradation"
    OIL_PRESSURE_LOSS = "oil_pressure_loss"
    CHARGING_FAILURE = "charging_failure"
    BEARING_WEAR = "bearing_wear"
    INTERCOOLER_FOULING = "intercooler_fouling"

    @property
    def subsystem(self) -> str:
        """The subsystem this fault degrades, as in :data:`federation.features.FEATURES`."""
        return _SUBSYSTEMS[self]


_SUBSYSTEMS = {
    FaultMode.COOLING_DEGRADATION: "cooling",
    FaultMode.OIL_PRESSURE_LOSS: "lubrication",
    FaultMode.CHARGING_FAILURE: "charging",
    FaultMode.BEARING_WEAR: "bearings",
    FaultMode.INTERCOOLER_FOULING: "intake",
}
_MODES = tuple(FaultMode)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One injected fault: its mode, when it starts and when the part has failed.

    Parameters
    ----------
    mode
        What fails.
    onset_s
        Simulated seconds since the start of the simulation at which the fault starts; negative
        for a vehicle that arrives with a fault under way.
    failure_s
        Simulated seconds at which the fault reaches full severity; later than ``onset_s``.

    Examples
    --------
    >>> spec = FaultSpec(FaultMode.CHARGING_FAILURE, onset_s=1000.0, failure_s=2000.0)
    >>> spec.subsystem
    'charging'
    >>> [round(spec.severity(t_s), 3) for t_s in (0.0, 1000.0, 1500.0, 2000.0, 9000.0)]
    [0.0, 0.0, 0.354, 1.0, 1.0]
    """

    mode: FaultMode
    onset_s: float
    failure_s: float

    def __post_init__(self) -> None:
        if not -float("inf") < self.onset_s < self.failure_s < float("inf"):
            raise ValueError(
                f"a fault needs -inf < onset_s < failure_s < inf, got onset_s={self.onset_s}, "
                f"failure_s={self.failure_s}"
            )

    @property
    def subsystem(self) -> str:
        """The subsystem the fault degrades."""
        return self.mode.subsystem

    def severity(self, t_s: float) -> float:
        """How far the fault has got at simulated time ``t_s``: 0 before onset, 1 from failure."""
        return float(severity(np.array(t_s), np.array(self.onset_s), np.array(self.failure_s)))


def severity(t_s: np.ndarray, onset_s: np.ndarray, failure_s: np.ndarray) -> np.ndarray:
    """:meth:`FaultSpec.severity` element by element, for many faults (or times) at once.

    Examples
    --------
    >>> severity(np.array([0.0, 1500.0, 2500.0]), np.array([1000.0]), np.array([2000.0]))
    array([0.        , 0.35355339, 1.        ])
    """
    way = (t_s - onset_s) / (failure_s - onset_s)
    return np.minimum(np.maximum(way, 0.0), 1.0) ** _RAMP_EXPONENT


def plan_faults(
    vehicle_ids: Sequence[str],
    seed: int,
    fault_fraction: float = 0.2,
    onset_s: tuple[float, float] = (900.0, 2700.0),
    ramp_s: tuple[float, float] = (1800.0, 5400.0),
) -> dict[str, FaultSpec]:
    """Choose which vehicles get a fault, which fault and when; the same ``seed``, same plan.

    ``round(fault_fraction * len(vehicle_ids))`` vehicles get a fault (at least one when the
    fraction is positive). Modes go round the catalogue from a seeded starting order, so every
    mode appears once five or more vehicles are faulty. Each onset is drawn uniformly from
    ``onset_s`` and each failure comes a uniform draw from ``ramp_s`` after its onset.

    Examples
    --------
    >>> plan = plan_faults([f"veh-{i:04d}" for i in range(10)], seed=3, fault_fraction=0.2)
    >>> for vehicle_id, spec in plan.items():
    ...     print(vehicle_id, spec.mode.value, round(spec.onset_s), round(spec.failure_s))
    veh-0000 bearing_wear 1680 4055
    veh-0007 cooling_degradation 1762 6207
    """
    _check_plan(vehicle_ids, fault_fraction, onset_s, ramp_s)
    rng = np.random.default_rng(seed)
    count = _faulty_count(len(vehicle_ids), fault_fraction)
    chosen = np.sort(rng.choice(len(vehicle_ids), size=count, replace=False))
    order = rng.permutation(len(_MODES))
    onsets_s = rng.uniform(*onset_s, size=count)
    ramps_s = rng.uniform(*ramp_s, size=count)
    return {
        vehicle_ids[index]: FaultSpec(
            _MODES[order[k % len(_MODES)]], float(onsets_s[k]), float(onsets_s[k] + ramps_s[k])
        )
        for k, index in enumerate(chosen)
    }


def _faulty_count(vehicles: int, fault_fraction: float) -> int:
    if vehicles == 0 or fault_fraction == 0.0:
        return 0
    return max(1, round(fault_fraction * vehicles))


def _check_plan(
    vehicle_ids: Sequence[str],
    fault_fraction: float,
    onset_s: tuple[float, float],
    ramp_s: tuple[float, float],
) -> None:
    if len(set(vehicle_ids)) != len(vehicle_ids):
        raise ValueError("vehicle_ids must be unique")
    if not 0.0 <= fault_fraction <= 1.0:
        raise ValueError(f"fault_fraction must be in [0, 1], got {fault_fraction}")
    if not 0.0 <= onset_s[0] <= onset_s[1] < float("inf"):
        raise ValueError(f"onset_s must be (low, high) with 0 <= low <= high, got {onset_s}")
    if not 0.0 < ramp_s[0] <= ramp_s[1] < float("inf"):
        raise ValueError(f"ramp_s must be (low, high) with 0 < low <= high, got {ramp_s}")
