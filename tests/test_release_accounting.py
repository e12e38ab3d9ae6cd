"""A vehicle's releases compose to its budget, by dp-accounting's own count, across restarts."""

from __future__ import annotations

import dp_accounting
import pytest

from devices.onboard.ledger import PrivacyLedger
from devices.onboard.vehicle import Vehicle
from federation import messages, topics
from federation.messages import RoundOpen, Update
from federation.privacy import SeededNoise, calibrated
from tests.test_vehicle import Steady


def _composed(multiplier: float, releases: int, delta: float) -> float:
    """The total of ``releases`` Gaussian releases, by dp-accounting called directly."""
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.GaussianDpEvent(multiplier), releases)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("budget", "releases", "delta"),
                         [(1.0, 3, 1e-5), (1.0, 3, 1e-3), (0.5, 4, 1e-4), (8.0, 2, 1e-5)])
def test_the_calibrated_releases_spend_the_budget_by_dp_accountings_count(budget, releases,
                                                                          delta):
    mechanism = calibrated("gaussian", budget, releases, delta, 4.0)

    total = _composed(mechanism.spend.parameter, releases, delta)

    assert 0.99 * budget <= total <= budget * 1.001
    assert _composed(mechanism.spend.parameter, releases + 1, delta) > budget


def _run(vehicle: Vehicle, rounds: range, steps: int = 100) -> list[Update]:
    sent = []
    for number in rounds:
        vehicle.on_message(topics.ROUND_TOPIC, messages.encode(RoundOpen(number, 0.0, 1e9, 1, 0)))
        sent += [o.message for _ in range(steps) for o in vehicle.step()
                 if isinstance(o.message, Update)]
    return sent


def test_a_vehicle_restarted_mid_plan_never_passes_its_budget(tmp_path):
    budget, releases, delta = 1.0, 3, 1e-5
    mechanism = calibrated("gaussian", budget, releases, delta, 4.0)
    path = tmp_path / "veh-0001.jsonl"

    def start() -> Vehicle:
        return Vehicle("veh-0001", Steady(), mechanism=mechanism, noise=SeededNoise(1),
                       ledger=PrivacyLedger(path, budget=budget, delta=delta),
                       first_release_readings=100, release_growth=2.0, clock=lambda: 0.0)

    sent = _run(start(), range(1, 4))  # 300 readings: releases at 100 and 200
    sent += _run(start(), range(4, 8))  # a fresh start: it needs 400 more for the third
    sent += _run(start(), range(8, 20))  # nothing is left to pay for another

    ledger = PrivacyLedger(path, budget=budget, delta=delta)
    assert len(sent) == releases == len(ledger.entries)
    assert ledger.epsilon_total <= budget
    assert _composed(mechanism.spend.parameter, len(ledger.entries), delta) <= budget * 1.001
    assert start().exhausted
