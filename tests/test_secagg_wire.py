"""Secure rounds over a real Mosquitto: the gateway's phases, dropouts, refused messages, and
a fleet of real vehicles releasing through them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from devices.onboard.ledger import PrivacyLedger
from devices.onboard.secure import SecureReleases
from devices.onboard.vehicle import Vehicle
from devices.runners.agent import DeviceAgent
from devices.runners.fleet import Fleet, simulated_vehicles
from devices.sim.simulator import SimulatedVehicle
from federation.privacy import GaussianMechanism
from federation.secagg.noise import SeededIntegerNoise
from federation.secagg.params import release_epsilon
from federation.secagg.randomness import SeededBytes
from federation.secagg.server import Aggregate
from federation.transport import parse_mqtt_url
from gateway.rounds import Round
from gateway.secure import SecureGateway
from gateway.service import RoundClosed
from gateway.store import SQLiteStore
from tests.processes import wait_until
from tests.secagg_clients import Vehicles
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

ROUND_S = 3.0  # four phases, each closing early once every vehicle still in it has answered


class Gateway(SecureGateway):
    """The secure gateway, keeping each round's unmasked sum and merged round for the test."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.sums: list[Aggregate] = []
        self.closed: list[RoundClosed] = []
        self.observer = self.closed.append

    def _take(self, current: Round, aggregate: Aggregate) -> None:
        self.sums.append(aggregate)
        super()._take(current, aggregate)


class Secure:
    """A secure gateway on its own thread against ``url``; its advertise phase closes once
    ``vehicles`` have advertised (``None``: at its deadline)."""

    def __init__(self, url: str, vehicles: int | None, epsilon: float = 0.0) -> None:
        self.target = parse_mqtt_url(url)
        self.gateway = Gateway(self.target, SQLiteStore(":memory:"), round_seconds=ROUND_S,
                               target_updates=vehicles, epsilon=epsilon)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.gateway.run, args=(self.stop,), daemon=True)
        self.thread.start()
        wait_until(lambda: self.gateway.round is not None, 10, "the first round")

    def first_close(self) -> RoundClosed:
        wait_until(lambda: bool(self.gateway.closed), 3 * ROUND_S, "the first round's close")
        return self.gateway.closed[0]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as server:  # its own: no retained round of another test's gateway
        yield server


