"""A fleet's ledgers are synced together once a pass, and still before any release leaves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from devices.onboard import ledger as ledger_module
from devices.onboard.ledger import GroupCommit, PrivacyLedger
from devices.onboard.vehicle import Vehicle
from devices.runners.fleet import Fleet
from federation import messages, topics
from federation.messages import RoundOpen, Update
from federation.transport import MqttTarget
from tests.test_vehicle import Steady
from tests.test_vehicle_privacy import MECHANISM, SeededNoise

ROUND_1 = messages.encode(RoundOpen(1, 0.0, 100.0, 1, 0))


def _vehicles(folder: Path, count: int, group: GroupCommit | None) -> list[Vehicle]:
    """Vehicles that owe a release after 30 readings, each with its ledger in ``folder``."""
    return [Vehicle(f"veh-{i:04d}", Steady(), mechanism=MECHANISM, noise=SeededNoise(i),
                    ledger=PrivacyLedger(folder / f"veh-{i:04d}.jsonl", budget=50.0,
                                         delta=1e-5, group=group),
                    first_release_readings=30, release_growth=1.0, clock=lambda: 0.0)
            for i in range(count)]


def _release(vehicle: Vehicle) -> bytes:
    """Step ``vehicle`` in round 1 until it releases; the payload it would publish."""
    vehicle.on_message(topics.ROUND_TOPIC, ROUND_1)
    for _ in range(40):
        for out in vehicle.step():
            if isinstance(out.message, Update):
                return out.payload
    raise AssertionError(f"{vehicle.vehicle_id} released nothing")


def test_a_pass_killed_between_its_commit_and_publishing_loses_nothing_and_pays_nothing_twice(
        tmp_path):
    group = GroupCommit()
    paid = [_release(vehicle) for vehicle in _vehicles(tmp_path, 3, group)]
    group.commit()  # then killed: nothing of the pass was published

    restarted = _vehicles(tmp_path, 3, None)
    again = [_release(vehicle) for vehicle in restarted]

    assert again == paid  # the same updates, sent again at no new cost
    assert [[e.round for e in v.ledger.entries] for v in restarted] == [[1]] * 3


@dataclass
class _Broker:
    """Stands in for each vehicle's MQTT client: records, per publish, its topic and how many
    ledgers of the pass were still unsynced."""

    ledgers: GroupCommit
    published: list[tuple[str, int]] = field(default_factory=list)

    def client(self, vehicle: Vehicle) -> _Client:
        return _Client(self, vehicle)


@dataclass
class _Client:
    broker: _Broker
    vehicle: Vehicle

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> mqtt.MQTTMessageInfo:
        self.broker.published.append((topic, self.broker.ledgers.pending))
        info = mqtt.MQTTMessageInfo(len(self.broker.published))
        info.rc = mqtt.MQTT_ERR_SUCCESS
        return info

    def user_data_get(self) -> Vehicle:
        return self.vehicle


def _fleet_pass(vehicles: list[Vehicle]) -> tuple[Fleet, _Broker]:
    """A fleet of ``vehicles`` whose clients are recorders, its first round open."""
    fleet = Fleet(MqttTarget("127.0.0.1", 1), vehicles)
    broker = _Broker(fleet.ledgers)
    for vehicle in vehicles:
        fleet._clients[vehicle.vehicle_id] = broker.client(vehicle)  # type: ignore[assignment]
        vehicle.on_message(topics.ROUND_TOPIC, ROUND_1)
    return fleet, broker


def test_a_fleet_publishes_a_pass_of_releases_only_once_their_ledgers_are_synced(tmp_path):
    fleet, broker = _fleet_pass(_vehicles(tmp_path, 3, None))

    for _ in range(40):
        fleet._step_all()

    updates = [(topic, pending) for topic, pending in broker.published if "/update" in topic]
    assert [topic for topic, _ in updates] == [topics.update_topic(f"veh-{i:04d}")
                                               for i in range(3)]
    assert [pending for _, pending in updates] == [0, 0, 0]
    assert all(len(v.ledger.entries) == 1 for v in fleet.vehicles)


def test_a_pass_whose_ledgers_cannot_be_synced_publishes_nothing_and_stops_updates(
        tmp_path, monkeypatch):
    fleet, broker = _fleet_pass(_vehicles(tmp_path, 2, None))

    def broken_disk(path: Path) -> None:
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(ledger_module, "_sync_file", broken_disk)

    for _ in range(40):
        fleet._step_all()

    assert not [topic for topic, _ in broker.published if "/update" in topic]
    assert all(v.exhausted for v in fleet.vehicles)


@pytest.mark.parametrize("ledgers", [1, 6])  # one by one, and one sync of the file system
def test_a_commit_leaves_nothing_pending_however_many_ledgers_were_written(tmp_path, ledgers):
    group = GroupCommit()
    for vehicle in _vehicles(tmp_path, ledgers, group):
        _release(vehicle)
    assert group.pending == ledgers

    group.commit()

    assert group.pending == 0
    assert all(PrivacyLedger(path, budget=50.0, delta=1e-5).release is not None
               for path in tmp_path.glob("*.jsonl"))
