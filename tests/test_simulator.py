"""The seeded vehicle simulator and its fault catalogue: determinism, physics, faults, plans."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest

from devices.sim.faults import FaultMode, FaultSpec, plan_faults
from devices.sim.simulator import DrivingState, SimulatedFleet, SimulatedVehicle, make_fleet
from devices.sources import Reading
from federation.features import FEATURE_NAMES, FEATURES, HEALTH_FEATURES

SENSOR = {m: next(f.name for f in FEATURES if f.subsystem == m.subsystem) for m in FaultMode}
DIRECTION = {
    FaultMode.COOLING_DEGRADATION: +1.0,
    FaultMode.OIL_PRESSURE_LOSS: -1.0,
    FaultMode.CHARGING_FAILURE: -1.0,
    FaultMode.BEARING_WEAR: +1.0,
    FaultMode.INTERCOOLER_FOULING: +1.0,
}
ONSET_S, FAILURE_S, END_S = 300.0, 1500.0, 2400
PARTIAL = slice(800, 900)  # severity 0.25 to 0.33


def _run(vehicle: SimulatedVehicle, count: int) -> list[Reading]:
    return [vehicle.read() for _ in range(count)]


def _column(readings: list[Reading], name: str) -> np.ndarray:
    return np.array([r.values[name] for r in readings])


def _noise(values: np.ndarray) -> float:
    """The measurement noise of a channel, from its step-to-step changes (robust to jumps)."""
    return float(np.median(np.abs(np.diff(values))) / (0.6745 * math.sqrt(2.0)))


def _run_with_states(vehicle: SimulatedVehicle, count: int) -> tuple[list[Reading], list[str]]:
    readings, states = [], []
    for _ in range(count):
        readings.append(vehicle.read())
        states.append(vehicle.driving_state.value)
    return readings, states


def _seconds_in_state(states: list[str]) -> np.ndarray:
    held = np.zeros(len(states))
    for i in range(1, len(states)):
        held[i] = held[i - 1] + 1.0 if states[i] == states[i - 1] else 0.0
    return held


@dataclass
class Drive:
    vehicle: SimulatedVehicle
    readings: list[Reading]
    states: np.ndarray
    held_s: np.ndarray  # seconds the state had lasted at each reading


@pytest.fixture(scope="module")
def long_drive() -> Drive:
    vehicle = SimulatedVehicle("veh-0002", seed=11)
    readings, states = _run_with_states(vehicle, 20_000)
    return Drive(vehicle, readings, np.array(states), _seconds_in_state(states))


@pytest.fixture(scope="module")
def healthy_twin() -> list[Reading]:
    return _run(SimulatedVehicle("veh-0004", seed=5), END_S)


def test_the_same_seed_and_id_give_identical_readings():
    first = _run(SimulatedVehicle("veh-0003", seed=7), 2000)

    again = _run(SimulatedVehicle("veh-0003", seed=7), 2000)

    assert first == again


@pytest.mark.parametrize(("vehicle_id", "seed"), [("veh-0003", 8), ("veh-0004", 7)])
def test_a_different_seed_or_id_gives_different_readings(vehicle_id, seed):
    reference = _run(SimulatedVehicle("veh-0003", seed=7), 200)

    other = _run(SimulatedVehicle(vehicle_id, seed=seed), 200)

    assert all(a.values != b.values for a, b in zip(reference, other, strict=True))


@pytest.mark.parametrize(("seed", "period_s"), [(0, 1.0), (1, 1.0), (2, 1.0), (3, 0.5), (4, 10.0)])
def test_healthy_readings_are_complete_finite_and_inside_the_feature_limits(seed, period_s):
    vehicle = SimulatedVehicle(f"veh-{seed:04d}", seed, period_s=period_s)

    readings = _run(vehicle, 4000)

    assert all(list(r.values) == list(FEATURE_NAMES) for r in readings)
    for f in FEATURES:
        values = _column(readings, f.name)
        assert np.isfinite(values).all(), f.name
        assert f.low <= values.min() and values.max() <= f.high, f.name


def test_readings_are_stamped_from_the_start_time_one_period_apart():
    vehicle = SimulatedVehicle("veh-0001", seed=3, period_s=0.5, start_ts_s=1.7e9)

    stamps = [r.ts_s for r in _run(vehicle, 5)]

    assert stamps == [1.7e9, 1.7e9 + 0.5, 1.7e9 + 1.0, 1.7e9 + 1.5, 1.7e9 + 2.0]
    assert vehicle.sim_time_s == 2.5


def _settled(drive: Drive, state: DrivingState, after_s: float) -> np.ndarray:
    return (drive.states == state.value) & (drive.held_s >= after_s)


def test_a_long_drive_visits_every_driving_state(long_drive):
    assert set(long_drive.states) == {s.value for s in DrivingState}


def test_an_idling_vehicle_stands_still_with_the_engine_at_idle_speed(long_drive):
    settled = _settled(long_drive, DrivingState.IDLE, after_s=60.0)

    speeds = _column(long_drive.readings, "vehicle_speed_kmh")[settled]
    rpms = _column(long_drive.readings, "engine_rpm")[settled]

    assert settled.sum() > 100
    assert speeds.max() == 0.0
    assert abs(np.median(rpms) - long_drive.vehicle.profile.idle_rpm) < 20.0


def test_highway_driving_is_fast_and_city_driving_stops_and_goes(long_drive):
    speeds = _column(long_drive.readings, "vehicle_speed_kmh")

    highway = speeds[_settled(long_drive, DrivingState.HIGHWAY, after_s=120.0)]
    city = speeds[_settled(long_drive, DrivingState.CITY, after_s=60.0)]

    assert np.median(highway) >= 85.0 and highway.min() >= 70.0
    assert city.max() <= 75.0 and (city == 0.0).mean() > 0.05


def test_vehicles_in_a_fleet_differ():
    fleet = make_fleet(50, seed=1)

    profiles = [v.profile for v in fleet]

    assert {p.kind for p in profiles} == {"car", "van", "truck"}
    assert {p.climate for p in profiles} == {"cold", "temperate", "hot"}
    assert {p.style for p in profiles} == {"calm", "normal", "aggressive"}
    assert len({p.idle_rpm for p in profiles}) == 50


def test_a_fleet_is_numbered_and_carries_the_planned_faults():
    fleet = make_fleet(12, seed=4, fault_fraction=0.25, onset_s=(10.0, 20.0))

    ids = [v.vehicle_id for v in fleet]

    assert ids == [f"veh-{i:04d}" for i in range(12)]
    planned = plan_faults(ids, 4, 0.25, onset_s=(10.0, 20.0))
    assert {v.vehicle_id: v.fault for v in fleet if v.fault} == planned


# Every fault mode, a fault under way on arrival, one at the start and one later; healthy
# vehicles between them; three periods and a start time of its own for each vehicle.
MIXED_IDS = [f"veh-{i:04d}" for i in range(12)]
MIXED_FAULTS = {
    "veh-0000": FaultSpec(FaultMode.COOLING_DEGRADATION, onset_s=200.0, failure_s=900.0),
    "veh-0002": FaultSpec(FaultMode.OIL_PRESSURE_LOSS, onset_s=-300.0, failure_s=500.0),
    "veh-0003": FaultSpec(FaultMode.CHARGING_FAILURE, onset_s=0.0, failure_s=400.0),
    "veh-0005": FaultSpec(FaultMode.BEARING_WEAR, onset_s=100.0, failure_s=1100.0),
    "veh-0008": FaultSpec(FaultMode.INTERCOOLER_FOULING, onset_s=50.0, failure_s=300.0),
}
MIXED_PERIODS_S = [(1.0, 0.5, 10.0)[i % 3] for i in range(12)]
MIXED_STARTS_S = [1.7e9 + 45.0 * i for i in range(12)]


def _mixed_fleet(**kwargs: int) -> SimulatedFleet:
    return SimulatedFleet(MIXED_IDS, 21, MIXED_FAULTS, MIXED_PERIODS_S, MIXED_STARTS_S, **kwargs)


def _alone(index: int, steps: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    vid = MIXED_IDS[index]
    vehicle = SimulatedVehicle(vid, 21, MIXED_FAULTS.get(vid), MIXED_PERIODS_S[index],
                               MIXED_STARTS_S[index])
    readings, states = _run_with_states(vehicle, steps)
    values = np.array([list(r.values.values()) for r in readings])
    return np.array([r.ts_s for r in readings]), values, states


def test_vehicles_stepped_together_read_as_each_does_alone():
    fleet, steps = _mixed_fleet(), 1500

    times_s, values, states = np.empty((steps, 12)), np.empty((steps, 12, 9)), []
    for k in range(steps):
        times_s[k], values[k] = fleet.step()
        states.append([fleet.driving_state(i).value for i in range(12)])

    for i in range(12):
        alone_times_s, alone_values, alone_states = _alone(i, steps)
        np.testing.assert_array_equal(times_s[:, i], alone_times_s)
        np.testing.assert_allclose(values[:, i], alone_values, rtol=1e-12, atol=1e-12)
        assert [row[i] for row in states] == alone_states
    assert {state for row in states for state in row} == {s.value for s in DrivingState}


def test_a_fleet_run_gives_each_vehicle_its_readings_in_time_order():
    stepped = _mixed_fleet()
    by_step = [stepped.step() for _ in range(100)]

    times_s, values = _mixed_fleet().run(100)

    np.testing.assert_array_equal(times_s, np.array([t for t, _ in by_step]).T)
    np.testing.assert_array_equal(values, np.array([v for _, v in by_step]).transpose(1, 0, 2))


@pytest.mark.parametrize("block_steps", [1, 7, 512])
def test_the_noise_block_size_changes_memory_not_readings(block_steps):
    _, reference = _mixed_fleet().run(600)

    fleet = _mixed_fleet(block_steps=block_steps)
    _, values = fleet.run(600)

    np.testing.assert_array_equal(values, reference)
    assert fleet.nbytes_per_vehicle == block_steps * 12 * 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"vehicle_ids": []}, "at least one vehicle"),
     ({"vehicle_ids": ["veh-0001", "veh-0001"]}, "unique"),
     ({"faults": {"veh-0009": MIXED_FAULTS["veh-0000"]}}, "not in the fleet"),
     ({"period_s": [1.0, -1.0]}, "period_s"),
     ({"start_ts_s": [0.0, 1.0, 2.0]}, "start_ts_s"),
     ({"period_s": math.nan}, "period_s")],
)
def test_a_fleet_rejects_bad_arguments(kwargs, message):
    arguments = {"vehicle_ids": ["veh-0001", "veh-0002"], "seed": 1, **kwargs}

    with pytest.raises(ValueError, match=message):
        SimulatedFleet(**arguments)


def test_a_vehicle_rejects_a_period_that_is_not_positive():
    with pytest.raises(ValueError, match="period_s"):
        SimulatedVehicle("veh-0001", seed=1, period_s=0.0)


@pytest.mark.parametrize("mode", list(FaultMode))
def test_a_fault_shows_only_in_its_own_sensor_after_onset_in_the_right_direction(
        mode, healthy_twin):
    faulty_vehicle = SimulatedVehicle("veh-0004", seed=5, fault=FaultSpec(mode, ONSET_S, FAILURE_S))
    sensor = SENSOR[mode]
    noise = _noise(_column(healthy_twin, sensor))

    faulty = _run(faulty_vehicle, END_S)

    shift = DIRECTION[mode] * (_column(faulty, sensor) - _column(healthy_twin, sensor))
    failed = shift[int(FAILURE_S):]
    assert faulty[: int(ONSET_S)] == healthy_twin[: int(ONSET_S)]
    assert shift[PARTIAL].mean() > 3.0 * noise
    assert failed.mean() > 20.0 * noise and (failed > 3.0 * noise).all()
    for other in set(FEATURE_NAMES) - {sensor}:
        assert (_column(faulty, other) == _column(healthy_twin, other)).all(), other


def test_a_failed_alternator_leaves_the_battery_near_twelve_volts():
    fault = FaultSpec(FaultMode.CHARGING_FAILURE, ONSET_S, FAILURE_S)

    battery_v = _column(_run(SimulatedVehicle("veh-0004", seed=5, fault=fault), END_S), "battery_v")

    assert battery_v[: int(ONSET_S)].min() > 13.5
    assert 11.8 < battery_v[int(FAILURE_S):].mean() < 12.3


def test_bearing_wear_vibrates_more_the_faster_the_engine_turns(healthy_twin):
    fault = FaultSpec(FaultMode.BEARING_WEAR, ONSET_S, FAILURE_S)
    faulty = _run(SimulatedVehicle("veh-0004", seed=5, fault=fault), END_S)

    excess_g = _column(faulty, "vibration_rms_g") - _column(healthy_twin, "vibration_rms_g")
    rpm = _column(healthy_twin, "engine_rpm")

    assert np.corrcoef(excess_g[int(FAILURE_S):], rpm[int(FAILURE_S):])[0, 1] > 0.8


def test_every_fault_mode_degrades_a_subsystem_a_health_feature_watches():
    watched = {f.subsystem for f in FEATURES if f.subsystem}

    assert {mode.subsystem for mode in FaultMode} == watched
    assert sorted(SENSOR.values()) == sorted(HEALTH_FEATURES)


def test_severity_is_zero_before_onset_one_from_failure_and_grows_in_between():
    spec = FaultSpec(FaultMode.BEARING_WEAR, onset_s=100.0, failure_s=300.0)

    ramp = [spec.severity(t_s) for t_s in np.linspace(100.0, 300.0, 41)]

    assert spec.severity(0.0) == spec.severity(100.0) == 0.0
    assert spec.severity(300.0) == spec.severity(1e6) == 1.0
    assert all(a < b for a, b in itertools.pairwise(ramp))
    assert spec.subsystem == "bearings"


def test_a_vehicle_can_arrive_with_a_fault_under_way():
    spec = FaultSpec(FaultMode.COOLING_DEGRADATION, onset_s=-100.0, failure_s=300.0)

    assert spec.severity(0.0) == pytest.approx(0.25 ** 1.5)
    assert spec.severity(-100.0) == 0.0


@pytest.mark.parametrize(("onset_s", "failure_s"),
                         [(100.0, 100.0), (100.0, 50.0), (-np.inf, 50.0), (0.0, np.inf),
                          (np.nan, 50.0)])
def test_a_fault_must_start_before_it_fails(onset_s, failure_s):
    with pytest.raises(ValueError, match="onset_s"):
        FaultSpec(FaultMode.BEARING_WEAR, onset_s, failure_s)


def _ids(count: int) -> list[str]:
    return [f"veh-{i:04d}" for i in range(count)]


def test_a_fault_plan_is_the_same_for_the_same_seed_and_differs_for_another():
    plan = plan_faults(_ids(40), seed=9)

    assert plan_faults(_ids(40), seed=9) == plan
    assert plan_faults(_ids(40), seed=10) != plan


@pytest.mark.parametrize(
    ("vehicles", "fault_fraction", "faulty"),
    [(10, 0.2, 2), (50, 0.2, 10), (3, 0.1, 1), (4, 1.0, 4), (7, 0.0, 0), (0, 0.5, 0)],
)
def test_a_fault_plan_picks_the_share_of_vehicles_asked_for(vehicles, fault_fraction, faulty):
    plan = plan_faults(_ids(vehicles), seed=2, fault_fraction=fault_fraction)

    assert len(plan) == faulty
    assert set(plan) <= set(_ids(vehicles))


@pytest.mark.parametrize("seed", range(10))
def test_five_faulty_vehicles_cover_every_fault_mode(seed):
    plan = plan_faults(_ids(25), seed=seed, fault_fraction=0.2)

    assert sorted(spec.mode for spec in plan.values()) == sorted(FaultMode)


def test_fault_times_are_drawn_from_the_ranges_given():
    plan = plan_faults(_ids(200), seed=3, fault_fraction=0.5, onset_s=(100.0, 200.0),
                       ramp_s=(50.0, 60.0))

    for spec in plan.values():
        assert 100.0 <= spec.onset_s <= 200.0
        assert 50.0 <= spec.failure_s - spec.onset_s <= 60.0


@pytest.mark.parametrize(
    ("vehicle_ids", "kwargs", "message"),
    [
        (_ids(5), {"fault_fraction": -0.1}, "fault_fraction"),
        (_ids(5), {"fault_fraction": 1.5}, "fault_fraction"),
        (_ids(5), {"fault_fraction": math.nan}, "fault_fraction"),
        (_ids(5), {"onset_s": (10.0, 5.0)}, "onset_s"),
        (_ids(5), {"onset_s": (-1.0, 5.0)}, "onset_s"),
        (_ids(5), {"ramp_s": (0.0, 10.0)}, "ramp_s"),
        (_ids(5), {"ramp_s": (20.0, 10.0)}, "ramp_s"),
        (["veh-0001", "veh-0001"], {}, "unique"),
    ],
)
def test_a_fault_plan_rejects_bad_arguments(vehicle_ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_faults(vehicle_ids, seed=1, **kwargs)
