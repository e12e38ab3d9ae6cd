"""Crashes and restarts lose nothing: ``kill -9`` of the gateway, a broker restart, an outage.

Real processes throughout: Mosquitto keeping sessions across its restarts (as the shipped
configuration does) and ``fedfleet`` commands as processes of their own. Messages are counted
end to end: what the broker acknowledged to the sender against what the gateway's store
holds.
"""

from __future__ import annotations

import os
import pwd
import threading
import time
from pathlib import Path

import pytest

from broker.access import client_login
from devices.onboard.alerts import AlertPolicy
from devices.onboard.ledger import PrivacyLedger
from devices.onboard.vehicle import Vehicle
from devices.runners.fleet import Fleet
from devices.sim.simulator import SimulatedVehicle
from federation.messages import Alert
from federation.transport import MqttTarget, parse_mqtt_url
from fedfleet.cli import main
from tests.processes import AlertLoad, Command, open_round, read_store, wait_until
from tests.servers import Mosquitto, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ALERTS_PER_S = 150.0


def _gateway(broker: Mosquitto, cwd: Path, round_seconds: float, *more: str) -> Command:
    # DEBUG: an empty round, the usual round of a private fleet, is logged only there
    return Command("gateway", "--mqtt", broker.url, "--round-seconds", str(round_seconds),
                   "--store", "sqlite:///gw.db", "--log-level", "DEBUG", "--http-port", "0",
                   *more, cwd=cwd)


def _stored_alerts(db: Path) -> list[tuple[str, float]]:
    return [(v, ts) for v, ts in read_store(db, "SELECT vehicle_id, ts FROM alerts")]


def _drain(load: AlertLoad, db: Path, timeout_s: float) -> None:
    """Stop ``load`` and wait for every alert the broker acknowledged in the store."""
    load.stop()
    load.wait_acknowledged(15)
    wait_until(lambda: len(_stored_alerts(db)) >= len(load.acknowledged), timeout_s,
               "every acknowledged alert in the store")


def test_a_gateway_killed_and_a_broker_restarted_lose_no_acknowledged_alert(tmp_path):
    db = tmp_path / "gw.db"
    with Mosquitto(persistent=True) as broker:
        gateway = _gateway(broker, tmp_path, 1.0)
        gateway.wait_for(r"round \d+: quorum not met", 15)
        load = AlertLoad(broker.url, ALERTS_PER_S)
        try:
            load.start()
            time.sleep(1.5)
            gateway.kill()  # the broker queues the gateway's alerts meanwhile
            time.sleep(1.0)
            started_at = time.monotonic()
            gateway.start()
            # connected and closing rounds again before the broker goes (a loaded machine
            # may take longer than a fixed wait to start it)
            gateway.wait_for(r"round \d+: quorum not met", 15, since=started_at)
            restarted_at = time.monotonic()
            broker.restart()
            back_at = time.monotonic()
            time.sleep(2.0)
            _drain(load, db, 15)
        finally:
            load.close()
            code = gateway.stop()
        reconnected = gateway.wait_for("reconnected to the broker", 1, since=restarted_at)

    stored = _stored_alerts(db)
    assert load.rate_sent_per_s >= 100
    assert len(load.acknowledged) == len(load.sent)
    assert set(stored) == load.acknowledged and len(stored) == len(set(stored))
    assert code == 0, gateway.output()
    assert reconnected - back_at <= 2.0
    assert len(gateway.matching("lost the broker", since=restarted_at)) == 1
    assert len(gateway.matching("reconnected to the broker", since=restarted_at)) == 1


