"""A vehicle's privacy: what leaves it is clipped, spending is on disk, the budget stops it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from devices.onboard.ledger import LedgerError, PrivacyLedger, Release
from devices.onboard.vehicle import Outgoing, Vehicle
from devices.sources import Reading
from federation import messages, topics
from federation.accounting import Spend, epsilon_spent
from federation.features import FEATURES
from federation.messages import RoundOpen, Status, Update
from federation.privacy import (
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    SeededNoise,
    public_centre,
)
from federation.randomized_response import RandomizedResponse
from federation.whitening import Whitening
from tests.test_vehicle import Steady

MECHANISM = GaussianMechanism(epsilon=1.0, delta=1e-5, clip_norm=0.5)


class Hostile(Steady):
    """Readings an attacker would pick: enormous, tiny, NaN and infinite values in turn."""

    def read(self) -> Reading:
        self.t += 1.0
        choice = int(self.t) % 4
        value = [1e300, -1e300, math.nan, math.inf][choice]
        values = {f.name: (value if i % 2 == choice % 2 else f.high * 1e6)
                  for i, f in enumerate(FEATURES)}
        return Reading(self.t, values)


def _vehicle(mechanism: Mechanism | None = MECHANISM, ledger: PrivacyLedger | None = None,
             **kwargs) -> Vehicle:
    """A vehicle that releases in every round (after 30 readings, then every round), so that
    these tests see the ledger and the budget at work round by round."""
    kwargs = {"first_release_readings": 30, "release_growth": 1.0} | kwargs
    return Vehicle("veh-0001", kwargs.pop("source", Steady()), mechanism=mechanism,
                   ledger=ledger, noise=kwargs.pop("noise", SeededNoise(1)),
                   clock=lambda: 0.0, **kwargs)


def _run_rounds(vehicle: Vehicle, rounds: range, steps: int = 40) -> list[Outgoing]:
    out = []
    for number in rounds:
        vehicle.on_message(topics.ROUND_TOPIC,
                           messages.encode(RoundOpen(number, 0.0, 100.0, 1, 0)))
        out += [o for _ in range(steps) for o in vehicle.step()]
    return out


def _updates(out: list[Outgoing]) -> list[Update]:
    return [o.message for o in out if isinstance(o.message, Update)]


def _statuses(out: list[Outgoing]) -> list[Status]:
    return [o.message for o in out if isinstance(o.message, Status)]


@pytest.mark.parametrize(("mechanism", "order"), [
    (GaussianMechanism(1.0, 1e-5, 0.05), 2), (LaplaceMechanism(1.0, 1e-5, 0.05), 1)])
def test_no_summary_leaves_a_vehicle_above_its_clip_norm_even_from_hostile_readings(
        mechanism, order):
    vehicle = _vehicle(mechanism, central=True, source=Hostile())

    sent = _updates(_run_rounds(vehicle, range(1, 6), steps=200))

    pack = Whitening(public_centre(sent[0].summary.features)).pack  # no fleet model yet
    norms = [np.linalg.norm(pack(u.summary), ord=order) for u in sent]
    bound = mechanism.about(public=True).clip_norm
    assert len(sent) == 5 and all(u.privacy == "central" and u.noise_std == 0 for u in sent)
    assert all(u.clip_norm == bound for u in sent)
    assert max(norms) <= bound * (1 + 1e-9)
    assert vehicle.rejected["not_finite"] > 0
    assert np.isfinite(vehicle.detector.model().cov).all()


def test_every_update_carries_what_it_spent_and_the_composed_total():
    vehicle = _vehicle(ledger=PrivacyLedger(None, budget=10.0, delta=1e-5))

    sent = _updates(_run_rounds(vehicle, range(1, 5)))

    assert [u.epsilon for u in sent] == [1.0] * 4
    assert [u.epsilon_total for u in sent] == [
        pytest.approx(epsilon_spent([MECHANISM.spend] * k, 1e-5)) for k in range(1, 5)]
    assert all(u.epsilon_budget == 10.0 and u.mechanism == "gaussian" for u in sent)


def test_a_vehicle_at_its_budget_stops_publishing_and_says_so_also_after_a_restart(tmp_path):
    path = tmp_path / "veh-0001.jsonl"
    three_rounds = epsilon_spent([MECHANISM.spend] * 3, 1e-5)
    vehicle = _vehicle(ledger=PrivacyLedger(path, budget=three_rounds, delta=1e-5))

    out = _run_rounds(vehicle, range(1, 7))

    assert [u.round for u in _updates(out)] == [1, 2, 3]
    assert [s.exhausted for s in _statuses(out)] == [True]
    assert vehicle.exhausted and vehicle.detector.recent_readings > 100  # still learning

    restarted = _vehicle(ledger=PrivacyLedger(path, budget=three_rounds, delta=1e-5))
    out = _run_rounds(restarted, range(7, 10))

    assert _updates(out) == []
    assert restarted.status("online").message.exhausted
    assert restarted.ledger.epsilon_total == pytest.approx(three_rounds)
    assert len(path.read_text().splitlines()) == 3


def test_a_restarted_vehicle_goes_on_from_its_ledger_and_resends_what_it_paid_for(tmp_path):
    path = tmp_path / "veh-0001.jsonl"
    budget = epsilon_spent([MECHANISM.spend] * 3, 1e-5)
    before = _run_rounds(_vehicle(ledger=PrivacyLedger(path, budget=budget, delta=1e-5)),
                         range(1, 3))

    restarted = _vehicle(ledger=PrivacyLedger(path, budget=budget, delta=1e-5))
    out = _run_rounds(restarted, range(2, 6))

    sent = _updates(out)
    # Round 2 is still open: its update, perhaps never published, goes again at no new cost;
    # then the one round the budget has left.
    assert [u.round for u in sent] == [2, 3]
    assert out[0].payload == before[-1].payload
    assert sent[1].epsilon_total == pytest.approx(budget)
    assert [e.round for e in restarted.ledger.entries] == [1, 2, 3]


@pytest.mark.parametrize(("before", "after", "sent"), [
    (range(1, 3), range(3, 5), [3, 4]),  # the round it paid for last has closed
    (range(5, 8), range(1, 3), [1, 2]),  # a gateway that started over with a new store
])
def test_a_restarted_vehicle_takes_part_in_every_round_but_the_one_it_paid_for_last(
        tmp_path, before, after, sent):
    path = tmp_path / "veh-0001.jsonl"
    _run_rounds(_vehicle(ledger=PrivacyLedger(path, budget=10.0, delta=1e-5)), before)

    restarted = _vehicle(ledger=PrivacyLedger(path, budget=10.0, delta=1e-5))
    out = _updates(_run_rounds(restarted, after))

    assert [u.round for u in out] == sent
    assert [e.round for e in restarted.ledger.entries] == [*before, *sent]


def test_a_restarted_vehicle_repeats_its_days_alert_answer_without_paying_again(tmp_path):
    path = tmp_path / "veh-0001.jsonl"
    rr = RandomizedResponse()
    first = _updates(_run_rounds(
        _vehicle(ledger=PrivacyLedger(path, budget=50.0, delta=1e-5), alert_report=rr),
        range(1, 3)))

    restarted = _vehicle(ledger=PrivacyLedger(path, budget=50.0, delta=1e-5), alert_report=rr,
                         noise=SeededNoise(99))
    again = _updates(_run_rounds(restarted, range(3, 6)))

    answers = {(u.alert_report.day, u.alert_report.answer) for u in first + again}
    assert len(answers) == 1
    spends = [s for entry in restarted.ledger.entries for s in entry.spends]
    assert spends.count(rr.spend) == 1
    assert again[-1].epsilon_total == pytest.approx(
        epsilon_spent([MECHANISM.spend] * 5 + [rr.spend], 1e-5))


def test_only_the_release_of_the_last_round_paid_for_comes_back(tmp_path):
    path = tmp_path / "veh-0001.jsonl"
    ledger = PrivacyLedger(path, budget=5.0, delta=1e-5)
    ledger.record(1, [Spend("laplace", 1.0)], ts=0.0, release=b"one")
    ledger.record(2, [Spend("laplace", 1.0)], ts=1.0, release=b"two")
    assert PrivacyLedger(path, budget=5.0, delta=1e-5).release == Release(2, b"two")

    ledger.record(3, [Spend("laplace", 1.0)], ts=2.0)

    assert PrivacyLedger(path, budget=5.0, delta=1e-5).release is None  # round 2's: stale


def test_a_line_cut_short_by_a_crash_is_dropped_and_any_other_damage_is_refused(tmp_path):
    path = tmp_path / "veh-0001.jsonl"
    ledger = PrivacyLedger(path, budget=5.0, delta=1e-5)
    ledger.record(1, [Spend("laplace", 1.0)], ts=0.0)
    ledger.record(2, [Spend("laplace", 1.0)], ts=1.0)
    whole = path.read_text()

    path.write_text(whole + '{"v": 1, "round": 3, "ts"')
    assert PrivacyLedger(path, budget=5.0, delta=1e-5).last_round == 2

    path.write_text(whole.replace('"round": 1', '"round": "one"'))
    with pytest.raises(LedgerError, match="line 1 is damaged"):
        PrivacyLedger(path, budget=5.0, delta=1e-5)


def test_a_ledger_that_cannot_be_written_stops_updates(tmp_path):
    folder = tmp_path / "ledgers"
    vehicle = _vehicle(ledger=PrivacyLedger(folder / "veh-0001.jsonl", budget=10.0, delta=1e-5))
    shutil.rmtree(folder)
    folder.write_text("a file where the ledger folder should be")

    out = _run_rounds(vehicle, range(1, 3))

    assert _updates(out) == [] and vehicle.exhausted


def test_without_privacy_updates_say_so_and_spend_nothing():
    vehicle = _vehicle(mechanism=None)

    sent = _updates(_run_rounds(vehicle, range(1, 3)))

    assert [(u.privacy, u.mechanism, u.epsilon, u.epsilon_total) for u in sent] == [
        ("off", "none", 0.0, 0.0)] * 2


def test_alert_answers_are_drawn_once_per_day_and_truth_and_accounted(tmp_path):
    rr = RandomizedResponse()
    vehicle = _vehicle(ledger=PrivacyLedger(None, budget=50.0, delta=1e-5), alert_report=rr)

    sent = _updates(_run_rounds(vehicle, range(1, 6)))

    answers = {(u.alert_report.day, u.alert_report.answer) for u in sent if u.alert_report}
    assert len(sent) == 5 and len(answers) == 1
    spends = [s for entry in vehicle.ledger.entries for s in entry.spends]
    assert spends.count(rr.spend) == 1
    assert sent[-1].epsilon_total == pytest.approx(
        epsilon_spent([MECHANISM.spend] * 5 + [rr.spend], 1e-5))


def test_budget_files_live_where_they_are_asked_to(tmp_path: Path):
    from fedfleet.config import resolve
    from fedfleet.privacy import ledgers, vehicle_options

    settings = resolve("fleet", {"epsilon_budget": 4.0},
                       {"FEDFLEET_ALERT_REPORT_EPSILON": "1.0986"})
    ledger = ledgers(settings, tmp_path)("veh-0042")

    assert ledger is not None
    assert ledger.path == tmp_path / "veh-0042.jsonl" and ledger.budget == 4.0
    assert vehicle_options(settings)["alert_report"].epsilon == pytest.approx(math.log(3), 1e-4)
    assert ledgers(settings | {"privacy": "off"}, tmp_path)("veh-0042") is None
