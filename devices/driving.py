"""The driving cycle: a semi-Markov walk over idling, city stop-and-go and highway legs."""

from __future__ import annotations

import math
from enum import StrEnum

import numpy as np

from devices.profiles import VehicleProfile

__all__ = ["DrivingCycle", "DrivingState"]


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


class DrivingCycle:
    """The semi-Markov cycle over driving states, each split into legs with a target speed."""

    def __init__(self, rng: np.random.Generator, profile: VehicleProfile) -> None:
        self._rng = rng
        self._city_kmh = profile.city_kmh
        self._highway_kmh = profile.highway_kmh
        self.state = DrivingState.IDLE
        self.target_kmh = 0.0
        self._cruising = False
        self._state_left_s = 0.0
        self._leg_left_s = 0.0
        self._enter(DrivingState.IDLE)

    def step(self, dt_s: float) -> float:
        """Advance by ``dt_s`` and return the target speed."""
        self._state_left_s -= dt_s
        self._leg_left_s -= dt_s
        if self._state_left_s <= 0.0:
            likely, probability, other = _NEXT_STATE[self.state]
            self._enter(likely if self._rng.random() < probability else other)
        elif self._leg_left_s <= 0.0:
            self._next_leg()
        return self.target_kmh

    def _enter(self, state: DrivingState) -> None:
        self.state = state
        self._state_left_s = self._log_uniform(_DWELL_S[state])
        self._cruising = False
        self._next_leg()

    def _next_leg(self) -> None:
        if self.state is DrivingState.IDLE:
            self.target_kmh, self._leg_left_s = 0.0, math.inf
        elif self.state is DrivingState.HIGHWAY:
            self.target_kmh = float(self._rng.uniform(*self._highway_kmh))
            self._leg_left_s = self._log_uniform(_HIGHWAY_LEG_S)
        else:
            self._cruising = not self._cruising
            self.target_kmh = float(self._rng.uniform(*self._city_kmh)) if self._cruising else 0.0
            self._leg_left_s = self._log_uniform(_CITY_CRUISE_S if self._cruising else _CITY_STOP_S)

    def _log_uniform(self, bounds_s: tuple[float, float]) -> float:
        return math.exp(self._rng.uniform(math.log(bounds_s[0]), math.log(bounds_s[1])))

