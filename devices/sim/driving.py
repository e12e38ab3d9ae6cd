"""The driving cycles of many vehicles: semi-Markov walks over idling, city and highway legs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from devices.sim.profiles import VehicleProfile

__all__ = ["DrivingCycles", "DrivingState"]


class DrivingState(StrEnum):
    """What the vehicle is doing: standing with the engine idling, in town, or on a highway.

    Examples
    --------
    >>> DrivingState("city") is DrivingState.CITY
    True
    """

    IDLE = "idle"
    CITY = "city"
    HIGHWAY = "highway"


_NEXT_STATE = {  # (the likelier next state, its probability, the other one)
    DrivingState.IDLE: (DrivingState.CITY, 0.8, DrivingState.HIGHWAY),
    DrivingState.CITY: (DrivingState.IDLE, 0.5, DrivingState.HIGHWAY),
    DrivingState.HIGHWAY: (DrivingState.CITY, 0.7, DrivingState.IDLE),
}
_DWELL_S = {
    DrivingState.IDLE: (30.0, 600.0),
    DrivingState.CITY: (120.0, 1200.0),
    DrivingState.HIGHWAY: (300.0, 1800.0),
}
_CITY_STOP_S = (5.0, 45.0)
_CITY_CRUISE_S = (15.0, 120.0)
_HIGHWAY_LEG_S = (60.0, 600.0)


class DrivingCycles:
    """The semi-Markov cycles of many vehicles, each state split into legs with a target speed.

    Timers run on arrays, one entry per vehicle. The rare events (a new state, a new leg) are
    drawn per vehicle, from that vehicle's own generator, for the few vehicles that have one
    at a step.

    Parameters
    ----------
    rngs
        One generator per vehicle: everything the vehicle's cycle draws comes from it.
    profiles
        The vehicles' profiles, in the same order: their city and highway speeds.

    Examples
    --------
    >>> from devices.sim.profiles import VehicleProfile
    >>> rngs = [np.random.default_rng(seed) for seed in (1, 2)]
    >>> cycles = DrivingCycles(rngs, [VehicleProfile.draw(rng) for rng in rngs])
    >>> for _ in range(300):
    ...     target_kmh = cycles.step(np.ones(2))
    >>> [cycles.state(i).value for i in range(2)], target_kmh.round(1).tolist()
    (['highway', 'idle'], [100.8, 0.0])
    """

    def __init__(self, rngs: Sequence[np.random.Generator],
                 profiles: Sequence[VehicleProfile]) -> None:
        if len(rngs) != len(profiles):
            raise ValueError(f"{len(rngs)} generators for {len(profiles)} profiles")
        count = len(rngs)
        self._rngs = list(rngs)
        self._city_kmh = [p.city_kmh for p in profiles]
        self._highway_kmh = [p.highway_kmh for p in profiles]
        self._states = [DrivingState.IDLE] * count
        self.target_kmh = np.zeros(count)
        self._cruising = [False] * count
        self._state_left_s = np.zeros(count)
        self._leg_left_s = np.zeros(count)
        for index in range(count):
            self._enter(index, DrivingState.IDLE)

    def state(self, index: int) -> DrivingState:
        """What vehicle ``index`` is doing."""
        return self._states[index]

    def step(self, dt_s: np.ndarray) -> np.ndarray:
        """Advance each vehicle by its ``dt_s`` and return the target speeds (do not modify)."""
        self._state_left_s -= dt_s
        self._leg_left_s -= dt_s
        due = np.minimum(self._state_left_s, self._leg_left_s) <= 0.0
        for index in due.nonzero()[0].tolist():
            if self._state_left_s[index] <= 0.0:
                likely, probability, other = _NEXT_STATE[self._states[index]]
                self._enter(index, likely if self._rngs[index].random() < probability else other)
            else:
                self._next_leg(index)
        return self.target_kmh

    def _enter(self, index: int, state: DrivingState) -> None:
        self._states[index] = state
        self._state_left_s[index] = self._log_uniform(index, _DWELL_S[state])
        self._cruising[index] = False
        self._next_leg(index)

    def _next_leg(self, index: int) -> None:
        state, rng = self._states[index], self._rngs[index]
        if state is DrivingState.IDLE:
            target_kmh, leg_left_s = 0.0, math.inf
        elif state is DrivingState.HIGHWAY:
            target_kmh = float(rng.uniform(*self._highway_kmh[index]))
            leg_left_s = self._log_uniform(index, _HIGHWAY_LEG_S)
        else:
            cruising = self._cruising[index] = not self._cruising[index]
            target_kmh = float(rng.uniform(*self._city_kmh[index])) if cruising else 0.0
            leg_left_s = self._log_uniform(index, _CITY_CRUISE_S if cruising else _CITY_STOP_S)
        self.target_kmh[index], self._leg_left_s[index] = target_kmh, leg_left_s

    def _log_uniform(self, index: int, bounds_s: tuple[float, float]) -> float:
        log_s = self._rngs[index].uniform(math.log(bounds_s[0]), math.log(bounds_s[1]))
        return math.exp(log_s)
