"""The device agent on a real Mosquitto: its own connection, rounds, and alerts that survive
the broker going away."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from devices.onboard.alerts import AlertPolicy
from devices.onboard.detector import FleetGaussian
from devices.onboard.vehicle import Vehicle
from devices.runners.agent import DeviceAgent
from devices.sim.simulator import SimulatedVehicle
from devices.sources import Reading, SensorSource
from devices.sources.stdin import StdinSource
from federation import messages, topics
from federation.features import VEHICLE_SCHEMA
from federation.messages import Alert, RoundOpen, Status
from federation.transport import MqttTarget, parse_mqtt_url
from fedfleet.progress import Progress
from gateway.service import Gateway
from gateway.store import SQLiteStore
from tests.servers import Mosquitto, free_port
from tests.test_source_contract import simulated_csv, simulated_lines

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent


class Paced(SensorSource):
    """A source that gives at most ``per_s`` readings a second, like a real sensor."""

    def __init__(self, inner: SensorSource, per_s: float) -> None:
        self.inner, self.period_s, self.next_s = inner, 1.0 / per_s, 0.0

    def read(self) -> Reading | None:
        now = time.monotonic()
        if now < self.next_s:
            return None
        self.next_s = max(self.next_s + self.period_s, now - self.period_s)
        return self.inner.read()


def jumpy_vehicle(vehicle_id: str = "dev-1") -> Vehicle:
    """A vehicle whose detector warms up fast and alerts often: alerts to count."""
    return Vehicle(
        vehicle_id, Paced(SimulatedVehicle(vehicle_id, seed=5), per_s=300), mechanism=None,
        detector=FleetGaussian(min_readings=100, refresh_every=10),
        policy=AlertPolicy(threshold=0.8, alpha=0.5, cooldown_s=15.0, schema=VEHICLE_SCHEMA))


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class AlertWatcher:
    """A persistent-session subscriber: it misses nothing while the broker restarts."""

    def __init__(self, port: int) -> None:
        self.alerts: list[Alert] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="alert-watcher",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(topics.subscription(topics.ALERT), 1)
        self.client.on_message = lambda c, u, m: self.alerts.append(
            messages.decode(Alert, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def agent_thread() -> Iterator[Callable[[DeviceAgent], threading.Event]]:
    running: list[tuple[threading.Thread, threading.Event]] = []

    def start(agent: DeviceAgent, drain_timeout_s: float = 5.0) -> threading.Event:
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,),
                                  kwargs={"drain_timeout_s": drain_timeout_s})
        thread.start()
        running.append((thread, stop))
        return stop

    yield start
    for thread, stop in running:
        stop.set()
        thread.join(timeout=20)
        assert not thread.is_alive(), "the agent did not shut down"


def test_alerts_raised_while_the_broker_is_away_are_delivered_once_it_is_back(
        tmp_path, agent_thread):
    store = tmp_path / "mosquitto-store"
    store.mkdir()
    broker = Mosquitto(options={"persistence": "true", "persistence_location": f"{store}/"})
    raised: list[Alert] = []
    with broker:
        watcher = AlertWatcher(broker.port)
        agent = DeviceAgent(parse_mqtt_url(broker.url), jumpy_vehicle(),
                            observer=lambda e: raised.append(e) if isinstance(e, Alert) else None)
        stop = agent_thread(agent)
        _wait_for(lambda: agent.status().alerts_delivered >= 3, 30, "alerts to flow")

        broker.stop()
        _wait_for(lambda: not agent.status().connected, 10, "the agent to notice")
        before = agent.vehicle.alerts_raised
        _wait_for(lambda: agent.vehicle.alerts_raised >= before + 5, 30, "alerts while away")
        waiting = agent.status().queued
        broker.start()
        _wait_for(lambda: agent.status().connected and agent.status().queued == 0, 30,
                  "the queue to drain")
        stop.set()
        _wait_for(lambda: len(watcher.alerts) >= len(raised), 15, "every alert to arrive")
        watcher.close()

    assert waiting >= 5
    assert agent.dropped == 0
    # QoS 1 is at-least-once: a message resent after the outage may arrive twice.
    assert sorted({(a.ts, a.subsystem) for a in watcher.alerts}) == sorted(
        (a.ts, a.subsystem) for a in raised)


def test_a_full_queue_drops_new_messages_and_counts_them(agent_thread):
    nobody = parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}")
    agent = DeviceAgent(nobody, jumpy_vehicle(), max_queued=3)
    stop = agent_thread(agent, drain_timeout_s=0.1)

    _wait_for(lambda: agent.vehicle.alerts_raised >= 6, 30, "alerts with no broker")
    stop.set()
    status = agent.status()

    assert not status.connected
    assert status.queued == 3
    assert status.dropped == status.alerts_raised - 3 > 0


def test_a_source_that_ends_before_any_round_gives_its_readings_to_the_next_one(
        tmp_path, agent_thread):
    log = tmp_path / "readings.txt"
    log.write_bytes(simulated_lines(200))
    with log.open("rb") as stream, Mosquitto() as broker:
        source = StdinSource(VEHICLE_SCHEMA.names, stream=stream)
        updates: list[messages.Update] = []
        listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        listener.on_message = lambda c, u, m: updates.append(
            messages.decode(messages.Update, m.payload))
        listener.connect("127.0.0.1", broker.port)
        listener.subscribe(topics.update_topic("log-1"), 1)
        listener.loop_start()
        agent = DeviceAgent(parse_mqtt_url(broker.url),
                            Vehicle("log-1", source, mechanism=None), idle_wait_s=0.01)
        agent_thread(agent, drain_timeout_s=10.0)
        _wait_for(lambda: agent.meter.finished and agent.status().connected, 10,
                  "the log to be read")
        assert agent.vehicle.updates_sent == 0  # no round yet

        now = time.time()
        listener.publish(topics.ROUND_TOPIC, messages.encode(RoundOpen(1, now, now + 30, 1, 0)),
                         qos=1, retain=True)
        _wait_for(lambda: bool(updates), 10, "the update")
        listener.loop_stop()
        listener.disconnect()

    assert [(u.vehicle_id, u.round) for u in updates] == [("log-1", 1)]
    assert updates[0].summary.n == agent.vehicle.readings > 0


def _fedfleet(*args: str, cwd: Path, env_extra: dict[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fedfleet", *args], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}, **kwargs)


@contextlib.contextmanager
def running_gateway(url: str | MqttTarget, db: Path, **kwargs: Any) -> Iterator[Gateway]:
    """A gateway on a thread of its own, with its first round open."""
    store = SQLiteStore(db)
    target = parse_mqtt_url(url) if isinstance(url, str) else url
    gateway = Gateway(target, store, **{"round_seconds": 1, **kwargs})
    stop = threading.Event()
    thread = threading.Thread(target=gateway.run, args=(stop,))
    thread.start()
    try:
        _wait_for(lambda: gateway.round is not None, 10, "the first round")
        yield gateway
    finally:
        stop.set()
        thread.join(timeout=20)
        store.close()


def merged_from(gateway: Gateway, vehicle_id: str) -> bool:
    """Whether some round's merge took an update from ``vehicle_id``."""
    return any(vehicle_id in ids for ids in gateway.store.participants().values())