def vectors_of(count: int, dimension: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Vectors of norm below the public clip norm (16) in every dimension."""
    rng = np.random.default_rng(seed)
    return {f"veh-{i:03d}": rng.uniform(-0.5, 0.5, dimension) for i in range(count)}


def run_round(url: str, count: int, dropouts: dict[str, str] | None = None,
              ) -> tuple[Gateway, dict[str, np.ndarray], RoundClosed]:
    secure = Secure(url, count)
    try:
        announced = secure.gateway.secure
        assert announced is not None
        vectors = vectors_of(count, announced.announced.dimension)
        vehicles = Vehicles(secure.target, vectors, dropouts)
        try:
            closed = secure.first_close()
        finally:
            vehicles.close()
    finally:
        secure.close()
    return secure.gateway, vectors, closed


def test_the_unmasked_sum_of_a_secure_round_over_mosquitto_is_the_plain_sum(broker):
    gateway, vectors, closed = run_round(broker.url, 12)

    (aggregate,) = gateway.sums
    plain = np.sum(list(vectors.values()), axis=0)
    assert aggregate.inputs == 12 and aggregate.noise_std == 0
    assert np.abs(aggregate.total - plain).max() <= 12 * aggregate.resolution
    assert closed.model is not None and closed.model.participants == 12
    assert closed.record.quorum_met and closed.record.accepted == 12


@pytest.mark.parametrize(("share", "phase"), [
    (0.1, "share"), (0.1, "unmask"), (0.33, "input"), (0.33, "unmask")])
def test_a_secure_round_finishes_with_up_to_a_third_dropping_out_at_a_phase(broker, share,
                                                                             phase):
    gone = {f"veh-{i:03d}": phase for i in range(round(30 * share))}

    gateway, vectors, closed = run_round(broker.url, 30, gone)

    (aggregate,) = gateway.sums
    kept = [v for k, v in vectors.items() if k not in gone or phase == "unmask"]
    assert aggregate.inputs == len(kept)
    assert np.abs(aggregate.total - np.sum(kept, axis=0)).max() <= 30 * aggregate.resolution
    assert closed.model is not None and closed.record.accepted == len(kept)


@pytest.mark.parametrize("phase", ["share", "input"])
def test_a_secure_round_with_sixty_percent_dropping_out_is_refused(broker, phase):
    gone = {f"veh-{i:03d}": phase for i in range(18)}

    gateway, _, closed = run_round(broker.url, 30, gone)

    assert gateway.sums == [] and closed.model is None
    assert not closed.record.quorum_met


def test_replayed_and_forged_phase_messages_are_refused_and_counted(broker):
    secure = Secure(broker.url, None)  # the advertise phase stays open for the replays
    try:
        announced = secure.gateway.secure
        assert announced is not None
        vectors = vectors_of(8, announced.announced.dimension, seed=1)
        vehicles = Vehicles(secure.target, vectors)
        try:
            wait_until(lambda: len(vehicles.sent) >= 8, 5, "the keys advertised")
            first, advert = vehicles.sent[0]
            vehicles.publish(first, advert)  # replayed in its own phase
            vehicles.publish("veh-007", advert)  # another vehicle's, on this one's topic
            vehicles.publish(first, b'{"v":1,"kind":"advertise","vehicle_id":"' + first.encode()
                             + b'","round":1,"cipher_key":"AA==","mask_key":"AA=="}')
            vehicles.publish(first, b"not json")
            closed = secure.first_close()
            vehicles.publish(first, advert)  # a phase of a round that is over
            wait_until(lambda: secure.gateway.rejected["wrong_round"] >= 1, 5,
                       "the late message refused")
        finally:
            vehicles.close()
    finally:
        secure.close()

    assert {k: secure.gateway.rejected[k] for k in (
        "duplicate", "topic_mismatch", "bad_shape", "not_json", "wrong_round")} == {
        "duplicate": 1, "topic_mismatch": 1, "bad_shape": 1, "not_json": 1, "wrong_round": 1}
    assert closed.model is not None and len(secure.gateway.sums) == 1
    assert secure.gateway.sums[0].inputs == 8


def first_merge(secure: Secure, runs: list[Callable[[threading.Event], object]]) -> RoundClosed:
    """Run each of ``runs`` on a thread of its own until ``secure`` has merged a round."""
    threads = [threading.Thread(target=run, args=(secure.stop,), daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: any(c.model for c in secure.gateway.closed), 6 * ROUND_S,
                   "a round merged from secure releases")
    finally:
        secure.close()
        for thread in threads:
            thread.join(15)
    return next(c for c in secure.gateway.closed if c.model)


def test_a_fleet_of_vehicles_releases_through_secure_rounds_paid_for_in_their_ledgers(
        broker, tmp_path: Path):
    mechanism = GaussianMechanism(epsilon=4.0, delta=1e-5, clip_norm=4.0)
    releases = SecureReleases(epsilon_budget=8.0, releases=3, delta=1e-5,
                              noise=SeededIntegerNoise(0), random_bytes=SeededBytes(0))
    vehicles = simulated_vehicles(
        10, 0, mechanism, secure=releases, first_release_readings=30,
        ledger_for=lambda v: PrivacyLedger(tmp_path / f"{v}.jsonl", budget=8.0, delta=1e-5))
    secure = Secure(broker.url, 10, epsilon=releases.epsilon)

    merged = first_merge(secure, [Fleet(secure.target, vehicles, speedup=50.0).run])

    assert merged.record.accepted == 10 and merged.model is not None
    assert secure.gateway.sums[0].noise_std > 0
    spends = [s for v in vehicles for e in v.ledger.entries for s in e.spends]
    assert spends and {s.kind for s in spends} == {"zcdp"}
    assert all(v.privacy == "secagg" and v.updates_sent >= 1 for v in vehicles)


def test_device_agents_release_through_a_secure_round(broker, tmp_path: Path):
    agents = [DeviceAgent(parse_mqtt_url(broker.url), Vehicle(
        vehicle_id, SimulatedVehicle(vehicle_id, seed=i), first_release_readings=30,
        mechanism=GaussianMechanism(epsilon=4.0, delta=1e-5, clip_norm=4.0),
        ledger=PrivacyLedger(tmp_path / f"{vehicle_id}.jsonl", budget=8.0, delta=1e-5),
        secure=SecureReleases(epsilon_budget=8.0, releases=3, delta=1e-5)))
        for i, vehicle_id in enumerate(f"dev-{i}" for i in range(4))]
    secure = Secure(broker.url, 4, epsilon=release_epsilon(8.0, 3, 1e-5))

    merged = first_merge(secure, [agent.run for agent in agents])

    assert merged.record.accepted == 4 and merged.record.privacy == "secagg"
    assert all(a.vehicle.ledger.entries and a.vehicle.updates_sent >= 1 for a in agents)
