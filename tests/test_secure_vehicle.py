"""A vehicle's secure releases without a network: it joins, pays first, refuses what does
not fit (devices/onboard/secure.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devices.onboard.ledger import PrivacyLedger
from devices.onboard.secure import SecureReleases
from devices.onboard.vehicle import Vehicle
from devices.sim.simulator import SimulatedVehicle
from federation import topics
from federation.features import VEHICLE_SCHEMA
from federation.privacy import GaussianMechanism
from federation.secagg import SecAggConfig, SecAggServer, messages
from federation.secagg.messages import MaskedInput, SecureRound
from federation.secagg.noise import SeededIntegerNoise
from federation.secagg.randomness import SeededBytes
from federation.whitening import Whitening, public_centre

IDS = [f"veh-{i:04d}" for i in range(4)]
DIMENSION = Whitening(public_centre(VEHICLE_SCHEMA.names)).size


def fleet(tmp_path) -> tuple[list[Vehicle], SecureReleases]:
    releases = SecureReleases(epsilon_budget=8.0, releases=3, delta=1e-5,
                              noise=SeededIntegerNoise(0), random_bytes=SeededBytes(0))
    vehicles = [Vehicle(v, SimulatedVehicle(v, seed=i), clock=lambda: 0.0, secure=releases,
                        mechanism=GaussianMechanism(epsilon=4.0, delta=1e-5, clip_norm=4.0),
                        ledger=PrivacyLedger(tmp_path / f"{v}.jsonl", budget=8.0, delta=1e-5),
                        first_release_readings=5)
                for i, v in enumerate(IDS)]
    for vehicle in vehicles:
        for _ in range(10):
            vehicle.step()
    return vehicles, releases


def announce(vehicles: list[Vehicle], epsilon: float) -> SecureRound:
    announced = SecureRound.about(1, 0, SecAggConfig(DIMENSION, 16.0, epsilon),
                                  (10.0, 20.0, 30.0, 40.0))
    for vehicle in vehicles:
        vehicle.on_message(topics.SECAGG_ROUND_TOPIC, messages.encode(announced))
    return announced


def answers(vehicle: Vehicle, message: messages.SecAggMessage) -> list:
    vehicle.on_message(topics.secagg_reply_topic(vehicle.vehicle_id), messages.encode(message))
    return [out.message for out in vehicle.take_part()]


def test_a_vehicle_pays_for_its_secure_release_before_it_hands_out_its_masked_input(tmp_path):
    vehicles, releases = fleet(tmp_path)
    announced = announce(vehicles, releases.epsilon)
    server = SecAggServer(1, announced.config, len(IDS))

    for vehicle in vehicles:
        (advertise,) = [out.message for out in vehicle.take_part()]
        server.receive(advertise)
    for vehicle, roster in zip(vehicles, server.rosters().values(), strict=True):
        server.receive(answers(vehicle, roster)[0])
    relays = server.relays()
    sent = answers(vehicles[0], relays[IDS[0]])

    assert isinstance(sent[0], MaskedInput) and sent[0].readings == 10
    (entry,) = vehicles[0].ledger.entries
    assert [s.kind for s in entry.spends] == ["zcdp"]
    assert entry.spends[0].parameter == pytest.approx(server.plan.rho)
    assert vehicles[0].ledger.epsilon_total == pytest.approx(server.plan.epsilon)
    assert vehicles[0].updates_sent == 1 and vehicles[1].ledger.entries == []


def test_a_vehicle_refuses_a_secure_round_asking_more_than_its_budget_allows(tmp_path):
    vehicles, releases = fleet(tmp_path)

    announce(vehicles, 2 * releases.epsilon)

    assert vehicles[0].take_part() == []
    assert all(v.rejected["bad_params"] == 1 for v in vehicles)


@pytest.mark.parametrize(("change", "reason"), [
    ({"round": 2}, "wrong_round"), ({"vehicle_id": IDS[1]}, "not_addressed")])
def test_a_vehicle_refuses_a_roster_not_meant_for_it_and_stays_in_its_round(tmp_path, change,
                                                                            reason):
    vehicles, releases = fleet(tmp_path)
    announced = announce(vehicles, releases.epsilon)
    server = SecAggServer(1, announced.config, len(IDS))
    for vehicle in vehicles:
        server.receive(vehicle.take_part()[0].message)
    roster = server.rosters()[IDS[0]]

    forged = answers(vehicles[0], replace(roster, **change))
    genuine = answers(vehicles[0], roster)

    assert forged == [] and vehicles[0].rejected[reason] == 1
    assert len(genuine) == 1 and genuine[0].round == 1