def test_the_broker_setup_queues_every_alert_for_a_gateway_killed_under_a_high_rate(tmp_path):
    # The setup as written (TLS, logins, the ACL, its queue limits), one vehicle login sending
    # 300 alerts a second while the gateway is killed and away for 5 s: a backlog of about
    # 2,000, past what Mosquitto keeps by default (1,000).
    port, setup = free_port(), tmp_path / "setup"
    assert main(["broker-setup", str(setup), "--vehicles", "0", "--id", "load-0000", "--host",
                 "127.0.0.1", "--port", str(port), "--bind", "127.0.0.1", "--broker-user",
                 pwd.getpwuid(os.geteuid()).pw_name]) == 0
    clients, db = setup / "clients", tmp_path / "gw.db"
    login = client_login(clients, "load-0000")
    target = MqttTarget("127.0.0.1", port, tls=True, ca_file=str(clients / "ca.crt"),
                        username=login.username, password=login.password)
    with Mosquitto(port, conf=setup / "broker" / "mosquitto.conf", tls=True):
        gateway = Command("gateway", "--config", str(clients / "gateway.toml"),
                          "--round-seconds", "1", "--store", "sqlite:///gw.db", "--log-level",
                          "DEBUG", "--http-port", "0", cwd=tmp_path)
        gateway.wait_for(r"round \d+: quorum not met", 15)
        load = AlertLoad(target, 300.0, vehicles=1)
        try:
            load.start()
            time.sleep(1.0)
            gateway.kill()
            time.sleep(5.0)
            gateway.start()
            time.sleep(2.0)
            _drain(load, db, 30)
        finally:
            load.close()
            code = gateway.stop()

    stored = _stored_alerts(db)
    assert load.rate_sent_per_s >= 100 and len(load.sent) >= 2_000
    assert set(stored) == load.acknowledged == set(load.sent)
    assert len(stored) == len(set(stored))
    assert code == 0, gateway.output()


def test_a_killed_gateway_resumes_its_open_round_with_every_update_it_had_accepted(tmp_path):
    db = tmp_path / "gw.db"
    with Mosquitto(persistent=True) as broker:
        gateway = _gateway(broker, tmp_path, 3.0, "--min-updates", "2")
        fleet = Command("fleet", "--mqtt", broker.url, "--vehicles", "6", "--speedup", "60",
                        "--privacy", "off", "--fault-fraction", "0", cwd=tmp_path)
        try:
            # A round past the first, holding accepted updates, with most of it still ahead.
            wait_until(lambda: open_round(db)[0] >= 2 and len(open_round(db)[1]) >= 3, 30,
                       "an open round with three accepted updates")
            killed_round, accepted = open_round(db)
            gateway.kill()
            time.sleep(0.5)
            gateway.start()
            wait_until(lambda: open_round(db)[0] >= killed_round + 2, 30,
                       "two more rounds after the restart")
        finally:
            fleet.stop()
            code = gateway.stop()

    rounds = read_store(db, "SELECT round, opened_at, accepted, quorum_met FROM rounds "
                            "ORDER BY round")
    resumed = next(r for r in rounds if r[0] == killed_round)
    merged = read_store(db, "SELECT participants FROM models WHERE round = ?", (killed_round,))
    participants = {v for v, in read_store(
        db, "SELECT vehicle_id FROM budgets WHERE round = ?", (killed_round,))}
    models = read_store(db, "SELECT version, round, readings FROM models ORDER BY version")
    assert code == 0, gateway.output()
    assert accepted <= participants  # no update the gateway had accepted is lost
    assert resumed[2:] == (len(participants), 1) and merged == [(len(participants),)]
    assert "resuming round" in gateway.output()
    numbers, opened = [r[0] for r in rounds], [r[1] for r in rounds]
    assert numbers == list(range(1, numbers[-1] + 1)) and opened == sorted(set(opened))
    assert [m[0] for m in models] == list(range(1, len(models) + 1))
    assert [m[1] for m in models] == sorted(set(m[1] for m in models))
    assert [m[2] for m in models] == sorted(m[2] for m in models)


def test_rounds_that_came_due_while_the_broker_was_away_close_once_not_in_a_burst(tmp_path):
    db = tmp_path / "gw.db"
    round_seconds = 0.5
    with Mosquitto(persistent=True) as broker:
        gateway = _gateway(broker, tmp_path, round_seconds)
        try:
            gateway.wait_for(r"round 3: quorum not met", 15)
            broker.stop()
            lost_at = time.time()
            gateway.wait_for("lost the broker", 5)
            time.sleep(6 * round_seconds)
            broker.start()
            back_at = time.time()
            gateway.wait_for("reconnected to the broker", 5)
            time.sleep(4 * round_seconds)
        finally:
            code = gateway.stop()

    rounds = read_store(db, "SELECT round, opened_at, closed_at FROM rounds ORDER BY round")
    during = [r for r in rounds if lost_at < r[2] < back_at]
    after = [r for r in rounds if r[1] >= back_at]
    assert code == 0, gateway.output()
    assert len(during) == 1  # the overdue round, closed once
    assert not [r for r in rounds if r[1] > lost_at and r[2] < back_at]  # none opened meanwhile
    assert after and after[0][0] == during[0][0] + 1
    assert all(r[2] - r[1] >= round_seconds for r in after)  # a full round each, no catching up


