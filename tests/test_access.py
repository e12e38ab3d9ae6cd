"""Access to a real Mosquitto over TLS, as `fedfleet broker-setup` writes it: who may connect,
what each login may publish, and that no login can take another client's id."""

from __future__ import annotations

import os
import pwd
import queue
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker.access import client_login
from federation.transport import MqttTarget, make_client
from fedfleet.cli import main
from tests.clients import TIMEOUT_S, Client
from tests.servers import Mosquitto, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).parent.parent
KINDS = ("update", "alert", "status")


@dataclass
class Deployment:
    """A setup written by the command, and the Mosquitto that runs it."""

    directory: Path
    broker: Mosquitto
    auth: str

    @property
    def clients(self) -> Path:
        return self.directory / "clients"

    def target(self, login: str | None = None) -> MqttTarget:
        """The TLS listener, verified with the setup's CA, as ``login`` (``None``: anonymous)."""
        base = MqttTarget("127.0.0.1", self.broker.port, tls=True,
                          ca_file=str(self.clients / "ca.crt"))
        if login is None:
            return base
        found = client_login(self.clients, login)
        return replace(base, username=found.username, password=found.password,
                       cert_file=found.cert_file, key_file=found.key_file)


def _write_setup(directory: Path, port: int, auth: str) -> int:
    return main(["broker-setup", str(directory), "--vehicles", "3", "--id", "truck-9",
                 "--host", "127.0.0.1", "--port", str(port), "--bind", "127.0.0.1",
                 "--auth", auth, "--broker-user", pwd.getpwuid(os.geteuid()).pw_name])