def test_readings_on_stdin_take_part_in_a_round_and_the_device_says_offline_at_the_end(
        tmp_path):
    feed = tmp_path / "readings.txt"
    feed.write_bytes(simulated_lines(3000))
    # A log piped in is read far faster than a vehicle can drive: the gateway must allow it
    # (with its default of 1,000 readings a second it refuses the update as too_many_readings
    # whenever the device gets through the log within 3 s of its first message).
    with Mosquitto() as broker, running_gateway(broker.url, tmp_path / "gw.db",
                                                readings_per_s=1e6) as gateway:
        with feed.open("rb") as stdin:
            device = _fedfleet("device", "--id", "pipe-1", "--source", "stdin",
                               "--mqtt", broker.url, "--privacy", "off", cwd=tmp_path,
                               stdin=stdin)
            output, _ = device.communicate(timeout=60)
        _wait_for(lambda: merged_from(gateway, "pipe-1"), 10, "the device's update to be merged")
        statuses = gateway.store.statuses()

    assert device.returncode == 0, output
    assert "3000 readings" in output
    assert "skipped not_a_pair: " in output and "skipped not_utf8: " in output
    assert statuses["pipe-1"] == "offline"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "stdin"], "--id and --source are required"),
        (["--id", "x", "--source", "can0"], "unknown source 'can0'"),
        (["--id", "bad id", "--source", "stdin"], "invalid vehicle id 'bad id'"),
        (["--id", "x", "--source", "serial:///dev/nonexistent-tty"], "cannot open serial port"),
        (["--id", "x", "--source", "stdin", "--queue-size", "0"], "queue-size must be at least 1"),
        (["--id", "x", "--source", "stdin", "--tuning", "fast"], "invalid choice"),
        (["--id", "x", "--source", "stdin", "--schema", "/nonexistent.json"],
         "cannot read schema file"),
    ],
)
def test_device_usage_errors_exit_2_with_a_clear_message(args, message, tmp_path):
    process = _fedfleet("device", *args, cwd=tmp_path, stdin=subprocess.DEVNULL)

    output, _ = process.communicate(timeout=30)

    assert process.returncode == 2, output
    assert message in output
    assert "Traceback" not in output


