"""What a command does when it cannot do its job: it gives up after a bounded, stated wait
with exit 1 and one line that says why (2 for a usage error), never retries in silence, and
creates nothing when it only reads."""

from __future__ import annotations

import logging
import os
import socket
import subprocess

import pytest

from devices.runners.fleet import Fleet, simulated_vehicles
from federation.transport import MqttTarget, parse_mqtt_url
from fedfleet.commands import _start_demo_broker
from tests.servers import Mosquitto, free_port, mosquitto_binary
from tests.test_device_agent import _fedfleet, _retained_status


def _lines_with(text: str, output: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_a_fleet_with_no_broker_gives_up_after_its_stated_wait(tmp_path):
    process = _fedfleet("fleet", "--vehicles", "3", "--mqtt",
                        f"mqtt://127.0.0.1:{free_port()}", cwd=tmp_path)

    output, _ = process.communicate(timeout=60)

    assert process.returncode == 1
    assert len(_lines_with("no MQTT broker answered at 127.0.0.1:", output)) == 1
    assert "within 10 s" in output
    assert "Traceback" not in output


@pytest.mark.integration
def test_a_fleet_the_broker_refuses_exits_1_with_one_line_for_all_its_vehicles(tmp_path):
    with Mosquitto(options={"allow_anonymous": "false"}) as broker:
        process = _fedfleet("fleet", "--vehicles", "3", "--mqtt", broker.url, cwd=tmp_path)
        output, _ = process.communicate(timeout=60)

    refused = _lines_with("refused", output)
    assert process.returncode == 1
    assert len(refused) == 1
    assert refused[0].endswith("the broker refused 3 of 3 vehicles (veh-0000 first): "
                               "Not authorized")


def test_a_refusal_after_the_start_is_logged_once_per_reason(caplog):
    fleet = Fleet(MqttTarget("127.0.0.1", 1), simulated_vehicles(3, 0, None))
    fleet._starting = False  # as after the first connections

    with caplog.at_level(logging.ERROR, logger="devices.runners.fleet"):
        for vehicle in fleet.vehicles * 4:
            fleet._refuse(vehicle.vehicle_id, "Not authorized")
        fleet._refuse("veh-0001", "Server unavailable")

    assert dict(fleet.refusals) == {"Not authorized": 12, "Server unavailable": 1}
    assert len(caplog.records) == 2


@pytest.mark.integration
def test_a_login_in_the_url_takes_its_password_from_the_environment(tmp_path):
    passwords = tmp_path / "passwd"
    subprocess.run([mosquitto_binary("mosquitto_passwd"), "-b", "-c", str(passwords),
                    "truck-9", "s3cret"], check=True, timeout=15)
    with Mosquitto(options={"allow_anonymous": "false",
                            "password_file": str(passwords)}) as broker:
        read_end, write_end = os.pipe()
        process = _fedfleet("device", "--id", "truck-9", "--source", "stdin", "--mqtt",
                            f"mqtt://truck-9@127.0.0.1:{broker.port}", cwd=tmp_path,
                            stdin=read_end, env_extra={"FEDFLEET_PASSWORD": "s3cret"})
        os.close(read_end)
        online = _retained_status(broker.port, "truck-9", "online", auth=("truck-9", "s3cret"))
        os.close(write_end)  # end of input: the device says offline and exits
        output, _ = process.communicate(timeout=60)

    assert online.state == "online"
    assert process.returncode == 0, output
    assert "refused" not in output


def test_an_obd_port_that_is_not_there_is_a_usage_error_said_once(tmp_path):
    missing = tmp_path / "ttyUSB0"

    process = _fedfleet("device", "--id", "car-17", "--source", f"obd://{missing}",
                        cwd=tmp_path)
    output, _ = process.communicate(timeout=60)

    assert process.returncode == 2
    assert output.startswith(f"fedfleet device: error: obd://{missing}: ")
    assert len(_lines_with("could not open port", output)) == 1


def test_privacy_on_a_store_that_does_not_exist_creates_nothing(tmp_path):
    store = tmp_path / "nonexistent" / "dir" / "x.db"

    process = _fedfleet("privacy", "--store", f"sqlite:///{store}", cwd=tmp_path)
    output, _ = process.communicate(timeout=60)

    assert process.returncode == 2
    assert f"no store at {store}" in output
    assert not (tmp_path / "nonexistent").exists()


def test_a_demo_port_chosen_and_taken_is_a_runtime_failure_that_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _fedfleet("demo", "--mqtt", f"mqtt://127.0.0.1:{port}", "--http-port", "0",
                            "--duration", "5", cwd=tmp_path)
        output, _ = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "choose another port with --mqtt mqtt://127.0.0.1:PORT" in output
    assert "Traceback" not in output


def test_the_default_demo_port_when_taken_is_replaced_and_the_new_one_said(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        embedded = _start_demo_broker(parse_mqtt_url(f"mqtt://127.0.0.1:{port}"),
                                      port_chosen=False)
        embedded.stop()

    printed = capsys.readouterr().out
    assert embedded.url != f"mqtt://127.0.0.1:{port}"
    assert f"port {port} is taken" in printed and embedded.url in printed


def test_a_device_that_cannot_reach_its_broker_says_so_once_not_every_second(tmp_path):
    read_end, write_end = os.pipe()  # input stays open: the run lasts its --duration
    process = _fedfleet("device", "--id", "truck-9", "--source", "stdin", "--mqtt",
                        f"mqtt://127.0.0.1:{free_port()}", "--duration", "4", cwd=tmp_path,
                        stdin=read_end)
    os.close(read_end)
    output, _ = process.communicate(timeout=60)
    os.close(write_end)

    assert process.returncode == 0, output
    assert len(_lines_with("cannot reach the broker", output)) == 1
