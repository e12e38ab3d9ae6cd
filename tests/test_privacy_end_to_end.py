"""Budgets over a real Mosquitto: three rounds' worth buys exactly three updates, then the
vehicle says it is exhausted, and stays so across a restart; ``fedfleet privacy`` shows it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from devices.onboard.ledger import PrivacyLedger
from devices.onboard.vehicle import Vehicle
from devices.runners.fleet import Fleet
from devices.sim.simulator import SimulatedVehicle
from federation import messages, topics
from federation.accounting import epsilon_spent
from federation.messages import Status
from federation.privacy import GaussianMechanism
from federation.randomized_response import RandomizedResponse
from federation.transport import make_client, parse_mqtt_url
from gateway.service import Gateway
from gateway.store import SQLiteStore
from tests.servers import Mosquitto

pytestmark = pytest.mark.integration

VEHICLES = 4
MECHANISM = GaussianMechanism(epsilon=1.0, delta=1e-5, clip_norm=0.5)
ALERT_ANSWERS = RandomizedResponse()
# Three rounds, and the one alert answer a day costs (no alert can be raised this early).
BUDGET = epsilon_spent([MECHANISM.spend] * 3 + [ALERT_ANSWERS.spend], MECHANISM.delta)
# Releases after 100, 200 and 400 readings; the fourth, due at 800, is the one the budget
# cannot pay for. The default schedule (300, 900, 2,700, 8,100) buys the same three updates,
# only some forty seconds later at this speedup.
FIRST_RELEASE_READINGS, RELEASE_GROWTH = 100, 2.0


class Watcher:
    """Counts update messages per vehicle and keeps each vehicle's latest status."""

    def __init__(self, url: str) -> None:
        self.updates: Counter[str] = Counter()
        self.statuses: dict[str, Status] = {}
        target = parse_mqtt_url(url)
        self.client = make_client("test-watcher", target)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(topics.subscription(topics.UPDATE), 1), (topics.subscription(topics.STATUS), 1)])
        self.client.on_message = self._on_message
        self.client.connect(target.host, target.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        vehicle, kind = topics.parse_vehicle_topic(msg.topic) or ("", "")
        if kind == topics.UPDATE:
            self.updates[vehicle] += 1
        elif kind == topics.STATUS:
            self.statuses[vehicle] = messages.decode(Status, msg.payload)

    def exhausted(self) -> set[str]:
        return {v for v, s in self.statuses.items() if s.exhausted and s.state == "online"}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _fleet(ledgers: Path) -> list[Vehicle]:
    return [
        Vehicle(f"veh-{i:04d}", SimulatedVehicle(f"veh-{i:04d}", seed=i), mechanism=MECHANISM,
                ledger=PrivacyLedger(ledgers / f"veh-{i:04d}.jsonl", budget=BUDGET,
                                     delta=MECHANISM.delta),
                alert_report=ALERT_ANSWERS, first_release_readings=FIRST_RELEASE_READINGS,
                release_growth=RELEASE_GROWTH)
        for i in range(VEHICLES)
    ]


def _run_fleet(url: str, vehicles: list[Vehicle], until: Callable[[], bool],
               timeout_s: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=Fleet(parse_mqtt_url(url), vehicles, speedup=200.0).run,
                              args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not until():
            assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=20)


def test_a_budget_of_three_rounds_buys_three_updates_then_exhaustion_even_after_restart(
        tmp_path):
    ids = {f"veh-{i:04d}" for i in range(VEHICLES)}
    with Mosquitto() as broker:
        store = SQLiteStore(tmp_path / "gateway.db")
        gateway = Gateway(parse_mqtt_url(broker.url), store, round_seconds=0.7, min_updates=1)
        stop = threading.Event()
        gateway_thread = threading.Thread(target=gateway.run, args=(stop,))
        gateway_thread.start()
        watcher = Watcher(broker.url)
        try:
            vehicles = _fleet(tmp_path / "ledgers")
            settled = [0.0]

            def exhausted_then_three_more_rounds() -> bool:
                if watcher.exhausted() != ids:
                    return False
                settled[0] = settled[0] or time.monotonic()
                return time.monotonic() - settled[0] > 3 * 0.7

            _run_fleet(broker.url, vehicles, exhausted_then_three_more_rounds, 60)
            first_run = dict(watcher.updates)

            restarted = _fleet(tmp_path / "ledgers")
            watcher.statuses.clear()
            started = time.monotonic()
            _run_fleet(broker.url, restarted,
                       lambda: watcher.exhausted() == ids and time.monotonic() - started > 3, 30)
        finally:
            watcher.close()
            stop.set()
            gateway_thread.join(timeout=20)
            store.close()

    assert first_run == dict.fromkeys(ids, 3)
    assert dict(watcher.updates) == first_run  # nothing more after the restart
    assert all(v.exhausted and v.updates_sent == 0 for v in restarted)
    assert all(v.ledger.epsilon_total <= BUDGET for v in restarted)
    budgets = SQLiteStore(tmp_path / "gateway.db").budgets()
    assert set(budgets) == ids and all(b.exhausted for b in budgets.values())
    assert all(b.epsilon_total == pytest.approx(BUDGET) for b in budgets.values())

    report = subprocess.run(
        [sys.executable, "-m", "fedfleet", "privacy", "--store",
         f"sqlite:///{tmp_path / 'gateway.db'}"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}, check=True).stdout
    assert f"{VEHICLES} vehicles, {VEHICLES} with a privacy guarantee, {VEHICLES} exhausted" in (
        report)
    assert "privacy noise std" in report
