"""The whole system over a real broker: gateway, a fleet of vehicles, rounds, alerts.

Every test runs twice: against a Mosquitto server and against the embedded amqtt broker,
each started fresh for the test so that no retained message leaks from one test to another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.embedded import EmbeddedBroker
from devices.onboard.vehicle import Vehicle
from devices.runners.fleet import Fleet
from devices.sim.faults import FaultMode, FaultSpec
from devices.sim.simulator import SimulatedVehicle
from federation import messages, topics
from federation.accounting import epsilon_spent
from federation.messages import GlobalModel, Status
from federation.privacy import GaussianMechanism, SeededNoise
from federation.transport import make_client, parse_mqtt_url
from gateway.service import Gateway
from gateway.store import SQLiteStore
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

VEHICLES = 20
ROUND_SECONDS = 1.5
SPEEDUP = 200.0


@pytest.fixture(params=["mosquitto", "embedded"])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    server = Mosquitto() if request.param == "mosquitto" else EmbeddedBroker(port=0)
    with server:
        yield server.url


class System:
    """A gateway and fleets running on threads of their own against one broker."""

    def __init__(self, url: str, db: Path) -> None:
        self.target = parse_mqtt_url(url)
        self.store = SQLiteStore(db)
        self.gateway = Gateway(self.target, self.store, round_seconds=ROUND_SECONDS,
                               min_updates=VEHICLES // 2)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.gateway.run, args=(self.stop,))]
        self.threads[0].start()

    def add_fleet(self, vehicles: list[Vehicle]) -> Fleet:
        fleet = Fleet(self.target, vehicles, speedup=SPEEDUP)
        thread = threading.Thread(target=fleet.run, args=(self.stop,))
        self.threads.append(thread)
        thread.start()
        return fleet

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)
        self.store.close()


@pytest.fixture
def system(broker_url: str, tmp_path: Path) -> Iterator[System]:
    running = System(broker_url, tmp_path / "gateway.db")
    yield running
    running.close()
    assert not any(t.is_alive() for t in running.threads), "a component did not shut down"


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.05)


def _healthy_fleet(count: int, start_index: int = 0,
                   mechanism: GaussianMechanism | None = None) -> list[Vehicle]:
    return [
        Vehicle(f"veh-{i:04d}", SimulatedVehicle(f"veh-{i:04d}", seed=1), mechanism=mechanism,
                noise=SeededNoise(i))
        for i in range(start_index, start_index + count)
    ]


def _retained_model(url: str) -> GlobalModel:
    target = parse_mqtt_url(url)
    got: list[bytes] = []
    client = make_client("test-reader", target)
    client.on_connect = lambda c, *_: c.subscribe(topics.MODEL_TOPIC, 1)
    client.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    client.connect(target.host, target.port)
    client.loop_start()
    try:
        _wait_for(lambda: bool(got), 5, "the retained global model")
    finally:
        client.loop_stop()
        client.disconnect()
    return messages.decode(GlobalModel, got[0])


def test_the_fleet_federates_round_after_round_and_a_late_vehicle_gets_the_model_at_once(
        system, broker_url):
    mechanism = GaussianMechanism(epsilon=1.0, delta=1e-5, clip_norm=0.5)
    system.add_fleet(_healthy_fleet(VEHICLES, mechanism=mechanism))

    # The model sent down, not the newest merged: a model is sent only when it changed enough
    # (gateway/downlink.py), and it is set as sent once handed to the client.
    _wait_for(lambda: system.gateway.sent is not None and system.gateway.sent.version >= 3,
              30, "a third model sent to the vehicles")
    late = _healthy_fleet(1, start_index=VEHICLES)
    joined = time.monotonic()
    system.add_fleet(late)
    _wait_for(lambda: late[0].global_model is not None, 5, "the late vehicle's global model")
    received_after_s = time.monotonic() - joined
    retained = _retained_model(broker_url)

    rounds = [r for r in system.store.rounds() if r.quorum_met]
    assert len(rounds) >= 3
    assert all(VEHICLES // 2 <= r.accepted <= VEHICLES for r in rounds)
    assert [r.model_version for r in sorted(rounds, key=lambda r: r.round)] == sorted(
        r.model_version for r in rounds)
    assert retained.version >= 3
    # Private releases count for their readings shrunk by their noise: some, never all.
    assert retained.summary.n > 0
    assert retained.participants >= VEHICLES // 2
    assert late[0].model_version >= 3
    assert received_after_s < 3.0
    assert system.gateway.rejected == {}
    assert retained.noise_std > 0
    budgets = system.store.budgets()
    two_rounds = epsilon_spent([mechanism.spend] * 2, mechanism.delta)
    assert all(budgets[f"veh-{i:04d}"].epsilon_total >= two_rounds for i in range(VEHICLES))


def test_a_fault_injected_in_one_vehicle_raises_an_alert_naming_its_subsystem(system):
    fault = FaultSpec(FaultMode.COOLING_DEGRADATION, onset_s=600.0, failure_s=1500.0)
    vehicles = _healthy_fleet(VEHICLES)
    faulty = vehicles[3]
    faulty.source = SimulatedVehicle(faulty.vehicle_id, seed=1, fault=fault)
    system.add_fleet(vehicles)

    _wait_for(lambda: any(a.vehicle_id == faulty.vehicle_id for a in system.store.alerts()),
              60, "the faulty vehicle's alert at the gateway")

    alerts = system.store.alerts()
    caught = next(a for a in alerts if a.vehicle_id == faulty.vehicle_id)
    assert caught.subsystem == "cooling"
    assert caught.sensors[0][0] == "coolant_temp_c"
    assert caught.ts - faulty.source.start_ts_s > fault.onset_s
    # Known limit: on a loaded machine, when rounds come late, one healthy vehicle (veh-0009,
    # on oil pressure) has false-alarmed in about one run in eight (never alone, over 8,000
    # readings). More than one, or any healthy vehicle blaming cooling, is a regression.
    healthy = {(a.vehicle_id, a.subsystem) for a in alerts if a.vehicle_id != faulty.vehicle_id}
    assert len(healthy) <= 1 and all(subsystem != "cooling" for _, subsystem in healthy), healthy


def test_a_burst_of_malformed_updates_leaves_the_gateway_running_and_rounds_correct(
        system, broker_url):
    system.add_fleet(_healthy_fleet(VEHICLES))
    _wait_for(lambda: system.gateway.model is not None, 20, "a first global model")
    status = messages.encode(Status("veh-0001", "online", 1.0))  # a valid message, wrong topic
    burst = [
        b"\x00\xff not json", b"[]", b'{"v": 2}', b'{"v": 1}', b"{" * 70_000,
        b'{"v":1,"vehicle_id":"veh-0001","round":1,"epsilon":NaN}', status,
    ]
    target = parse_mqtt_url(broker_url)
    attacker = make_client("test-attacker", target)
    attacker.connect(target.host, target.port)
    attacker.loop_start()
    infos = [attacker.publish(topics.update_topic(f"veh-{i % 50:04d}"), burst[i % len(burst)],
                              qos=1) for i in range(700)]
    for info in infos:
        info.wait_for_publish(10)
    attacker.loop_stop()
    attacker.disconnect()
    version_after_burst = system.gateway.model.version

    _wait_for(lambda: system.gateway.model.version >= version_after_burst + 2, 20,
              "two more merged rounds after the burst")

    assert system.threads[0].is_alive()
    assert sum(system.gateway.rejected.values()) == 700
    assert set(system.gateway.rejected) <= {
        "not_json", "not_object", "bad_version", "missing_field", "too_large", "not_finite",
        "wrong_type"}
    merged = [r for r in system.store.rounds() if r.quorum_met]
    assert all(r.accepted <= VEHICLES for r in merged)
    assert system.store.rejection_counts() == dict(system.gateway.rejected)


def test_a_fleet_runs_every_vehicle_on_one_thread_each_with_its_own_client():
    with Mosquitto() as server:
        vehicles = _healthy_fleet(200)
        fleet = Fleet(parse_mqtt_url(server.url), vehicles, speedup=5)
        stop = threading.Event()
        before = threading.active_count()
        thread = threading.Thread(target=fleet.run, args=(stop,))
        thread.start()
        try:
            _wait_for(lambda: fleet._mux.connected() == 200, 30, "200 connected vehicles")
            threads_while_running = threading.active_count()
        finally:
            stop.set()
            thread.join(timeout=30)

    assert threads_while_running == before + 1
    assert len({id(c) for c in fleet._clients.values()}) == 200


def test_gateway_and_fleet_come_back_after_the_broker_restarts(tmp_path):
    with Mosquitto() as server:
        running = System(server.url, tmp_path / "gateway.db")
        fleet = running.add_fleet(_healthy_fleet(VEHICLES))
        try:
            _wait_for(lambda: running.gateway.model is not None, 20, "a first global model")

            server.restart()
            version = running.gateway.model.version

            _wait_for(lambda: running.gateway.model.version >= version + 2, 40,
                      "two merged rounds after the restart")
            assert fleet._mux.connected() == VEHICLES
        finally:
            running.close()
