"""The detector and alert policy on schemas whose subsystems have several sensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analytics.datasets import load
from analytics.replay import tuning_for
from analytics.report import evaluate
from devices.alerts import AlertPolicy
from devices.detector import FleetGaussian
from devices.tuning import ENGINE_CYCLES
from federation.features import Feature, Schema


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


CMAPSS = Path(__file__).parent.parent.parent / "shared" / "datasets" / "cmapss"


def test_on_turbofan_engines_the_fleets_model_beats_each_engine_alone():
    fleet = load(f"cmapss:{CMAPSS}", limit=20)

    report, _ = evaluate(fleet, epsilons=[], seed=0)

    federated, local = report["regimes"]["federated"], report["regimes"]["local"]
    assert tuning_for(fleet) is ENGINE_CYCLES
    assert federated["pr_auc"] > 0.9
    assert federated["pr_auc"] > local["pr_auc"] + 0.1
    assert federated["false_alarms_per_1000"] < local["false_alarms_per_1000"]
