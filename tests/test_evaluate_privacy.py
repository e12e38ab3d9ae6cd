"""Privacy in the evaluation: calibrated budgets, the live mechanisms, and the command's flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dp_accounting.pld import privacy_loss_distribution as pld

from analytics.datasets import load
from analytics.replay import Schedule, run_online
from devices.onboard.tuning import ENGINE_CYCLES
from federation.accounting import rounds_within
from federation.privacy import calibrated, make_mechanism
from fedfleet.cli import main

CMAPSS = Path(__file__).parent.parent.parent / "shared" / "datasets" / "cmapss"
DELTA = 1e-5
# The calibration stops within this relative distance below the budget.
TOLERANCE = 2e-3


def _composed_directly(kind: str, multiplier: float, updates: int) -> float:
    """The library's own composition of ``updates`` releases, built without our accountant."""
    one = (pld.from_gaussian_mechanism(multiplier) if kind == "gaussian"
           else pld.from_laplace_mechanism(multiplier))
    return float(one.self_compose(updates).get_epsilon_for_delta(DELTA))


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
@pytest.mark.parametrize(("budget", "updates"), [(0.5, 14), (8.0, 14), (30.0, 5)])
def test_calibrated_updates_compose_to_the_budget(kind, budget, updates):
    mechanism = calibrated(kind, budget, updates, DELTA, 4.0)

    total = _composed_directly(kind, mechanism.spend.parameter, updates)
    assert budget * (1 - TOLERANCE) <= total <= budget * (1 + 1e-4)
    assert rounds_within(mechanism.spend, budget, DELTA) == updates
    assert mechanism.epsilon >= budget / updates  # never below an even split


def test_gaussian_calibration_spends_far_more_per_update_than_an_even_split():
    mechanism = calibrated("gaussian", 10.0, 14, DELTA, 4.0)

    assert mechanism.epsilon > 2 * 10.0 / 14
    assert mechanism.noise_std < make_mechanism("gaussian", 10.0 / 14, DELTA, 4.0).noise_std / 2


@pytest.fixture(scope="module")
def engines():
    fleet = load(f"cmapss:{CMAPSS}", limit=4)
    return fleet, Schedule.plan(fleet, seed=2, round_rows=20, late_fraction=0.0)


def test_central_noise_goes_through_the_gateway_and_is_smaller_than_local(engines):
    fleet, plan = engines
    mechanism = calibrated("gaussian", 1000.0, 3, DELTA, 4.0)

    local = run_online(fleet, plan, "federated_dp", seed=2, mechanism=mechanism, budget=1000.0)
    central = run_online(fleet, plan, "federated_dp", seed=2, mechanism=mechanism, budget=1000.0,
                         central=True)

    assert central.updates == local.updates > 0
    assert 0 < central.noise_std < local.noise_std
    assert 0 < central.epsilon_spent <= 1000.0 and central.epsilon_spent == local.epsilon_spent


def test_each_device_makes_the_releases_its_budget_pays_for_and_no_more(engines):
    fleet, plan = engines
    mechanism = make_mechanism("laplace", 1.0, DELTA, 4.0)
    assert rounds_within(mechanism.spend, 2.5, DELTA) == 2
    assert all(ENGINE_CYCLES.releases_within(len(s)) >= 2 for s in fleet.streams)

    run = run_online(fleet, plan, "federated_dp", seed=2, mechanism=mechanism, budget=2.5)

    assert run.updates == 2 * len(fleet.streams)
    assert run.epsilon_spent == pytest.approx(2.0, rel=1e-3)


