"""docs/DEVICES.md's worked example, run as written: a device made of mosquitto_pub and
mosquitto_sub alone sends an alert, and its Last Will marks it offline when it dies."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from federation import topics
from federation.transport import MqttTarget
from fedfleet.cli import main
from tests.servers import Mosquitto, free_port
from tests.test_device_agent import _wait_for, running_gateway

pytestmark = pytest.mark.integration

DOC = (Path(__file__).parent.parent / "docs" / "DEVICES.md").read_text()
EXAMPLE = re.search(r"```sh mqtt-device\n(.*?)\n```", DOC, re.S).group(1)


def test_the_worked_example_attaches_an_alert_only_device_to_the_written_setup(tmp_path):
    assert shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub"), (
        "install Debian's mosquitto-clients (make test does)")
    setup, port = tmp_path / "setup", free_port()
    assert main(["broker-setup", str(setup), "--id", "pump-7", "--port", str(port), "--bind",
                 "127.0.0.1", "--broker-user", pwd.getpwuid(os.geteuid()).pw_name]) == 0
    clients = setup / "clients"
    login = MqttTarget("127.0.0.1", port, "gateway", (clients / "gateway.password").read_text(
        ).strip(), tls=True, ca_file=str(clients / "ca.crt"))
    with Mosquitto(port, conf=setup / "broker" / "mosquitto.conf", tls=True), \
            running_gateway(login, tmp_path / "gw.db", round_seconds=1) as gateway:
        script = (EXAMPLE.replace("PORT=8883", f"PORT={port}")
                  .replace("SETUP=DIR", f"SETUP={setup}")
                  .replace("/tmp/pump-7.alerts", str(tmp_path / "pump-7.alerts")))
        run = subprocess.run(["sh", "-e", "-c", script], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        _wait_for(lambda: gateway.store.statuses().get("pump-7") == "offline", 15,
                  "the Last Will to mark pump-7 offline")
        alerts = [a for a in gateway.store.alerts() if a.vehicle_id == "pump-7"]
        received = dict(gateway.received)
        rejected = dict(gateway.rejected)
        participants = gateway.store.participants()
        rounds_closed = len(gateway.store.rounds())

    assert run.returncode == 0, run.stderr
    assert '"features":' in run.stdout  # step 1 printed the open round
    assert [(a.subsystem, a.sensors) for a in alerts] == [("cooling", (("coolant_temp_c", 6.2),))]
    assert received == {topics.STATUS: 2, topics.ALERT: 1}  # online, then the Last Will
    assert rejected == {}
    assert rounds_closed >= 1 and not any("pump-7" in ids for ids in participants.values())