@pytest.mark.parametrize("end", ["sigterm", "kill"])
def test_a_device_that_stops_or_dies_is_marked_offline(end, tmp_path):
    with Mosquitto() as broker:
        read_end, write_end = os.pipe()
        device = _fedfleet("device", "--id", "end-1", "--source", "stdin", "--mqtt", broker.url,
                           cwd=tmp_path, stdin=read_end)
        os.close(read_end)
        online = _retained_status(broker.port, "end-1", "online")
        if end == "sigterm":  # a clean stop: it says offline itself, and exits 0
            device.send_signal(signal.SIGTERM)
        else:  # a crash: its Last Will says offline for it
            device.kill()
        device.communicate(timeout=30)
        os.close(write_end)
        offline = _retained_status(broker.port, "end-1", "offline")

    assert (online.state, offline.state) == ("online", "offline")
    assert device.returncode == (0 if end == "sigterm" else -signal.SIGKILL)


def _retained_status(port: int, vehicle_id: str, state: str, timeout_s: float = 15,
                     auth: tuple[str, str] | None = None) -> Status:
    from paho.mqtt import subscribe

    login = {"username": auth[0], "password": auth[1]} if auth else None
    deadline = time.monotonic() + timeout_s
    while True:
        message = subscribe.simple(topics.status_topic(vehicle_id), qos=1, hostname="127.0.0.1",
                                   port=port, retained=True, auth=login)
        status = messages.decode(Status, message.payload)
        if status.state == state or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_a_channel_that_never_comes_is_named_in_a_warning(tmp_path, caplog, agent_thread):
    feed = tmp_path / "feed.txt"
    feed.write_text("".join(f"ts={t} engine_rpm=900 coolant_temp_c=85\n" for t in range(50)))
    vehicle = Vehicle("partial-1", StdinSource(VEHICLE_SCHEMA.names, stream=feed.open("rb")),
                      mechanism=None)
    agent = DeviceAgent(parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}"), vehicle,
                        status_every_s=0.2)

    with caplog.at_level("WARNING", logger="devices.runners.agent"):
        agent.run(threading.Event(), duration_s=2, drain_timeout_s=0.1)

    warnings = [r.getMessage() for r in caplog.records if "no reading so far has" in r.message]
    assert len(warnings) == 1
    assert "ambient_temp_c, battery_v, engine_load_pct, intake_temp_c" in warnings[0]
    assert agent.status().incomplete_readings == 50


def test_credentials_from_the_environment_are_used_and_a_refusal_says_why(tmp_path):
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "dev-7", "s3cret"],
                   check=True, timeout=15)
    with Mosquitto(options={"allow_anonymous": "false",
                            "password_file": str(passwords)}) as broker:
        read_end, write_end = os.pipe()
        good = _fedfleet("device", "--id", "dev-7", "--source", "stdin", "--mqtt", broker.url,
                         "--username", "dev-7", cwd=tmp_path, stdin=read_end,
                         env_extra={"FEDFLEET_PASSWORD": "s3cret"})
        os.close(read_end)
        online = _retained_status(broker.port, "dev-7", "online", auth=("dev-7", "s3cret"))
        os.close(write_end)  # end of input: the device says offline and exits
        good_output, _ = good.communicate(timeout=30)
        read_end, write_end = os.pipe()
        bad = _fedfleet("device", "--id", "dev-7", "--source", "stdin", "--mqtt", broker.url,
                        "--username", "dev-7", "--password", "wrong", cwd=tmp_path,
                        stdin=read_end)
        os.close(read_end)
        bad_output, _ = bad.communicate(timeout=30)  # it stops by itself, input still open
        os.close(write_end)

    assert online.state == "online"
    assert good.returncode == 0, good_output
    assert bad.returncode == 1
    assert "the broker refused dev-7: Not authorized" in bad_output


def test_a_csv_log_is_replayed_to_its_end_through_the_command(tmp_path):
    log = simulated_csv(tmp_path / "truck-9.csv", 1000)
    with Mosquitto() as broker:
        device = _fedfleet("device", "--id", "truck-9", "--source",
                           f"csv://{log}?speedup=2000", "--mqtt", broker.url, cwd=tmp_path,
                           stdin=subprocess.DEVNULL)
        output, _ = device.communicate(timeout=60)

    assert device.returncode == 0, output
    assert "1000 readings in" in output
    assert "source counters: none" in output  # the log's gaps are missing values, not skips
    # No gateway: the last readings waited their 10 s for a round, and stay in the vehicle.
    assert "no round came; " in output


def test_a_gateway_prints_a_real_vehicles_alert_with_its_utc_time_and_no_verdict():
    out = io.StringIO()
    progress = Progress(out=out)  # what `fedfleet gateway` runs: no simulation, no truth

    progress(Alert("pump-7", 1764000123.0, 6.2, 4.0, "cooling", (("coolant_temp_c", 6.2),), 0))

    line = out.getvalue()
    assert "ALERT pump-7 cooling at 2025-11-24 16:02:03 UTC: coolant_temp_c z=+6.2" in line
    assert "sim" not in line and "false alarm" not in line
