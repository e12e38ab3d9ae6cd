"""A fleet's simulated vehicles stepped together: each lane reads as its vehicle alone."""

from __future__ import annotations

import numpy as np

from devices.onboard.vehicle import Vehicle
from devices.runners.fleet import simulated_vehicles
from devices.sim.lanes import fleet_lanes
from devices.sim.simulator import make_fleet
from federation import messages, topics
from federation.features import FEATURE_NAMES
from federation.messages import GlobalModel
from federation.summary import ModelSummary


def _table(readings: list) -> np.ndarray:
    return np.array([[r.ts_s, *(r.values[name] for name in FEATURE_NAMES)] for r in readings])


def test_a_lane_reads_as_its_vehicle_alone_through_its_fault():
    alone = make_fleet(10, seed=5, fault_fraction=0.5, indices=range(3, 9))
    lanes = fleet_lanes(10, seed=5, fault_fraction=0.5, indices=range(3, 9))

    steps = 3000  # past every planned onset (900 to 2,700 s)
    together = [[lane.read() for lane in lanes] for _ in range(steps)]
    by_itself = [[vehicle.read() for _ in range(steps)] for vehicle in alone]

    assert [lane.vehicle_id for lane in lanes] == [v.vehicle_id for v in alone]
    assert [lane.fault for lane in lanes] == [v.fault for v in alone]
    assert sum(lane.fault is not None for lane in lanes) >= 2
    for index, readings in enumerate(by_itself):
        mine = _table([step[index] for step in together])
        np.testing.assert_allclose(mine, _table(readings), rtol=1e-9, atol=1e-9)


def test_lanes_read_at_their_own_pace_get_the_same_readings():
    in_step = fleet_lanes(4, seed=2)
    one_by_one = fleet_lanes(4, seed=2)

    passes = [[lane.read() for lane in in_step] for _ in range(50)]
    each = [[lane.read() for _ in range(50)] for lane in one_by_one]

    for index in range(4):
        assert [step[index] for step in passes] == each[index]


def test_a_fleet_read_in_lock_step_holds_one_step():
    lanes = fleet_lanes(3, seed=1)

    for _ in range(10):
        for lane in lanes:
            lane.read()

    assert lanes[0].steps_held == 0
    lanes[0].read()
    assert lanes[0].steps_held == 1


def test_vehicles_learning_in_one_stack_hold_the_numbers_each_holds_alone():
    stacked = simulated_vehicles(12, 3, None, fault_fraction=0.5, stagger=0.5)
    alone = [Vehicle(v.vehicle_id, lane, mechanism=None, stagger=0.5)
             for v, lane in zip(stacked, fleet_lanes(12, seed=3, fault_fraction=0.5),
                                strict=True)]
    model = messages.encode(GlobalModel(1, 1, 12, ModelSummary.from_array(
        FEATURE_NAMES, np.random.default_rng(0).uniform(0.3, 0.7, (4000, 9))), 0.0))
    taken: list[list[ModelSummary]] = [[], []]

    for step in range(400):
        for group, vehicles in enumerate((stacked, alone)):
            for vehicle in vehicles:
                if step == 100:
                    vehicle.on_message(topics.MODEL_TOPIC, model)
                vehicle.step()
                if step in (150, 399):
                    taken[group].append(vehicle.detector.take_summary())

    for mine, theirs in zip(*taken, strict=True):
        assert mine.n == theirs.n > 0
        assert np.array_equal(mine.mean, theirs.mean) and np.array_equal(mine.cov, theirs.cov)
    for mine, theirs in zip(stacked, alone, strict=True):
        assert mine.policy.smoothed == theirs.policy.smoothed
        assert np.array_equal(mine.detector.model().cov, theirs.detector.model().cov)
