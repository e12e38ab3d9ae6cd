"""A fleet model weighed by its privacy noise: more noise never helps, infinite noise is
exactly a vehicle alone, and a little noise costs a little."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from devices.onboard.detector import FleetGaussian, make_pipeline, prior_weight
from devices.onboard.tuning import VEHICLE
from devices.sim.faults import FaultMode, FaultSpec
from devices.sim.simulator import SimulatedVehicle, make_fleet
from federation.features import VEHICLE_SCHEMA
from federation.summary import ModelSummary
from federation.whitening import Whitening

noise = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@given(less=noise, more=noise, scale=st.floats(min_value=1e-3, max_value=10.0))
def test_more_noise_never_weighs_more(less, more, scale):
    less, more = sorted((less, more))

    assert prior_weight(3600.0, more, scale) <= prior_weight(3600.0, less, scale) <= 3600.0


def test_infinite_noise_weighs_nothing():
    assert prior_weight(3600.0, math.inf, 0.3) == 0.0


def _fleet_model(vehicles: int = 8, readings: int = 1500) -> ModelSummary:
    """The healthy fleet's model: what a noise-free gateway would publish."""
    model = ModelSummary.empty(VEHICLE_SCHEMA.names)
    for vehicle in make_fleet(vehicles, seed=11, fault_fraction=0.0):
        rows = [VEHICLE_SCHEMA.scale(vehicle.read().values) for _ in range(readings)]
        model = model + ModelSummary.from_array(
            VEHICLE_SCHEMA.names, np.array([[r[n] for n in VEHICLE_SCHEMA.names] for r in rows]))
    return model


def _noised(model: ModelSummary, noise_std: float, seed: int) -> ModelSummary:
    """The model with privacy noise of ``noise_std`` per whitened coordinate, as a gateway's
    aggregate carries it."""
    whitening = Whitening(model)
    vector = np.random.default_rng(seed).normal(0.0, noise_std, whitening.size)
    return whitening.unpack(vector, model.n, floor=0.5 * noise_std)


def _scores(prior: ModelSummary | None, noise_std: float) -> tuple[np.ndarray, np.ndarray]:
    """A new vehicle with a cooling fault from reading 2,000: its scores, and the labels."""
    fault = FaultSpec(FaultMode.COOLING_DEGRADATION, onset_s=2000.0, failure_s=4000.0)
    vehicle = SimulatedVehicle("veh-0100", seed=11, fault=fault)
    detector = VEHICLE.detector(VEHICLE_SCHEMA)
    if prior is not None:
        detector.set_global(prior, noise_std)
    pipeline = make_pipeline(detector)
    scores = np.zeros(3500)
    for t in range(3500):
        x = vehicle.read().values
        scores[t] = pipeline.score_one(x)
        pipeline.learn_one(x)
    return scores, np.arange(3500) >= 2000


@pytest.fixture(scope="module")
def fleet_model() -> ModelSummary:
    return _fleet_model()


def test_infinite_noise_scores_exactly_as_the_vehicle_alone(fleet_model):
    alone, _ = _scores(None, 0.0)

    buried, _ = _scores(fleet_model, math.inf)

    assert np.array_equal(alone, buried)


def test_at_any_noise_a_new_vehicle_ranks_no_worse_than_alone(fleet_model):
    alone = average_precision_score(*reversed(_scores(None, 0.0)))
    expected = {}
    for level in (0.0, 0.1, 0.3, 1.0, 3.0):
        found = [average_precision_score(*reversed(_scores(
            _noised(fleet_model, level, seed) if level else fleet_model, level)))
            for seed in range(3)]
        expected[level] = float(np.mean(found))

    # Seeded: each level's mean PR-AUC over three noise draws. Alone, the vehicle scores
    # nothing before its 3,000th reading; the fleet's model lets it score from its first.
    assert expected[0.0] > alone + 0.1, expected
    assert all(value >= alone - 0.01 for value in expected.values()), expected
    assert expected[3.0] == pytest.approx(alone, abs=0.01)  # a buried model counts for ~nothing


def test_a_detector_without_noise_is_unchanged_by_the_weighing(fleet_model):
    detector = FleetGaussian(VEHICLE_SCHEMA)

    detector.set_global(fleet_model, 0.0)

    assert detector.model().n == min(fleet_model.n, detector.prior_readings)
