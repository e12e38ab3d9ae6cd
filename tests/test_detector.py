"""The detector and alert policy on schemas whose subsystems have several sensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analytics.datasets import load
from analytics.replay import tuning_for
from analytics.report import evaluate
from devices.onboard.alerts import AlertPolicy
from devices.onboard.detector import FleetGaussian
from devices.onboard.tuning import ENGINE_CYCLES, TEST_RIG
from federation.features import VEHICLE_SCHEMA, Feature, Schema
from federation.summary import ModelSummary, Moments


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


def test_the_level_kept_from_each_reading_is_the_largest_subsystem_level():
    policy, rng = AlertPolicy(threshold=2.5, alpha=0.3), np.random.default_rng(4)

    kept, computed = [], []
    for t_s in range(200):
        policy.observe(float(t_s), dict(zip(VEHICLE_SCHEMA.health,
                                            rng.normal(0.0, 2.0, 5).tolist(), strict=True)))
        kept.append(policy.level)
        computed.append(max(policy.levels().values()))

    assert kept == computed
    assert AlertPolicy(smoothed={"battery_v": -3.0}).level == 3.0


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


def _vehicle_rows(seed: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + 0.1 * rng.standard_normal((count, len(VEHICLE_SCHEMA))), 0, 1)


def test_a_folded_block_of_readings_counts_as_learning_them_one_by_one():
    rows = _vehicle_rows(1, 400)
    one_by_one, folded = (FleetGaussian(refresh_every=50, min_readings=100) for _ in range(2))
    for row in rows:
        one_by_one.learn_one(dict(zip(VEHICLE_SCHEMA.names, row, strict=True)))

    folded.fold(ModelSummary.from_array(VEHICLE_SCHEMA.names, rows[:150]))
    folded.fold(ModelSummary.from_array(VEHICLE_SCHEMA.names, rows[150:]))

    reading = dict(zip(VEHICLE_SCHEMA.names, rows[0] + 0.05, strict=True))
    assert folded.recent_readings == one_by_one.recent_readings == 400
    assert folded.score_one(reading) == pytest.approx(one_by_one.score_one(reading), rel=1e-9)
    mine, theirs = folded.take_summary(), one_by_one.take_summary()
    np.testing.assert_allclose(mine.cov, theirs.cov, rtol=0, atol=1e-15)
    assert folded.recent_readings == 0 and folded.take_summary().n == 0


def test_stacked_vehicles_assemble_the_models_each_assembles_alone():
    prior = ModelSummary.from_array(VEHICLE_SCHEMA.names, _vehicle_rows(0, 500))
    # Too few own readings to centre; a noisy prior drawn towards its own readings, and
    # centred on them; too far off to be centred.
    cases = ((30, 0.0, 0.0), (110, 0.0, 0.3), (150, 0.3, 0.0))
    detectors, own, trust = [], [], []
    for k, (count, shift, noise_std) in enumerate(cases):
        detectors.append(detector := FleetGaussian(own_mean_after=60))
        rows = _vehicle_rows(k + 1, count) + shift
        own.append(ModelSummary.from_array(VEHICLE_SCHEMA.names, rows))
        detector.set_global(prior, noise_std)
        detector.fold(own[-1])
        trust.append(detector.prior_for(prior, noise_std)[1])
    template = detectors[0]
    priors = [d.prior_for(prior, noise_std)[0] for d, (_, _, noise_std) in zip(
        detectors, cases, strict=True)]

    def stack(parts: list[Moments]) -> Moments:
        return Moments(*(np.stack(arrays) for arrays in zip(*parts, strict=True)))

    stacked = template.assemble(stack([p.moments for p in priors]),
                                stack([o.moments for o in own]),
                                np.stack([template.weights(p.cov) for p in priors]),
                                np.array(trust))

    alone = [d.model() for d in detectors]
    assert trust == [1.0, 0.5, 1.0]
    assert [np.array_equal(m.mean, o.mean) for m, o in zip(alone, own, strict=True)] == [
        False, True, False]
    for k, model in enumerate(alone):
        assert stacked.n[k] == model.n
        np.testing.assert_array_equal(stacked.mean[k], model.mean)
        np.testing.assert_array_equal(stacked.cov[k], model.cov)
        np.testing.assert_allclose(template.weights(stacked.cov)[k], template.weights(model.cov),
                                   rtol=1e-12, atol=0)
