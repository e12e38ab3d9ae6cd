"""The fedfleet command as a user runs it: exit codes, settings, clean shutdown."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from federation import messages, topics
from federation.messages import Status
from fedfleet.cli import main
from fedfleet.config import ConfigError, resolve
from tests.processes import read_store, wait_until
from tests.servers import Mosquitto, free_port

ROOT = Path(__file__).parent.parent


def _fedfleet(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fedfleet", *args], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fleet", "--vehicles", "0"], "vehicles must be at least 1"),
        (["fleet", "--speedup", "-2"], "speedup must be greater than 0"),
        (["fleet", "--epsilon-budget", "0"], "epsilon-budget must be greater than 0"),
        (["demo", "--epsilon-budget", "-1"], "epsilon-budget must be greater than 0"),
        (["fleet", "--epsilon-budget", "nan"], "epsilon-budget must be greater than 0"),
        (["fleet", "--epsilon-budget", "inf"], "epsilon-budget must be greater than 0"),
        (["demo", "--epsilon-budget", "1e6"],
         "epsilon-budget must be greater than 0 and at most 100,000 "
         "(beyond it, use --privacy off)"),
        (["fleet", "--delta", "1"], "delta must be strictly between 0 and 1"),
        (["demo", "--delta", "0"], "delta must be strictly between 0 and 1"),
        (["fleet", "--releases", "0"], "releases must be between 1 and 1000"),
        (["demo", "--releases", "5000"], "releases must be between 1 and 1000"),
        (["fleet", "--mechanism", "exponential"], "invalid choice"),
        (["demo", "--privacy", "trusted"], "invalid choice"),
        (["privacy", "--store", "redis://x"], "unsupported store URL"),
        (["gateway", "--mqtt", "http://x"], "MQTT URL must start with mqtt://"),
        (["gateway", "--store", "redis://x"], "unsupported store URL"),
        (["gateway", "--store", "influx://127.0.0.1:9/fleet"], "set INFLUXDB_V2_TOKEN"),
        (["fleet", "--config", "/nonexistent.toml"], "cannot read config file"),
        (["gateway", "--schema", "/nonexistent.json"], "cannot read schema file"),
        (["broker", "--port", "70000"], "port must be a TCP port"),
        (["gateway", "--password", "x"], "a password needs a login"),
        (["device", "--id", "truck-9", "--source", "stdin", "--mqtt", "mqtt://:pw@h"],
         "a password needs a login"),
        (["gateway", "--ca-file", "ca.crt"], "need an mqtts:// URL"),
        (["gateway", "--mqtt", "mqtts://h", "--key-file", "k.pem"], "--key-file needs --cert-file"),
        (["fleet", "--mqtt", "mqtts://h", "--ca-file", "/nonexistent.crt"],
         "--ca-file /nonexistent.crt: no such file"),
        (["fleet", "--mqtt", "mqtt://u@h", "--credentials-dir", "."], "drop the login"),
        (["fleet", "--vehicles", "2", "--credentials-dir", "."], "no login for 'veh-0000'"),
        (["broker-setup", "setup", "--id", "gateway"], "the gateway's login, not a vehicle"),
        (["broker-setup", "setup", "--id", "veh+1"], "invalid vehicle id"),
        (["broker-setup", "setup", "--port", "0"], "port must be a TCP port"),
        (["broker-setup", "setup", "--auth", "certificate", "--plain-port", "1883"],
         "a plain listener needs password logins"),
        (["fleet", "--id-prefix", "depot/2"], "id-prefix must be at most 54 characters"),
        (["fleet", "--id-prefix", "x" * 55], "id-prefix must be at most 54 characters"),
        (["launch"], "invalid choice"),
        (["demo", "--privacy", "maybe"], "invalid choice"),
        (["gateway", "--http-port", "-1"], "http-port must be a TCP port (1-65535), or 0"),
        (["gateway", "--strategy", "krum"], "invalid choice"),
        (["demo", "--max-reading-rate", "0"], "max-reading-rate must be a finite number"),
        (["gateway", "--max-reading-rate", "inf"], "max-reading-rate must be a finite number"),
        (["gateway", "--rollback", "-2"], "rollback must be a model version"),
        (["gateway", "--gateway-id", "a"], "--gateway-id needs --workers K"),
        (["gateway", "--workers", "1", "--lease-seconds", "0"],
         "lease-seconds must be between 0.1 and 3600"),
        (["broker-setup", "setup", "--workers", "-1"], "workers must be 0 or more"),
        (["broker-setup", "setup", "--region", "a/b"], "invalid region name"),
        (["broker-setup", "setup", "--workers", "1", "--id", "worker-0"],
         "logins must differ from each other and from every vehicle id"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(args, message, tmp_path):
    process = _fedfleet(*args, cwd=tmp_path)

    output, _ = process.communicate(timeout=30)

    assert process.returncode == 2
    assert message in output
    assert "Traceback" not in output


@pytest.mark.parametrize(("where", "message"), [
    ({"FEDFLEET_STRATEGY": "krum"}, "strategy must be one of auto, mean, median"),
    ({"FEDFLEET_MAX_READING_RATE": "-1"}, "max-reading-rate must be a finite number"),
])
def test_the_poisoning_settings_from_the_environment_are_checked(tmp_path, where, message):
    process = _fedfleet("gateway", "--mqtt", "mqtt://127.0.0.1:1", cwd=tmp_path, env=where)

    output, _ = process.communicate(timeout=30)

    assert process.returncode == 2
    assert message in output


def test_the_strategy_and_reading_rate_come_from_a_settings_file(tmp_path):
    config = tmp_path / "gw.toml"
    config.write_text('strategy = "median"\n[gateway]\nmax_reading_rate = 50\n')

    settings = resolve("gateway", {}, {}, str(config))

    assert (settings["strategy"], settings["max_reading_rate"], settings["rollback"]) == (
        "median", 50.0, 0)


def test_a_password_from_the_environment_without_a_login_is_a_usage_error(tmp_path):
    process = _fedfleet("device", "--id", "truck-9", "--source", "stdin", "--mqtt",
                        "mqtt://127.0.0.1:1", cwd=tmp_path, env={"FEDFLEET_PASSWORD": "pw"})

    output, _ = process.communicate(timeout=30)

    assert process.returncode == 2
    assert "a password needs a login" in output and "FEDFLEET_PASSWORD" in output


def test_broker_setup_never_writes_over_an_existing_setup(tmp_path):
    (tmp_path / "setup").mkdir()
    (tmp_path / "setup" / "ca.key").write_text("the CA every client trusts")

    process = _fedfleet("broker-setup", "setup", cwd=tmp_path)
    output, _ = process.communicate(timeout=30)

    assert process.returncode == 2 and "is not empty" in output
    assert (tmp_path / "setup" / "ca.key").read_text() == "the CA every client trusts"


def test_broker_setup_writes_paths_as_the_broker_and_clients_will_see_them(tmp_path):
    me = pwd.getpwuid(os.geteuid()).pw_name

    code = main(["broker-setup", str(tmp_path / "setup"), "--vehicles", "2", "--host",
                 "mosquitto", "--root", "/srv/fedfleet", "--broker-user", me])

    conf = (tmp_path / "setup" / "broker" / "mosquitto.conf").read_text()
    gateway = tomllib.loads((tmp_path / "setup" / "clients" / "gateway.toml").read_text())
    fleet = tomllib.loads((tmp_path / "setup" / "clients" / "fleet.toml").read_text())
    assert code == 0
    assert "password_file /srv/fedfleet/broker/passwd\n" in conf and str(tmp_path) not in conf
    assert gateway["mqtt"] == "mqtts://gateway@mosquitto:8883"
    assert gateway["ca_file"] == fleet["ca_file"] == "/srv/fedfleet/clients/ca.crt"
    assert fleet["fleet"] == {"credentials_dir": "/srv/fedfleet/clients", "vehicles": 2}


def test_an_unreachable_broker_is_a_runtime_failure(tmp_path):
    process = _fedfleet("gateway", "--mqtt", f"mqtt://127.0.0.1:{free_port()}", cwd=tmp_path)

    output, _ = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "no MQTT broker answered" in output


def test_flags_override_environment_which_overrides_the_config_file(tmp_path):
    config = tmp_path / "fedfleet.toml"
    config.write_text('vehicles = 7\nseed = 3\nspeedup = 5.0\n[gateway]\nround_seconds = 9\n')

    settings = resolve("fleet", {"seed": 11}, {"FEDFLEET_SPEEDUP": "8"}, str(config))
    gateway = resolve("gateway", {}, {}, str(config))

    assert (settings["vehicles"], settings["seed"], settings["speedup"]) == (7, 11, 8.0)
    assert gateway["round_seconds"] == 9.0
    assert settings["round_seconds"] == 600.0


def test_the_id_prefix_comes_from_the_config_file_the_environment_or_the_flag(tmp_path):
    config = tmp_path / "fedfleet.toml"
    config.write_text('[fleet]\nid_prefix = "depot1-"\n')

    from_file = resolve("fleet", {}, {}, str(config))
    from_env = resolve("fleet", {}, {"FEDFLEET_ID_PREFIX": "depot2-"}, str(config))
    from_flag = resolve("fleet", {"id_prefix": "depot3-"}, {"FEDFLEET_ID_PREFIX": "x"})

    assert [s["id_prefix"] for s in (from_file, from_env, from_flag)] == [
        "depot1-", "depot2-", "depot3-"]
    assert resolve("fleet", {}, {})["id_prefix"] == ""


def test_an_unknown_or_mistyped_setting_in_the_config_file_is_refused(tmp_path):
    config = tmp_path / "fedfleet.toml"
    config.write_text('vehicels = 7\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve("fleet", {}, {}, str(config))

    config.write_text('vehicles = "many"\n')
    with pytest.raises(ConfigError, match="expected an integer"):
        resolve("fleet", {}, {}, str(config))


MERGED = "SELECT round FROM rounds WHERE quorum_met = 1"
OFFLINE = "SELECT vehicle_id FROM statuses WHERE state = 'offline'"


@pytest.mark.integration
def test_sigterm_stops_gateway_and_fleet_cleanly(tmp_path):
    with Mosquitto() as broker:
        gateway = _fedfleet("gateway", "--mqtt", broker.url, "--round-seconds", "1",
                            "--store", "sqlite:///gw.db", cwd=tmp_path)
        # Fast enough for two releases (after 300 and 900 readings) within seconds.
        fleet = _fedfleet("fleet", "--mqtt", broker.url, "--vehicles", "5", "--speedup", "400",
                          cwd=tmp_path)
        wait_until(lambda: len(read_store(tmp_path / "gw.db", MERGED)) >= 2, 60,
                   "two merged rounds")

        fleet.send_signal(signal.SIGTERM)
        outputs = [fleet.communicate(timeout=30)[0]]
        wait_until(lambda: len(read_store(tmp_path / "gw.db", OFFLINE)) == 5, 10,
                   "the gateway to record the offline statuses the fleet just sent")
        gateway.send_signal(signal.SIGTERM)
        outputs.append(gateway.communicate(timeout=30)[0])
        statuses = _retained_statuses(broker.url, 5)

    assert [p.returncode for p in (fleet, gateway)] == [0, 0], outputs
    assert {s.state for s in statuses} == {"offline"}
    with sqlite3.connect(tmp_path / "gw.db") as db:
        offline = db.execute("SELECT COUNT(*) FROM statuses WHERE state = 'offline'").fetchone()
    assert offline[0] == 5


def _retained_statuses(url: str, count: int) -> list[Status]:
    from paho.mqtt import subscribe

    from federation.transport import parse_mqtt_url

    target = parse_mqtt_url(url)
    received = subscribe.simple(topics.subscription(topics.STATUS), qos=1, msg_count=count,
                                hostname=target.host, port=target.port, retained=True)
    return [messages.decode(Status, m.payload) for m in received]


@pytest.mark.integration
def test_the_demo_runs_on_the_embedded_defaults_and_reports_its_figures(tmp_path):
    http_port = free_port()
    # Daily randomized alert answers are off by default (a lifetime budget of 1 cannot pay
    # for one); here they are on, with a budget that can.
    answers = {"FEDFLEET_ALERT_REPORT_EPSILON": "1.0986", "FEDFLEET_EPSILON_BUDGET": "20"}
    process = _fedfleet("demo", "--duration", "15", "--vehicles", "20", "--http-port",
                        str(http_port), "--mqtt", f"mqtt://127.0.0.1:{free_port()}", cwd=tmp_path,
                        env=answers)
    assert process.stdout is not None
    head = [process.stdout.readline() for _ in range(2)]
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=10) as reply:
        health = json.load(reply)

    output, _ = process.communicate(timeout=120)

    assert process.returncode == 0, output
    assert head[1] == f"dashboard: open http://127.0.0.1:{http_port}/ in a browser\n", head
    assert health["status"] == "ok"
    assert "round 2: " in output
    assert "rounds completed:" in output
    sizes = re.search(r"update message: (\d+) bytes; global model message \(as vehicles get "
                      r"it\): (\d+) bytes", output)
    assert sizes, output
    # Both travel in the binary form, each under half its JSON form's ~2.2 kB.
    assert all(int(size) < 1100 for size in sizes.groups()), sizes.group(0)
    assert (tmp_path / "fedfleet-data" / "demo.db").exists()
    rate = re.search(r"fleet alert rate on \d{4}-\d\d-\d\d, estimated from \d+ randomized "
                     r"answers: (\d+)% \(95% interval (\d+)% to (\d+)%\)", output)
    assert rate, output
    assert not [line for line in output.splitlines() if "] round " in line and "rate" in line]
    shown, low, high = map(int, rate.groups())
    assert 0 <= low <= shown <= high <= 100, rate.group(0)


@pytest.mark.integration
def test_the_demo_under_its_default_privacy_serves_a_fleet_model_that_vehicles_use(tmp_path):
    process = _fedfleet("demo", "--duration", "25", "--vehicles", "30", "--http-port", "0",
                        "--mqtt", f"mqtt://127.0.0.1:{free_port()}", cwd=tmp_path)

    output, _ = process.communicate(timeout=120)

    assert process.returncode == 0, output
    merged = re.findall(r"round \d+: (\d+) merged .* noise ([\d.e+-]+) \(weighs (\d+)%\)", output)
    assert merged, output  # the first releases, at 300 readings, came within the run
    assert all(int(n) > 0 and float(noise) > 0 and 0 < int(weight) < 100
               for n, noise, weight in merged), merged
    assert "too noisy" not in output
    closing = re.search(r"global model privacy noise: ([\d.]+) of its own spread; a vehicle "
                        r"counts it at (\d+)%", output)
    assert closing and int(closing.group(2)) > 0, output


def test_a_dashboard_port_already_taken_is_a_runtime_failure_that_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _fedfleet("gateway", "--http-port", str(port), cwd=tmp_path)
        output, _ = process.communicate(timeout=30)

    assert process.returncode == 1
    assert f"port {port} is already in use; choose another port with --http-port" in output
    assert "Traceback" not in output


@pytest.mark.integration
def test_a_killed_fleet_is_marked_offline_by_each_vehicles_last_will(tmp_path):
    with Mosquitto() as broker:
        fleet = _fedfleet("fleet", "--mqtt", broker.url, "--vehicles", "4", cwd=tmp_path)
        online = _retained_statuses(broker.url, 4)

        fleet.kill()
        fleet.wait(timeout=10)
        wait_until(lambda: {s.state for s in _retained_statuses(broker.url, 4)} == {"offline"},
                   10, "the broker to publish every vehicle's last will")
        after = _retained_statuses(broker.url, 4)

    assert {s.state for s in online} == {"online"}
    assert {s.state for s in after} == {"offline"}
    assert {s.vehicle_id for s in after} == {f"veh-{i:04d}" for i in range(4)}


@pytest.mark.integration
def test_a_broker_that_refuses_the_gateway_is_a_runtime_failure_that_says_why(tmp_path):
    with Mosquitto(options={"allow_anonymous": "false"}) as broker:
        process = _fedfleet("gateway", "--mqtt", broker.url, cwd=tmp_path)
        output, _ = process.communicate(timeout=30)

    assert process.returncode == 1
    assert "the broker refused the gateway: Not authorized" in output