def test_vehicles_lose_no_alert_across_a_broker_restart(tmp_path):
    db = tmp_path / "gw.db"
    raised: list[tuple[float, Alert]] = []
    vehicles = [  # a hair trigger and a short cooldown: alerts every few simulated seconds
        Vehicle(f"veh-{i:04d}", SimulatedVehicle(f"veh-{i:04d}", seed=i), mechanism=None,
                policy=AlertPolicy(threshold=0.05, alpha=1.0, cooldown_s=60))
        for i in range(10)]
    with Mosquitto(persistent=True) as broker:
        gateway = _gateway(broker, tmp_path, 1.0)
        gateway.wait_for(r"round \d+: quorum not met", 15)
        fleet = Fleet(parse_mqtt_url(broker.url), vehicles, speedup=100, observer=lambda e: (
            raised.append((time.monotonic(), e)) if isinstance(e, Alert) else None))
        stop = threading.Event()
        thread = threading.Thread(target=fleet.run, args=(stop,))
        thread.start()
        try:
            wait_until(lambda: len(raised) >= 100, 30, "a hundred alerts")
            broker.stop()
            down_at = time.monotonic()
            time.sleep(1.0)
            broker.start()
            wait_until(lambda: fleet._mux.connected() == len(vehicles), 5, "the fleet back")
            back_at = time.monotonic()
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(30)
        wait_until(lambda: len(_stored_alerts(db)) >= len(raised), 15,
                   "every alert raised in the store")
        code = gateway.stop()

    assert code == 0, gateway.output()
    assert fleet.unacknowledged() == 0
    assert [e for t, e in raised if down_at < t < back_at]  # raised while the broker was away
    assert set(_stored_alerts(db)) == {(e.vehicle_id, e.ts) for _, e in raised}


def _ledgers(folder: Path) -> dict[str, PrivacyLedger]:
    return {path.stem: PrivacyLedger(path, budget=1000.0, delta=1e-5)
            for path in sorted(folder.glob("*.jsonl"))}


def test_a_fleet_killed_and_restarted_from_its_ledgers_never_pays_twice(tmp_path):
    folder, vehicles = tmp_path / "ledgers", 4
    with Mosquitto(persistent=True) as broker:
        gateway = _gateway(broker, tmp_path, 1.0)
        # Releases every 30 readings, each with a daily alert answer, within a large budget.
        often = {"FEDFLEET_FIRST_RELEASE_READINGS": "30", "FEDFLEET_RELEASE_GROWTH": "1",
                 "FEDFLEET_RELEASES": "200", "FEDFLEET_ALERT_REPORT_EPSILON": "1.0986"}
        fleet = Command("fleet", "--mqtt", broker.url, "--vehicles", str(vehicles), "--speedup",
                        "60", "--epsilon-budget", "1000", "--ledger-dir", str(folder),
                        cwd=tmp_path, env=often)
        try:
            wait_until(lambda: len(_ledgers(folder)) == vehicles and all(
                len(ledger.entries) >= 2 for ledger in _ledgers(folder).values()), 30,
                "two rounds paid for by every vehicle")
            fleet.kill()
            before = {v: len(ledger.entries) for v, ledger in _ledgers(folder).items()}
            fleet.start()
            wait_until(lambda: all(len(ledger.entries) >= before[v] + 2
                                   for v, ledger in _ledgers(folder).items()), 30,
                       "two more rounds paid for after the restart")
        finally:
            fleet.stop()
            gateway.stop()

    for vehicle, ledger in _ledgers(folder).items():
        rounds = [e.round for e in ledger.entries]
        answers = [(e.answer.day, e.answer.truth) for e in ledger.entries if e.answer]
        paid = [s for e in ledger.entries for s in e.spends if s.kind == "randomized_response"]
        assert len(rounds) == len(set(rounds)), vehicle  # no round paid for twice
        assert len(answers) == len(set(answers)) == len(paid) >= 1, vehicle  # nor an answer