@pytest.fixture(scope="module", params=["password", "certificate"])
def deployment(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp(f"access-{request.param}") / "setup"
    port = free_port()
    assert _write_setup(directory, port, request.param) == 0
    with Mosquitto(port, conf=directory / "broker" / "mosquitto.conf", tls=True) as broker:
        yield Deployment(directory, broker, request.param)


def _connected(deployment: Deployment, login: str, client_id: str | None = None) -> Client:
    client = Client(deployment.target(login), client_id or f"fedfleet-{login}")
    assert client.refusal() is None, f"{login} was refused"
    return client


def _gateway(deployment: Deployment) -> Client:
    gateway = _connected(deployment, "gateway")
    for kind in KINDS:
        assert gateway.subscribe(f"fleet/v1/vehicles/+/{kind}")
    return gateway


def test_the_setup_keeps_secrets_to_their_owner(deployment):
    secrets = [deployment.directory / "ca" / "ca.key",
               deployment.directory / "broker" / "server.key",
               *deployment.clients.glob("*.key"), *deployment.clients.glob("*.password"),
               *deployment.clients.glob("*.toml"), *deployment.directory.glob("broker/passwd")]

    modes = {path.name: path.stat().st_mode & 0o777 for path in secrets}

    assert len(secrets) >= 7 and set(modes.values()) == {0o600}


def test_a_client_without_a_login_is_refused(deployment):
    anonymous = deployment.target()

    if deployment.auth == "password":
        with Client(anonymous, "fedfleet-veh-0000") as client:
            assert "not authori" in (client.refusal() or "").lower()
        wrong = replace(deployment.target("veh-0000"), password="guess")
        with Client(wrong, "fedfleet-veh-0000") as client:
            assert "not authori" in (client.refusal() or "").lower()
    else:  # no certificate, no connection
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake_then_read(anonymous)


def _handshake_then_read(target: MqttTarget) -> None:
    client = make_client("fedfleet-anonymous", target)
    client.connect(target.host, target.port)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # TLS 1.3: the refusal comes after the handshake
        if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError("the broker closed the connection")


def test_a_client_that_does_not_trust_the_broker_does_not_connect(deployment):
    untrusting = replace(deployment.target("veh-0000"), ca_file=None)  # the system's CAs

    with pytest.raises(ssl.SSLCertVerificationError):
        Client(untrusting, "fedfleet-veh-0000")


def test_a_vehicle_cannot_publish_as_another_vehicle_or_read_its_messages(deployment):
    with _gateway(deployment) as gateway, _connected(deployment, "veh-0001") as veh1, \
            _connected(deployment, "veh-0002") as veh2:
        veh1.subscribe("fleet/v1/vehicles/veh-0002/status")  # granted, then never delivered
        # Each publish is acknowledged before the next, so the broker handles them in order.
        for kind in KINDS:
            veh1.publish(f"fleet/v1/vehicles/veh-0002/{kind}", b"spoofed")
        veh1.publish("fleet/v1/vehicles/gateway/update", b"spoofed")
        veh2.publish("fleet/v1/vehicles/veh-0002/status", b"online")
        veh1.publish("fleet/v1/vehicles/veh-0001/update", b"own")

        gateway_got = gateway.received(2)

    assert gateway_got == [("fleet/v1/vehicles/veh-0002/status", b"online"),
                           ("fleet/v1/vehicles/veh-0001/update", b"own")]
    assert gateway.inbox.empty()
    assert veh1.inbox.empty()


def test_a_vehicle_cannot_publish_the_global_topics(deployment):
    with _connected(deployment, "gateway") as gateway, \
            _connected(deployment, "veh-0001") as veh1, \
            _connected(deployment, "truck-9") as truck:
        assert truck.subscribe("fleet/v1/global/#")
        veh1.publish("fleet/v1/global/model", b"forged", retain=True)
        veh1.publish("fleet/v1/global/round", b"forged", retain=True)
        gateway.publish("fleet/v1/global/round", b"round", retain=True)

        truck_got = truck.received(1)
        with Client(deployment.target("veh-0002"), "fedfleet-veh-0002") as late:
            assert late.refusal() is None and late.subscribe("fleet/v1/global/#")
            late_got = late.received(1)  # retained: the gateway's round only

    assert truck_got == [("fleet/v1/global/round", b"round")] and truck.inbox.empty()
    assert late_got == [("fleet/v1/global/round", b"round")] and late.inbox.empty()


def test_a_vehicle_cannot_take_another_clients_id(deployment):
    with _gateway(deployment) as gateway, _connected(deployment, "veh-0002") as victim:
        for stolen in ("fedfleet-gateway", "gateway", "fedfleet-veh-0002", "veh-0002"):
            with _connected(deployment, "veh-0001", client_id=stolen):
                pass
        # A login used twice does take its own earlier connection over: the check can fail.
        with _connected(deployment, "veh-0001") as first, \
                _connected(deployment, "veh-0001", client_id="somebody-else"):
            assert first.disconnected.wait(TIMEOUT_S)
        victim.publish("fleet/v1/vehicles/veh-0002/status", b"still here")

        gateway_got = gateway.received(1)
        taken_over = gateway.disconnected.is_set() or victim.disconnected.is_set()

    assert gateway_got == [("fleet/v1/vehicles/veh-0002/status", b"still here")]
    assert not taken_over


class _Process:
    """A fedfleet command with its output collected line by line."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fedfleet", *args], cwd=cwd, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, matches: Callable[[str], bool], timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            if matches(line):
                return line
        raise AssertionError(f"no such line within {timeout_s} s:\n{''.join(seen[-20:])}")

    def finish(self, timeout_s: float) -> tuple[int, list[str]]:
        """Wait for the command to exit by itself; its exit code and every line it printed."""
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout_s)
        return code, [self.lines.get_nowait() for _ in range(self.lines.qsize())]

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=30)


def test_the_gateway_and_a_fleet_federate_over_tls_with_the_written_settings(
        deployment, tmp_path):
    clients = deployment.clients
    gateway = _Process("gateway", "--config", str(clients / "gateway.toml"), "--round-seconds",
                       "1", "--store", f"sqlite:///{tmp_path / 'gw.db'}", cwd=tmp_path)
    try:
        gateway.wait_for(lambda line: "fleet schema" in line, 30)
        fleet = _Process("fleet", "--config", str(clients / "fleet.toml"), "--speedup", "300",
                         "--ledger-dir", str(tmp_path / "ledgers"), cwd=tmp_path)
        try:
            merged = gateway.wait_for(lambda line: " 3 merged" in line, 60)
        finally:
            fleet_code = fleet.stop()
    finally:
        gateway_code = gateway.stop()

    assert "(3 online" in merged
    assert (fleet_code, gateway_code) == (0, 0)


def test_a_device_logs_in_with_its_own_login_from_the_url_and_variable_or_certificate(
        deployment, tmp_path):
    clients, url = deployment.clients, f"127.0.0.1:{deployment.broker.port}"
    if deployment.auth == "password":
        login = ["--mqtt", f"mqtts://truck-9@{url}"]
        env = {"FEDFLEET_PASSWORD": (clients / "truck-9.password").read_text().strip()}
    else:
        login = ["--mqtt", f"mqtts://{url}", "--cert-file", str(clients / "truck-9.crt"),
                 "--key-file", str(clients / "truck-9.key")]
        env = {}
    device = _Process("device", "--id", "truck-9", "--source", "stdin", *login, "--ca-file",
                      str(clients / "ca.crt"), "--ledger-dir", str(tmp_path), cwd=tmp_path,
                      env=env)
    try:
        connected = device.wait_for(lambda line: "truck-9: connected to" in line, 30)
    finally:
        code = device.stop()

    assert "127.0.0.1" in connected and code == 0


@pytest.mark.parametrize("case", ["untrusted", "not-tls"])
def test_a_tls_failure_ends_the_command_with_one_clear_line_and_exit_1(
        deployment, mosquitto, tmp_path, case):
    port, ca_file = deployment.broker.port, str(deployment.clients / "ca.crt")
    if case == "not-tls":  # mqtts:// to a plain listener
        args = ["device", "--id", "truck-9", "--source", "stdin", "--mqtt",
                f"mqtts://127.0.0.1:{mosquitto.port}"]
        expected = f"TLS: the handshake with 127.0.0.1:{mosquitto.port} failed"
    elif deployment.auth == "password":  # the system's CAs do not know the setup's
        args = ["gateway", "--mqtt", f"mqtts://gateway@127.0.0.1:{port}"]
        expected = f"TLS: the certificate of the broker at 127.0.0.1:{port} is not trusted"
    else:  # the broker is trusted, but this client has no certificate
        args = ["gateway", "--mqtt", f"mqtts://127.0.0.1:{port}", "--ca-file", ca_file]
        expected = f"TLS: the broker at 127.0.0.1:{port} refused this client's certificate"
    started = time.monotonic()

    code, output = _Process(*args, cwd=tmp_path).finish(timeout_s=30)
    elapsed_s = time.monotonic() - started

    assert code == 1
    assert [line for line in output if "TLS" in line or "Traceback" in line] == [
        line for line in output if expected in line]
    assert len([line for line in output if expected in line]) == 1, output
    assert elapsed_s < 15
