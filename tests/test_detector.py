"""The detector and alert policy on schemas whose subsystems have several sensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analytics.datasets import load
from analytics.replay import tuning_for
from analytics.report import evaluate
from devices.alerts import AlertPolicy
from devices.detector import FleetGaussian
from devices.tuning import ENGINE_CYCLES, TEST_RIG
from federation.features import Feature, Schema
from federation.summary import ModelSummary


def _schema(shared: bool) -> Schema:
    return Schema("turbine", (
        Feature("load_pct", 0, 100),
        *(Feature(f"t{i}_c", 0, 100, "turbine" if shared else f"t{i}") for i in range(4)),
    ))


def _reading(rng: np.random.Generator, wear: float = 0.0) -> dict[str, float]:
    """Four temperatures that share a healthy common swing (``common``) and wear in step."""
    load, common = rng.uniform(0.2, 0.8), rng.normal(0, 0.02)
    return {"load_pct": load} | {f"t{i}_c": 0.3 + 0.2 * load + common + wear
                                 + rng.normal(0, 0.005) for i in range(4)}


def _worn_score(schema: Schema) -> float:
    rng = np.random.default_rng(0)
    detector = FleetGaussian(schema, refresh_every=1, min_readings=100)
    for _ in range(400):
        detector.learn_one(_reading(rng))
    return detector.score_one(_reading(rng, wear=0.12))


def test_sensors_of_one_subsystem_wearing_in_step_are_judged_together():
    together, apart = _worn_score(_schema(shared=True)), _worn_score(_schema(shared=False))

    assert together > 4.0
    assert apart < 2.0  # each sensor explained by its three worn neighbours


def test_a_subsystem_level_is_the_rms_of_its_sensors_smoothed_residuals():
    policy = AlertPolicy(threshold=2.5, alpha=1.0, schema=_schema(shared=True))

    alert = policy.observe(0.0, {"t0_c": 3.0, "t1_c": 3.0, "t2_c": 3.0, "t3_c": 0.0})

    assert policy.levels() == {"turbine": np.sqrt(27 / 4)}
    assert alert == "turbine"


def test_a_lone_sensor_off_does_not_carry_a_four_sensor_subsystem():
    policy = AlertPolicy(threshold=2.5, alpha=1.0, schema=_schema(shared=True))

    assert policy.observe(0.0, {"t0_c": 4.0, "t1_c": 0.0, "t2_c": 0.0, "t3_c": 0.0}) is None
    assert policy.level == 2.0


def _scaled(schema: Schema, reading: dict[str, float], offset: float) -> dict[str, float]:
    return schema.scale(reading | {k: v + offset for k, v in reading.items() if k != "load_pct"})


def test_once_it_has_its_own_readings_the_fleets_model_is_centred_on_them():
    schema, rng = _schema(shared=True), np.random.default_rng(3)
    # Five healthy vehicles whose temperatures sit 5 degrees apart from one another.
    fleet = np.array([list(_scaled(schema, _reading(rng), offset).values())
                      for offset in (-10, -5, 0, 5, 10) for _ in range(100)])
    prior = ModelSummary.from_array(schema.names, fleet)
    detectors, own = {}, {}
    for name, offset, after in (("near", 8, 60), ("far", 40, 60), ("never", 8, 0)):
        mine = [_scaled(schema, _reading(rng), offset) for _ in range(80)]
        detectors[name] = detector = FleetGaussian(schema, prior_readings=500,
                                                   own_mean_after=after)
        detector.set_global(prior)
        for x in mine:
            detector.learn_one(x)
        rows = np.array([list(x.values()) for x in mine])
        own[name] = ModelSummary.from_array(schema.names, rows)

    near = detectors["near"]
    # Within the fleet's spread its own mean is this vehicle's normal...
    assert np.allclose(near.model().mean, own["near"].mean)
    assert np.allclose(near.model().cov, (500 * prior.cov + 80 * own["near"].cov) / 580)
    # ...far outside it, as a worn vehicle's, or when told never to, the fleet's mean weighs in.
    for name in ("far", "never"):
        assert np.allclose(detectors[name].model().mean,
                           (500 * prior.mean + 80 * own[name].mean) / 580)


def test_a_calibrated_threshold_is_a_factor_over_the_baselines_highest_level():
    policy = AlertPolicy(threshold=9.0, alpha=1.0, schema=_schema(shared=True),
                         calibrate_readings=3, calibrate_factor=1.25)
    baseline = [{"t0_c": z, "t1_c": z, "t2_c": z, "t3_c": z} for z in (0.5, 2.0, 1.0)]

    assert [policy.observe(float(t), r) for t, r in enumerate(baseline)] == [None] * 3
    assert policy.threshold == 2.5
    assert policy.observe(3.0, dict.fromkeys(baseline[0], 2.4)) is None
    assert policy.observe(4.0, dict.fromkeys(baseline[0], 2.6)) == "turbine"
    assert policy.threshold == 2.5  # later readings do not move it


def test_a_baseline_that_never_scored_keeps_the_given_threshold():
    policy = AlertPolicy(threshold=9.0, calibrate_readings=2, calibrate_factor=2.0)
    for t in range(3):
        policy.observe(float(t), {"coolant_temp_c": 0.0})
    assert policy.threshold == 9.0
    with pytest.raises(ValueError):
        AlertPolicy(calibrate_readings=-1)


def test_the_rig_preset_calibrates_on_the_benchmarks_training_part():
    policy = TEST_RIG.policy(_schema(shared=True))

    assert (policy.calibrate_readings, policy.calibrate_factor) == (400, 1.0)
    assert TEST_RIG.burn_in_readings == 400


CMAPSS = Path(__file__).parent.parent.parent / "shared" / "datasets" / "cmapss"


def test_on_turbofan_engines_the_fleets_model_beats_each_engine_alone():
    fleet = load(f"cmapss:{CMAPSS}", limit=20)

    report, _ = evaluate(fleet, epsilons=[], seed=0)

    federated, local = report["regimes"]["federated"], report["regimes"]["local"]
    assert tuning_for(fleet) is ENGINE_CYCLES
    assert federated["pr_auc"] > 0.9
    assert federated["pr_auc"] > local["pr_auc"] + 0.1
    assert federated["false_alarms_per_1000"] < local["false_alarms_per_1000"]
