"""A seeded vehicle simulator: driving cycles, warm-engine physics and injected faults.

A :class:`SimulatedFleet` steps many vehicles at once: each drives a semi-Markov cycle of
idling, city stop-and-go and highway cruising (:mod:`devices.sim.driving`), turned into the sensor
channels of :data:`federation.features.FEATURES` by warm-engine physics on arrays across
vehicles (:mod:`devices.sim.physics`). A :class:`~devices.sim.faults.FaultSpec` bends the physics of
one subsystem as its severity grows. A :class:`SimulatedVehicle` is one such vehicle behind
the :class:`~devices.sources.SensorSource` interface: it reads the same alone as in a fleet.

Everything random comes from generators seeded by ``(seed, vehicle_id)``, and a fault never
changes what is drawn: a faulty vehicle and its healthy twin drive identically and differ only
in the faulty subsystem's channel, and only after the fault's onset.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from devices.sim.driving import DrivingCycles, DrivingState
from devices.sim.faults import FaultMode, FaultSpec, plan_faults, severity
from devices.sim.noise import NoiseBlocks
from devices.sim.physics import NOISE_CHANNELS, EnginePhysics
from devices.sim.profiles import VehicleProfile
from devices.sources import Reading, SensorSource
from federation.features import FEATURE_NAMES

__all__ = ["DrivingState", "SimulatedFleet", "SimulatedVehicle", "VehicleProfile", "make_fleet",
           "vehicle_ids"]

_MODES = tuple(FaultMode)
_CHUNK_STEPS = 16


class SimulatedFleet:
    """Many seeded simulated vehicles, stepped together: one reading from each per step.

    Parameters
    ----------
    vehicle_ids
        The vehicles' ids, all different; with ``seed`` each seeds its vehicle's draws, so a
        vehicle reads the same in any fleet, alone or as a :class:`SimulatedVehicle`.
    seed
        The simulation's seed.
    faults
        The fault of each faulty vehicle, by id; the others are healthy.
    period_s
        Simulated seconds between two readings: one for all, or one per vehicle.
    start_ts_s
        The timestamp of the first reading: one for all, or one per vehicle.
    block_steps
        Steps of measurement noise each vehicle draws at once (and holds: 96 bytes a step).

    Attributes
    ----------
    vehicle_ids, profiles, faults : tuple
        Per vehicle, in order: its id, :class:`VehicleProfile` and fault (or ``None``).
    columns : tuple of str
        The channels of a reading, :data:`federation.features.FEATURE_NAMES`.
    steps : int
        Readings taken so far from each vehicle.

    Examples
    --------
    >>> fleet = SimulatedFleet(["veh-0007", "veh-0008"], seed=42, start_ts_s=[0.0, 100.0])
    >>> ts_s, values = fleet.step()
    >>> ts_s.tolist(), values.shape, fleet.columns[:2]
    ([0.0, 100.0], (2, 9), ('engine_rpm', 'vehicle_speed_kmh'))
    >>> alone = SimulatedVehicle("veh-0007", seed=42).read()
    >>> np.allclose(values[0], list(alone.values.values()), rtol=1e-12, atol=0.0)
    True
    >>> ts_s, values = fleet.run(steps=3)
    >>> ts_s.tolist(), values.shape
    ([[1.0, 2.0, 3.0], [101.0, 102.0, 103.0]], (2, 3, 9))
    """

    columns = FEATURE_NAMES

    def __init__(
        self,
        vehicle_ids: Sequence[str],
        seed: int,
        faults: Mapping[str, FaultSpec] | None = None,
        period_s: float | Sequence[float] = 1.0,
        start_ts_s: float | Sequence[float] = 0.0,
        block_steps: int = 16,
    ) -> None:
        faults = faults or {}
        self.vehicle_ids = tuple(vehicle_ids)
        count = len(self.vehicle_ids)
        self._period_s = _per_vehicle("period_s", period_s, count)
        self._start_ts_s = _per_vehicle("start_ts_s", start_ts_s, count)
        _check_fleet(self.vehicle_ids, faults, self._period_s)
        streams = [np.random.SeedSequence([seed, zlib.crc32(vid.encode())]).spawn(3)
                   for vid in self.vehicle_ids]
        self.profiles = tuple(VehicleProfile.draw(np.random.default_rng(profile_seq))
                              for profile_seq, _, _ in streams)
        self.faults = tuple(faults.get(vid) for vid in self.vehicle_ids)
        self._cycles = DrivingCycles(
            [np.random.default_rng(driving_seq) for _, driving_seq, _ in streams], self.profiles)
        self._noise = NoiseBlocks([np.random.default_rng(noise_seq) for _, _, noise_seq in streams],
                                  NOISE_CHANNELS, block_steps)
        self._physics = EnginePhysics(self.profiles, self._period_s)
        self._faulty = _FaultTable(self.faults)
        self.steps = 0

    @property
    def sim_time_s(self) -> np.ndarray:
        """Each vehicle's simulated seconds so far: one period per reading."""
        return self.steps * self._period_s

    @property
    def nbytes_per_vehicle(self) -> int:
        """Bytes of pre-drawn measurement noise each vehicle holds."""
        return self._noise.nbytes_per_vehicle

    def driving_state(self, index: int) -> DrivingState:
        """What vehicle ``index`` was doing at its last reading."""
        return self._cycles.state(index)

    def step(self) -> tuple[np.ndarray, np.ndarray]:
        """Every vehicle's reading at the current simulated time, then advance one period.

        Returns the timestamps, ``(N,)``, and the values, ``(N, len(columns))``: new arrays
        each step.
        """
        t_s = self.steps * self._period_s
        self.steps += 1
        noise = self._noise.next()
        target_kmh = self._cycles.step(self._period_s)
        channels = self._physics.step(t_s, target_kmh, noise, self._faulty.severity(t_s))
        return self._start_ts_s + t_s, channels.T

    def run(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``steps`` readings of every vehicle: timestamps ``(N, steps)``, values
        ``(N, steps, len(columns))`` (one vehicle's readings contiguous, in time order)."""
        if steps < 0:
            raise ValueError(f"steps must be non-negative, got {steps}")
        count, width = len(self.vehicle_ids), len(self.columns)
        times_s, values = np.empty((count, steps)), np.empty((count, steps, width))
        # Steps are gathered a chunk at a time, then written vehicle by vehicle.
        chunk_times_s = np.empty((_CHUNK_STEPS, count))
        chunk = np.empty((_CHUNK_STEPS, count, width))
        for start in range(0, steps, _CHUNK_STEPS):
            taken = min(_CHUNK_STEPS, steps - start)
            for k in range(taken):
                chunk_times_s[k], chunk[k] = self.step()
            times_s[:, start:start + taken] = chunk_times_s[:taken].T
            values[:, start:start + taken] = chunk[:taken].transpose(1, 0, 2)
        return times_s, values


class _FaultTable:
    """Each vehicle's fault as arrays: when it starts and fails, and the mode it degrades."""

    def __init__(self, faults: Sequence[FaultSpec | None]) -> None:
        self._onset_s = np.array([0.0 if f is None else f.onset_s for f in faults])
        self._failure_s = np.array([1.0 if f is None else f.failure_s for f in faults])
        self._modes = np.array([[f is not None and f.mode is mode for f in faults]
                                for mode in _MODES], dtype=float).reshape(len(_MODES), -1)
        self._healthy = np.zeros_like(self._modes) if not self._modes.any() else None

    def severity(self, t_s: np.ndarray) -> np.ndarray:
        """Each fault mode's severity in each vehicle at ``t_s``, ``(modes, N)``: 0 if healthy."""
        if self._healthy is not None:
            return self._healthy
        return self._modes * severity(t_s, self._onset_s, self._failure_s)


def _per_vehicle(name: str, value: float | Sequence[float], count: int) -> np.ndarray:
    """``value`` as one float per vehicle: given once for all, or once per vehicle."""
    values = np.asarray(value, dtype=float)
    if values.ndim > 1 or values.size not in (1, count):
        raise ValueError(f"{name} must be one number or one per vehicle ({count}), "
                         f"got {values.size}")
    return np.broadcast_to(values, (count,)).copy()


def _check_fleet(vehicle_ids: tuple[str, ...], faults: Mapping[str, FaultSpec],
                 period_s: np.ndarray) -> None:
    if not vehicle_ids:
        raise ValueError("a fleet needs at least one vehicle")
    if len(set(vehicle_ids)) != len(vehicle_ids):
        raise ValueError("vehicle_ids must be unique")
    if unknown := sorted(set(faults) - set(vehicle_ids)):
        raise ValueError(f"faults for vehicles not in the fleet: {unknown[:5]}")
    if not (period_s > 0.0).all():
        raise ValueError(f"period_s must be positive, got {period_s[~(period_s > 0.0)][0]}")


class SimulatedVehicle(SensorSource):
    """A seeded simulated vehicle: a driving cycle, warm-engine physics and an optional fault.

    Parameters
    ----------
    vehicle_id
        The vehicle's id; with ``seed`` it seeds every random draw, so two vehicles differ
        and the same pair gives the same readings on every run and machine.
    seed
        The simulation's seed.
    fault
        The fault to inject, or ``None`` for a healthy vehicle. It changes the physics of its
        subsystem only, and never what is drawn.
    period_s
        Simulated seconds between two readings.
    start_ts_s
        The timestamp of the first reading.

    Attributes
    ----------
    vehicle_id : str
        As given.
    fault : FaultSpec or None
        The injected fault: the ground truth.
    profile : VehicleProfile
        What kind of vehicle this is, where it drives and how.

    Examples
    --------
    >>> car = SimulatedVehicle("veh-0007", seed=42)
    >>> car.profile.kind, car.profile.climate, car.profile.style
    ('car', 'hot', 'normal')
    >>> first = car.read()
    >>> first.ts_s, car.sim_time_s, car.driving_state.value
    (0.0, 1.0, 'idle')
    >>> for name, value in first.values.items():
    ...     print(f"{name:<18} {value:8.2f}")
    engine_rpm           850.44
    vehicle_speed_kmh      0.00
    engine_load_pct       18.73
    ambient_temp_c        27.63
    coolant_temp_c        91.45
    oil_pressure_kpa     146.28
    battery_v             14.05
    vibration_rms_g        0.06
    intake_temp_c         51.48

    Its twin with a failing radiator drives the same way and reads the same until the fault
    sets in, then runs hot:

    >>> fault = FaultSpec(FaultMode.COOLING_DEGRADATION, onset_s=60.0, failure_s=600.0)
    >>> twin = SimulatedVehicle("veh-0007", seed=42, fault=fault)
    >>> twin.read() == first
    True
    >>> for _ in range(1200):
    ...     healthy, faulty = car.read(), twin.read()
    >>> healthy.values["vehicle_speed_kmh"] == faulty.values["vehicle_speed_kmh"]
    True
    >>> round(faulty.values["coolant_temp_c"] - healthy.values["coolant_temp_c"])
    26
    """

    def __init__(
        self,
        vehicle_id: str,
        seed: int,
        fault: FaultSpec | None = None,
        period_s: float = 1.0,
        start_ts_s: float = 0.0,
    ) -> None:
        self.vehicle_id = vehicle_id
        self.fault = fault
        self.period_s = period_s
        self.start_ts_s = start_ts_s
        faults = {vehicle_id: fault} if fault is not None else None
        self._fleet = SimulatedFleet([vehicle_id], seed, faults, period_s, start_ts_s)
        self.profile = self._fleet.profiles[0]

    @property
    def sim_time_s(self) -> float:
        """Simulated seconds so far: one period per reading."""
        return self._fleet.steps * self.period_s

    @property
    def driving_state(self) -> DrivingState:
        """What the vehicle was doing at the last reading."""
        return self._fleet.driving_state(0)

    def read(self) -> Reading:
        """Return the reading at the current simulated time, then advance it by one period."""
        ts_s, values = self._fleet.step()
        return Reading(float(ts_s[0]), dict(zip(FEATURE_NAMES, values[0].tolist(), strict=True)))


def make_fleet(
    n: int,
    seed: int,
    fault_fraction: float = 0.2,
    period_s: float = 1.0,
    start_ts_s: float = 0.0,
    indices: range | None = None,
    **fault_kwargs: tuple[float, float],
) -> list[SimulatedVehicle]:
    """``n`` vehicles ``veh-0000``, ``veh-0001``, ... with faults from :func:`plan_faults`.

    ``indices`` builds only those vehicles of the ``n`` (a process's share of a fleet): each
    is the same vehicle, with the same fault, as in the whole fleet. ``fault_kwargs``
    (``onset_s``, ``ramp_s``) go to :func:`~devices.sim.faults.plan_faults`.

    Examples
    --------
    >>> fleet = make_fleet(10, seed=3)
    >>> [(v.vehicle_id, v.fault.mode.value) for v in fleet if v.fault]
    [('veh-0000', 'bearing_wear'), ('veh-0007', 'cooling_degradation')]
    >>> [(v.vehicle_id, v.fault and v.fault.mode.value)
    ...  for v in make_fleet(10, seed=3, indices=range(6, 8))]
    [('veh-0006', None), ('veh-0007', 'cooling_degradation')]
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    ids = vehicle_ids(n)
    faults = plan_faults(ids, seed, fault_fraction, **fault_kwargs)
    return [SimulatedVehicle(ids[index], seed, faults.get(ids[index]), period_s, start_ts_s)
            for index in (range(n) if indices is None else indices)]


def vehicle_ids(n: int) -> list[str]:
    """The ids of a simulated fleet of ``n``: ``veh-0000``, ``veh-0001``, ...

    >>> vehicle_ids(2)
    ['veh-0000', 'veh-0001']
    """
    return [f"veh-{index:04d}" for index in range(n)]
