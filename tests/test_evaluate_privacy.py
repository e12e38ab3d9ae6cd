"""Privacy in the evaluation: calibrated budgets, the live mechanisms, and the command's flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dp_accounting.pld import privacy_loss_distribution as pld

from analytics.datasets import load
from analytics.replay import Schedule, privacy_mechanism, run_online
from federation.accounting import Spend, rounds_within
from federation.privacy import make_mechanism
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
    mechanism = privacy_mechanism(budget, updates, DELTA, kind=kind)

    total = _composed_directly(kind, mechanism.spend.parameter, updates)
    assert budget * (1 - TOLERANCE) <= total <= budget * (1 + 1e-4)
    assert rounds_within(mechanism.spend, budget, DELTA) == updates
    assert mechanism.epsilon >= budget / updates  # never below an even split


def test_gaussian_calibration_spends_far_more_per_update_than_an_even_split():
    mechanism = privacy_mechanism(10.0, 14, DELTA)

    assert mechanism.epsilon > 2 * 10.0 / 14
    assert mechanism.noise_std < make_mechanism("gaussian", 10.0 / 14, DELTA, 0.5).noise_std / 2


@pytest.fixture(scope="module")
def engines():
    fleet = load(f"cmapss:{CMAPSS}", limit=4)
    return fleet, Schedule.plan(fleet, seed=2, round_rows=20, late_fraction=0.0)


def test_central_noise_goes_through_the_gateway_and_is_smaller_than_local(engines):
    fleet, plan = engines
    mechanism = privacy_mechanism(4.0, 20, DELTA)

    local = run_online(fleet, plan, "federated_dp", seed=2, mechanism=mechanism, budget=4.0)
    central = run_online(fleet, plan, "federated_dp", seed=2, mechanism=mechanism, budget=4.0,
                         central=True)

    assert central.updates == local.updates > 0
    assert 0 < central.noise_std < local.noise_std
    assert 0 < central.epsilon_spent <= 4.0 and central.epsilon_spent == local.epsilon_spent


def test_a_fixed_spend_per_round_stops_each_device_at_its_budget(engines):
    fleet, plan = engines
    mechanism = make_mechanism("laplace", 1.0, DELTA, 0.5)
    assert rounds_within(mechanism.spend, 2.5, DELTA) == 2

    run = run_online(fleet, plan, "federated_dp", seed=2, mechanism=mechanism, budget=2.5)

    assert run.updates == 2 * len(fleet.streams)
    assert run.epsilon_spent == pytest.approx(2.0, rel=1e-3)


def test_evaluate_runs_with_the_privacy_flags(tmp_path, capsys):
    out = tmp_path / "report.json"

    code = main(["evaluate", "--dataset", f"cmapss:{CMAPSS}", "--devices", "3", "--seed", "1",
                 "--epsilon-budget", "2", "--privacy", "central", "--mechanism", "laplace",
                 "--delta", "1e-6", "--epsilon-per-round", "0.5", "--out", str(out)])

    assert code == 0
    report = json.loads(out.read_text())
    assert {k: report["settings"][k] for k in ("privacy", "mechanism", "delta",
                                               "epsilon_per_round", "epsilons")} == {
        "privacy": "central", "mechanism": "laplace", "delta": 1e-6,
        "epsilon_per_round": 0.5, "epsilons": [2.0]}
    noised = report["regimes"]["federated_dp_eps=2"]
    assert noised["epsilon_per_update"] == 0.5 and 0 < noised["epsilon_spent"] <= 2.0
    assert noised["updates"] == 3 * rounds_within(Spend("laplace", 2.0), 2.0, 1e-6)
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
     (["--epsilon", "1", "--epsilon-per-round", "2"],
      "epsilon-budget must be at least one round's epsilon (2)"),
     (["--epsilon", "1", "--epsilon-per-round", "0"], "epsilon-per-round must be greater than 0"),
     (["--epsilon-per-round", "1"], "--epsilon-per-round needs at least one --epsilon-budget"),
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
