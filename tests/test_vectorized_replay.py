"""The replay on arrays gives the per-reading replay's scores and alarms: every regime, on a
simulated fleet with late devices, faults and missing values, a slice of C-MAPSS and a few
hundred rows of SKAB."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from river import covariance

import analytics.shared
from analytics.attacks import Attack
from analytics.batch import run_batch, scored_devices
from analytics.datasets import Dataset, Stream, load
from analytics.moments import RunningMoments
from analytics.policies import Policies
from analytics.replay import Run, Schedule, run_online, tuning_for
from analytics.report import _mechanism, _sampled
from analytics.secure import SecureRounds
from analytics.vectorized import CHUNK_TICKS, run_vectorized
from devices.onboard.tuning import TEST_RIG, VEHICLE
from federation.features import VEHICLE_SCHEMA
from federation.privacy import make_mechanism
from federation.summary import ModelSummary
from gateway.strategy import make_strategy

DATA = Path(__file__).parent.parent.parent / "shared" / "datasets"
TOLERANCE = 1e-9


def _with_gaps(fleet: Dataset) -> Dataset:
    """Some readings of two vehicles lose a channel (a NaN), one loses two."""
    streams = []
    for k, s in enumerate(fleet.streams):
        values = s.values.copy()
        if k in (1, 6):
            values[100 + 7 * k::97, k % values.shape[1]] = np.nan
            values[2000::500, 4] = np.inf
        streams.append(Stream(s.device_id, s.times_s, values, s.labels, s.failure_s))
    return replace(fleet, streams=streams)


def _head(fleet: Dataset, rows: int) -> Dataset:
    return replace(fleet, streams=[Stream(s.device_id, s.times_s[:rows], s.values[:rows],
                                          s.labels[:rows]) for s in fleet.streams])


FLEETS = {
    "sim": lambda: (_with_gaps(load("sim:12", seed=3, duration_s=3600, late_fraction=0.25)),
                    30, 0.25),
    "cmapss": lambda: (load(f"cmapss:{DATA / 'cmapss'}", limit=8), 20, 0.25),
    "skab": lambda: (_head(load(f"skab:{DATA / 'skab'}", limit=4), 500), 30, 0.25),
}
PRIVATE = {"mechanism": make_mechanism("gaussian", 2.0, 1e-5, 0.5)}
REGIMES = {
    "local": {}, "federated": {}, "centralized": {},
    "federated_dp": PRIVATE | {"budget": 2.5},  # the second release does not fit the budget
    "federated_dp_central": PRIVATE | {"budget": 4.0, "central": True},
}


@pytest.fixture(scope="module", params=sorted(FLEETS))
def fleet(request: pytest.FixtureRequest) -> tuple[Dataset, Schedule]:
    dataset, round_rows, late = FLEETS[request.param]()
    return dataset, Schedule.plan(dataset, seed=3, round_rows=round_rows, late_fraction=late)


def _assert_same(vectorized: Run, online: Run) -> None:
    assert vectorized.scores.keys() == online.scores.keys()
    for device, scores in online.scores.items():
        np.testing.assert_allclose(vectorized.scores[device], scores, rtol=TOLERANCE,
                                   atol=TOLERANCE, err_msg=device)
        np.testing.assert_array_equal(vectorized.alarms[device], online.alarms[device],
                                      err_msg=device)
    assert vectorized.thresholds == pytest.approx(online.thresholds, rel=TOLERANCE)
    assert (vectorized.rounds, vectorized.updates, vectorized.rejected) == (
        online.rounds, online.updates, online.rejected)
    assert vectorized.epsilon_spent == online.epsilon_spent
    if online.model is not None:
        assert vectorized.model is not None
        assert vectorized.model.version == online.model.version
        assert vectorized.noise_std == pytest.approx(online.noise_std, rel=TOLERANCE)
        np.testing.assert_allclose(vectorized.model.summary.cov, online.model.summary.cov,
                                   rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_every_regime_scores_as_the_per_reading_replay(fleet, regime):
    dataset, plan = fleet
    kwargs = REGIMES[regime]
    name = regime.removesuffix("_central")

    online = run_online(dataset, plan, name, seed=3, **kwargs)
    vectorized = run_vectorized(dataset, plan, name, seed=3, **kwargs)

    _assert_same(vectorized, online)
    assert sum(int(s.astype(bool).sum()) for s in online.scores.values()) > 0  # it scored


def test_secure_rounds_score_as_the_per_reading_replay(fleet):
    dataset, plan = fleet
    release = _mechanism("secagg", "gaussian", 4.0, 3, 1e-5, 0.5, len(dataset.streams),
                         len(dataset.schema))

    runs = [replayed(dataset, plan, "federated_dp", seed=3, mechanism=release, central=True,
                     budget=4.0, secure=SecureRounds(dataset.schema, epsilon=release.epsilon,
                                                     delta=1e-5, clip_norm=0.5, seed=3))
            for replayed in (run_online, run_vectorized)]

    _assert_same(*reversed(runs))
    sums = [[(s.inputs, s.noise_std) for s in run.secure_sums] for run in runs]
    assert sums[0] == sums[1] and sums[0]


@pytest.mark.parametrize(("attack", "regime", "strategy"), [
    ("colluding", "federated", "trimmed"),
    ("scaled", "federated", "centred-clip"),
    ("sign-flipped", "federated_dp_central", "median"),
    ("huge-counts", "federated_dp", "norm-bounded"),
])
def test_under_attack_every_strategy_scores_as_the_per_reading_replay(attack, regime, strategy):
    dataset, round_rows, late = FLEETS["sim"]()
    plan = Schedule.plan(dataset, seed=3, round_rows=round_rows, late_fraction=late)
    hostile = Attack.choose(attack, [s.device_id for s in dataset.streams], 0.25, seed=3)
    kwargs = REGIMES[regime] | {"attack": hostile, "strategy": make_strategy(strategy)}
    name = regime.removesuffix("_central")

    online = run_online(dataset, plan, name, seed=3, **kwargs)
    vectorized = run_vectorized(dataset, plan, name, seed=3, **kwargs)

    _assert_same(vectorized, online)
    assert vectorized.refused == online.refused
    assert online.infeasible_models == vectorized.infeasible_models == 0
    if attack == "huge-counts":
        assert online.refused["too_many_readings"] > 0


def test_the_simulated_fleet_exercises_what_the_replays_must_agree_on():
    dataset, round_rows, late = FLEETS["sim"]()
    plan = Schedule.plan(dataset, seed=3, round_rows=round_rows, late_fraction=late)

    local = run_online(dataset, plan, "local", seed=3)
    private = run_online(dataset, plan, "federated_dp", seed=3, **REGIMES["federated_dp"])

    assert len(plan.late) == 3 and plan.join_tick % CHUNK_TICKS  # joins inside a chunk
    assert local.rejected["not_finite"] > 50
    assert any(s.failure_s is not None for s in dataset.streams)
    assert any(local.alarms[d].any() for d in plan.late)
    assert 0 < private.epsilon_spent <= 2.5 and private.updates == len(dataset.streams)


def test_a_shared_detector_refreshed_many_times_a_tick_needs_repeated_passes(monkeypatch):
    dataset = load("sim:12", seed=4, duration_s=400, late_fraction=0)
    plan = Schedule.plan(dataset, seed=4, late_fraction=0)
    # Refreshed after every reading it learns, from its fifth, and judged on one reading's
    # residual: a tick's models differ enough for a gate to change between them.
    eager = replace(VEHICLE, refresh_every=1, min_readings=5, burn_in_readings=2,
                    learn_below=2.0, alpha=1.0)
    plans: list[int] = []
    plan_of = analytics.shared._plan
    monkeypatch.setattr(analytics.shared, "_plan",
                        lambda *args: [plans.append(1), plan_of(*args)][1])

    vectorized = run_vectorized(dataset, plan, "centralized", seed=4, tuning=eager)
    online = run_online(dataset, plan, "centralized", seed=4, tuning=eager)

    _assert_same(vectorized, online)
    assert len(plans) > 400  # some of the 400 ticks were run again from a gate that differed


def test_running_moments_are_rivers_to_the_last_bit():
    rng = np.random.default_rng(5)
    names = ("oil", "coolant", "battery", "air")
    rows = rng.random((300, 3, len(names)))
    learns = rng.random((300, 3)) < 0.7
    river = [covariance.EmpiricalCovariance(ddof=0) for _ in range(3)]
    stack = RunningMoments(names, size=3)

    for x, learn in zip(rows, learns, strict=True):
        for device in np.flatnonzero(learn):
            river[device].update(dict(zip(names, x[device], strict=True)))
        stack.learn(np.flatnonzero(learn), x[learn])

    moments = stack.moments(np.arange(3))
    for device in range(3):
        theirs = ModelSummary.from_river(river[device], names)
        assert moments.n[device] == theirs.n
        assert np.array_equal(moments.mean[device], theirs.mean)
        assert np.array_equal(moments.cov[device], theirs.cov)


def test_stacked_charts_are_the_alert_policys_own():
    rng = np.random.default_rng(6)
    rig = replace(TEST_RIG, calibrate_readings=20, calibrate_factor=1.3)
    residuals = rng.normal(0, 2, (60, 4, len(VEHICLE_SCHEMA.health)))
    alone = [rig.policy(VEHICLE_SCHEMA) for _ in range(4)]
    charts = Policies(rig.policy(VEHICLE_SCHEMA), size=4)

    for t, z in enumerate(residuals):
        levels = charts.observe(np.arange(4), z)
        for device, chart in enumerate(alone):
            chart.observe(float(t), dict(zip(VEHICLE_SCHEMA.health, z[device], strict=True)))
            assert levels[device] == chart.level

    assert charts.threshold.tolist() == [chart.threshold for chart in alone]
    assert len({chart.threshold for chart in alone}) == 4  # each calibrated on its own


def test_the_batch_reference_scores_a_seeded_sample_of_devices_above_its_limit():
    dataset = load("sim:12", seed=3, duration_s=600, late_fraction=0.25)
    plan = Schedule.plan(dataset, seed=3, late_fraction=0.25)

    run = run_batch(dataset, plan, seed=3, max_scored_rows=2000)

    chosen = [dataset.streams[i].device_id for i in scored_devices(dataset, 3, 2000)]
    assert sorted(run.scores) == sorted(chosen) and 3 <= len(chosen) < 12
    assert all(scores[plan.round_rows:].all() for scores in run.scores.values()
               if plan.start[next(iter(run.scores))] == 0)
    assert "seeded sample of 4 of 12 devices" in _sampled(dataset, run)[0]
    assert tuning_for(dataset) is VEHICLE


def test_loading_and_replaying_report_their_progress_from_start_to_end():
    heard: list[tuple[str, int, int]] = []

    dataset = load("sim:3", seed=1, duration_s=700, progress=lambda *say: heard.append(say))
    run_vectorized(dataset, Schedule.plan(dataset, seed=1), "local", seed=1,
                   progress=lambda *say: heard.append(say))

    assert [say for say in heard if say[0] == "allocating"][-1] == ("allocating", 2100, 2100)
    assert [say[1] for say in heard if say[0] == "simulating"] == [1800, 2100]
    replayed = [say[1] for say in heard if say[0] == "local"]
    assert replayed[0] == 0 and replayed[-1] == dataset.rows
