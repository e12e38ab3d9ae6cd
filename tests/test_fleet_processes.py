"""``fedfleet fleet --processes N``: the fleet's vehicles shared among processes, over Mosquitto."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from federation import messages, topics
from federation.messages import Status
from federation.transport import make_client, parse_mqtt_url
from tests.processes import Command, wait_until
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration


class Statuses:
    """The latest status of every vehicle whose id starts with ``prefix``, as the broker has it."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix, self.latest = prefix, {}
        self._lock = threading.Lock()
        target = parse_mqtt_url(url)
        self.client = make_client(f"test-statuses-{prefix}", target)
        self.client.on_connect = lambda c, *_: c.subscribe(topics.subscription(topics.STATUS), 1)
        self.client.on_message = self._on_message
        self.client.connect(target.host, target.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        status = messages.decode(Status, bytes(msg.payload))
        if status.vehicle_id.startswith(self.prefix):
            with self._lock:
                self.latest[status.vehicle_id] = status.state

    def states(self) -> dict[str, str]:
        with self._lock:
            return dict(self.latest)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _fleet(broker: Mosquitto, tmp_path: Path, prefix: str, *extra: str) -> Command:
    return Command("fleet", "--mqtt", broker.url, "--vehicles", "5", "--processes", "2",
                   "--speedup", "60", "--privacy", "off", "--id-prefix", prefix,
                   "--ledger-dir", str(tmp_path / "ledgers"), *extra, cwd=tmp_path)


def test_a_fleet_in_two_processes_runs_each_vehicle_once_and_stops_them_all_cleanly(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    # Arrange
    statuses = Statuses(mosquitto.url, "procs-")
    expected = {f"procs-veh-{i:04d}" for i in range(5)}
    fleet = _fleet(mosquitto, tmp_path, "procs-")
    try:
        # Act
        wait_until(lambda: statuses.states() == dict.fromkeys(expected, "online"), 60,
                   "every vehicle online")
        fleet.wait_for(r"fleet: 5/5 connected", 30)
        code = fleet.stop()
        wait_until(lambda: statuses.states() == dict.fromkeys(expected, "offline"), 10,
                   "every vehicle offline")
    finally:
        statuses.close()
    # Assert
    assert code == 0, fleet.output()
    assert "5 vehicles in 2 processes" in fleet.output()


def test_a_process_that_fails_stops_the_others_and_the_fleet_exits_with_1(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    # Arrange: logins for the first process's vehicles only
    logins = tmp_path / "clients"
    logins.mkdir()
    for index in range(2):
        (logins / f"fail-veh-{index:04d}.password").write_text("secret\n")
    # Act
    fleet = _fleet(mosquitto, tmp_path, "fail-", "--credentials-dir", str(logins))
    assert fleet.process is not None
    code = fleet.process.wait(60)
    # Assert
    assert code == 1, fleet.output()
    assert "no login for 'fail-veh-0002'" in fleet.output()
    assert "fleet-1 (vehicles 2 to 4) ended with exit code 1" in fleet.output()
