"""OBD-II against a peer nobody here wrote: ELM327-emulator's car, with a real Mosquitto and
gateway. Readings flow, the device takes part in rounds, the global model reaches it, and it
comes through its adapter vanishing without losing an alert."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from devices.onboard.alerts import AlertPolicy
from devices.onboard.detector import FleetGaussian
from devices.onboard.vehicle import Vehicle
from devices.runners.agent import DeviceAgent
from devices.sources.obdii import ObdSource
from federation.features import load_schema
from federation.messages import Alert
from federation.transport import parse_mqtt_url
from tests.servers import Elm327Emulator, Mosquitto
from tests.test_device_agent import (
    AlertWatcher,
    _fedfleet,
    _wait_for,
    merged_from,
    running_gateway,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent
OBD_SCHEMA_FILE = ROOT / "docs" / "schemas" / "obd.json"
OBD_SCHEMA = load_schema(OBD_SCHEMA_FILE)


def test_the_emulated_car_exposes_the_obd_schema_and_readings_are_in_its_units(elm327):
    source = ObdSource(elm327.url, OBD_SCHEMA.names)

    readings = [r for r in (source.read() for _ in range(40)) if r is not None]
    source.close()

    assert {f: p.command for f, p in source.queried.items()} == {
        "engine_rpm": "RPM", "vehicle_speed_kmh": "SPEED", "engine_load_pct": "ENGINE_LOAD",
        "coolant_temp_c": "COOLANT_TEMP", "battery_v": "CONTROL_MODULE_VOLTAGE",
        "intake_temp_c": "INTAKE_TEMP"}
    assert len(readings) >= 30 and all(set(r.values) == set(OBD_SCHEMA.names) for r in readings)
    rpm = [r.values["engine_rpm"] for r in readings]
    assert min(rpm) >= 0 and max(rpm) < 8000 and len(set(rpm)) > 1  # rev/min, and it changes
    assert all(11 < r.values["battery_v"] < 16 for r in readings)  # volts
    assert all(0 <= r.values["engine_load_pct"] <= 100 for r in readings)  # percent


def test_a_pid_the_car_supports_but_answers_null_is_a_missing_value(elm327):
    # The emulated car lists 01 5B (hybrid battery) as supported, and answers it with no data.
    source = ObdSource(elm327.url, ["engine_rpm", "hybrid_battery_pct"])

    readings = [r for r in (source.read() for _ in range(20)) if r is not None]
    source.close()

    assert "hybrid_battery_pct" in source.queried
    assert len(readings) == 20 and all(set(r.values) == {"engine_rpm"} for r in readings)
    assert source.counters() == {"no answer for hybrid_battery_pct": 20}


def test_a_car_on_obd_takes_part_in_rounds_and_receives_the_global_model(tmp_path, elm327):
    with Mosquitto() as broker, running_gateway(broker.url, tmp_path / "gw.db",
                                                schema=OBD_SCHEMA) as gateway:
        device = _fedfleet("device", "--id", "car-1", "--source", f"obd://{elm327.url}",
                           "--schema", str(OBD_SCHEMA_FILE), "--mqtt", broker.url,
                           "--duration", "10", cwd=tmp_path)
        output, _ = device.communicate(timeout=90)
        merged = merged_from(gateway, "car-1")
        rejected = dict(gateway.rejected)

    assert device.returncode == 0, output
    assert "reading engine_rpm <- RPM" in output
    readings = int(re.search(r"(\d+) readings in", output).group(1))
    final_model = int(re.findall(r"model v(\d+)", output)[-1])
    assert readings >= 100, output
    assert merged, output
    assert final_model >= 1, output
    # Nothing is refused for its content. An update goes out once the car has read enough in
    # the round, which with one-second rounds can be the round's last moment: it may then reach
    # the gateway after the round closed and be refused as late, as documented.
    assert set(rejected) <= {"wrong_round"}, rejected


def test_the_agent_comes_back_after_the_adapter_vanishes_and_loses_no_queued_alert(tmp_path):
    store = tmp_path / "mosquitto-store"
    store.mkdir()
    broker = Mosquitto(options={"persistence": "true", "persistence_location": f"{store}/"})
    raised: list[Alert] = []
    with broker, Elm327Emulator() as emulator:
        watcher = AlertWatcher(broker.port)
        source = ObdSource(emulator.url, OBD_SCHEMA.names, timeout_s=0.5, max_backoff_s=1.0)
        vehicle = Vehicle(  # a detector that warms up fast and alerts often: alerts to count
            "car-2", source, mechanism=None,
            detector=FleetGaussian(OBD_SCHEMA, min_readings=100, refresh_every=10),
            policy=AlertPolicy(threshold=0.8, alpha=0.5, cooldown_s=0.5, schema=OBD_SCHEMA))
        agent = DeviceAgent(parse_mqtt_url(broker.url), vehicle,
                            observer=lambda e: raised.append(e) if isinstance(e, Alert) else None)
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,), kwargs={"drain_timeout_s": 5})
        thread.start()
        try:
            _wait_for(lambda: agent.status().alerts_delivered >= 3, 60, "alerts to flow")
            broker.stop()  # from here on, alerts can only wait in the agent's queue
            _wait_for(lambda: not agent.status().connected, 10, "the agent to see the broker go")
            queued_before_outage = vehicle.alerts_raised
            _wait_for(lambda: vehicle.alerts_raised >= queued_before_outage + 3, 30,
                      "alerts while the broker is away")

            emulator.kill()
            _wait_for(lambda: source.connection is None, 10, "the adapter loss to be seen")
            time.sleep(1.5)  # a few failed reconnects, with backoff
            gap_readings = agent.meter.readings
            time.sleep(0.5)
            readings_while_gone = agent.meter.readings - gap_readings
            emulator.start()
            _wait_for(lambda: source.reconnects == 1, 30, "the adapter to be reconnected")
            after_restart = vehicle.alerts_raised
            _wait_for(lambda: vehicle.alerts_raised >= after_restart + 3, 30,
                      "alerts from the reconnected car")
            waiting = agent.status().queued

            broker.start()
            _wait_for(lambda: agent.status().connected and agent.status().queued == 0, 30,
                      "the queue to drain")
        finally:
            stop.set()
            thread.join(timeout=20)
        _wait_for(lambda: len({(a.ts, a.subsystem) for a in watcher.alerts}) >= len(raised), 15,
                  "every alert to arrive")
        watcher.close()

    assert readings_while_gone == 0
    assert waiting >= 6
    assert agent.dropped == 0
    assert sorted({(a.ts, a.subsystem) for a in watcher.alerts}) == sorted(
        (a.ts, a.subsystem) for a in raised)