def test_evaluate_runs_with_the_privacy_flags(tmp_path, capsys):
    out = tmp_path / "report.json"

    code = main(["evaluate", "--dataset", f"cmapss:{CMAPSS}", "--devices", "3", "--seed", "1",
                 "--epsilon-budget", "2", "--privacy", "local", "--mechanism", "laplace",
                 "--delta", "1e-6", "--out", str(out)])

    assert code == 0
    report = json.loads(out.read_text())
    releases = report["settings"]["releases"]
    assert {k: report["settings"][k] for k in ("privacy", "mechanism", "delta", "epsilons")} == {
        "privacy": "local", "mechanism": "laplace", "delta": 1e-6, "epsilons": [2.0]}
    noised = report["regimes"]["federated_dp_eps=2"]
    assert noised["epsilon_per_release"] == pytest.approx(2.0 / releases, rel=1e-3)
    assert 0 < noised["epsilon_spent"] <= 2.0
    assert 0 < noised["updates"] <= 3 * releases
    assert "federated_dp_eps=2: spent up to" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--epsilon", "0"], "epsilon-budget must be greater than 0 and at most 100,000 "
                          "(beyond it, use --privacy off), got 0.0"),
     (["--epsilon", "-1"], "epsilon-budget must be greater than 0 and at most 100,000"),
     (["--epsilon", "inf"], "epsilon-budget must be greater than 0 and at most 100,000"),
     (["--epsilon", "1", "--delta", "1"], "delta must be strictly between 0 and 1, got 1.0"),
     (["--epsilon", "1", "--delta", "0"], "delta must be strictly between 0 and 1"),
     (["--delta", "-0.1"], "delta must be strictly between 0 and 1"),
     (["--epsilon", "1", "--privacy", "off"], "--privacy off runs no noised regime"),
     (["--mechanism", "exponential"], "invalid choice")],
)
def test_evaluate_refuses_nonsense_privacy_values(args, message, capsys):
    try:
        code = main(["evaluate", "--dataset", "sim:3", *args])
    except SystemExit as exc:  # argparse refuses a choice it does not know
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("privacy", ["central", "local"])
def test_on_a_small_fleet_privacy_leaves_nearly_every_device_no_worse_than_alone(
        tmp_path, capsys, privacy):
    out = tmp_path / "report.json"

    code = main(["evaluate", "--dataset", f"cmapss:{CMAPSS}", "--devices", "30", "--seed", "0",
                 "--epsilon", "0.5", "--epsilon", "4", "--epsilon", "100", "--privacy", privacy,
                 "--out", str(out)])

    assert code == 0, capsys.readouterr().err
    counts = json.loads(out.read_text())["no_worse_than_local"]
    assert sorted(counts) == ["federated_dp_eps=0.5", "federated_dp_eps=100", "federated_dp_eps=4"]
    for regime, count in counts.items():
        assert count["devices"] == 30 and count["margin"] == 0.01
        assert count["no_worse"] >= 0.95 * count["devices"], (regime, count)


def test_evaluate_secure_rounds_carry_the_protocols_noise_and_spend_the_whole_budget(tmp_path):
    runs = {}
    for privacy in ("central", "secagg"):
        out = tmp_path / f"{privacy}.json"
        code = main(["evaluate", "--dataset", f"cmapss:{CMAPSS}", "--devices", "30",
                     "--seed", "0", "--epsilon", "1", "--privacy", privacy, "--out", str(out)])
        assert code == 0
        runs[privacy] = json.loads(out.read_text())["regimes"]["federated_dp_eps=1"]

    ratio = runs["secagg"]["noise_std_per_release"] / runs["central"]["noise_std_per_release"]
    # A round of N releases carries sqrt(N / (N - N/3 - N/20)) times the promised noise, below
    # 1.28 for any N; the zCDP accounting of the discrete Gaussian costs some more (under a
    # fifth) on top.
    assert 1.0 < ratio < 1.2 * (1 / (1 - 1 / 3 - 0.05)) ** 0.5
    assert runs["secagg"]["secure_sums"] > 1
    # Three zCDP releases compose to the whole budget (central's PLD calibration to just under).
    assert runs["secagg"]["epsilon_spent"] == pytest.approx(1.0, abs=1e-3)
