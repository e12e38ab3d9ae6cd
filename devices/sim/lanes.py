"""Many simulated vehicles' sources stepped as one fleet: a lane per vehicle.

A :class:`~devices.sim.simulator.SimulatedVehicle` steps its physics alone, on plain floats:
about 25 µs a reading, more than the detector it feeds. A fleet runner holding thousands of
vehicles steps them together instead: :func:`fleet_lanes` builds one
:class:`~devices.sim.simulator.SimulatedFleet` of them, on arrays, and gives each vehicle a
:class:`FleetLane`, a :class:`~devices.sources.SensorSource` that reads its own row of each
step. A lane reads what its vehicle reads alone (the same draws, the same decisions; NumPy's
exponentials may differ from :mod:`math` in the last bit, so to about 1e-12).

Lanes may be read in any order and at any pace: a step is computed for every vehicle once
the first lane asks for it, and kept until every lane has read it. A fleet runner reads each
lane once a pass, so one step is held at a time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from devices.sim.faults import plan_faults
from devices.sim.simulator import SimulatedFleet, vehicle_ids
from devices.sources import Reading, SensorSource
from federation.features import FEATURE_NAMES

__all__ = ["FleetLane", "fleet_lanes"]


@dataclass(slots=True)
class _Step:
    """One step of the whole fleet: each vehicle's timestamp and values, and how many lanes
    have yet to read it."""

    ts_s: list[float]
    rows: list[list[float]]
    unread: int


class _Steps:
    """The steps of one fleet that some lane has yet to read, oldest first."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self._lanes = len(fleet.vehicle_ids)
        self.pending: deque[_Step] = deque()
        self._first = 0  # the step number of the oldest pending step

    def take(self, step: int, index: int) -> tuple[float, list[float]]:
        """Vehicle ``index``'s timestamp and values at ``step`` (each lane asks once a step)."""
        while step - self._first >= len(self.pending):
            ts_s, values = self.fleet.step()
            self.pending.append(_Step(ts_s.tolist(), values.tolist(), self._lanes))
        held = self.pending[step - self._first]
        held.unread -= 1
        while self.pending and not self.pending[0].unread:
            self.pending.popleft()
            self._first += 1
        return held.ts_s[index], held.rows[index]


class FleetLane(SensorSource):
    """One vehicle of a fleet stepped together: its readings, as it would read alone.

    Attributes
    ----------
    vehicle_id : str
        As in the fleet.
    fault : FaultSpec or None
        The injected fault: the ground truth.

    Examples
    --------
    >>> import math
    >>> from devices.sim.simulator import SimulatedVehicle
    >>> lanes = fleet_lanes(3, seed=42)
    >>> [lane.vehicle_id for lane in lanes]
    ['veh-0000', 'veh-0001', 'veh-0002']
    >>> together = [[lane.read() for lane in lanes] for _ in range(100)]
    >>> alone = SimulatedVehicle("veh-0002", seed=42)
    >>> readings = [alone.read() for _ in range(100)]
    >>> all(a.ts_s == b.ts_s and all(math.isclose(a.values[k], v, rel_tol=1e-12)
    ...                              for k, v in b.values.items())
    ...     for a, b in zip(readings, [step[2] for step in together]))
    True
    """

    __slots__ = ("_index", "_steps", "_taken", "fault", "vehicle_id")

    def __init__(self, steps: _Steps, index: int) -> None:
        self._steps = steps
        self._index = index
        self._taken = 0
        self.vehicle_id = steps.fleet.vehicle_ids[index]
        self.fault = steps.fleet.faults[index]

    @property
    def steps_held(self) -> int:
        """Steps of the whole fleet computed and kept for lanes yet to read them."""
        return len(self._steps.pending)

    def read(self) -> Reading:
        """The vehicle's next reading."""
        ts_s, row = self._steps.take(self._taken, self._index)
        self._taken += 1
        return Reading(ts_s, dict(zip(FEATURE_NAMES, row, strict=True)))


def fleet_lanes(
    n: int,
    seed: int,
    fault_fraction: float = 0.2,
    start_ts_s: float = 0.0,
    indices: range | None = None,
) -> list[FleetLane]:
    """The vehicles of :func:`~devices.sim.simulator.make_fleet` (``indices`` of the ``n``, or
    all), each the same vehicle with the same fault, as lanes of one fleet."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    ids = vehicle_ids(n)
    planned = plan_faults(ids, seed, fault_fraction)
    chosen = [ids[index] for index in (range(n) if indices is None else indices)]
    if not chosen:
        return []
    fleet = SimulatedFleet(chosen, seed, {vid: planned[vid] for vid in chosen if vid in planned},
                           start_ts_s=start_ts_s)
    steps = _Steps(fleet)
    return [FleetLane(steps, index) for index in range(len(chosen))]
