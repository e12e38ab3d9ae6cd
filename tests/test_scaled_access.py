"""The logins `fedfleet broker-setup` writes for a scaled-out fleet, against a real Mosquitto
running the written config: a worker reads the updates through the gateways' shared
subscription and publishes its own partial and forwarded updates only; gateways sharing the
lease read the partials and write the lease; a region broker's bridge, as written, carries its
region's partial, statuses and alerts up and the round down, and nothing else."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.access import client_login
from federation import topics
from federation.transport import MqttTarget
from fedfleet.cli import main
from tests.clients import Client
from tests.servers import HOST, Mosquitto, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SHARED_UPDATES = topics.shared("fedfleet-gateways", topics.subscription(topics.UPDATE))
ME = pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class Setup:
    directory: Path
    broker: Mosquitto

    def target(self, login: str) -> MqttTarget:
        clients = self.directory / "clients"
        found = client_login(clients, login)
        return MqttTarget(HOST, self.broker.port, tls=True, ca_file=str(clients / "ca.crt"),
                          username=found.username, password=found.password,
                          cert_file=found.cert_file, key_file=found.key_file)

    def client(self, login: str) -> Client:
        connected = Client(self.target(login), login)
        assert connected.refusal() is None, f"{login} was refused"
        return connected


@pytest.fixture(scope="module", params=["password", "certificate"])
def setup(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp(f"scaled-{request.param}") / "setup"
    port = free_port()
    assert main(["broker-setup", str(directory), "--vehicles", "2", "--gateway-id", "a",
                 "--workers", "2", "--region", "north", "--host", HOST, "--port", str(port),
                 "--bind", HOST, "--broker-user", ME, "--auth", request.param]) == 0
    with Mosquitto(port, conf=directory / "broker" / "mosquitto.conf", tls=True) as broker:
        yield Setup(directory, broker)


def test_the_setup_writes_a_settings_file_for_each_worker_and_gateway(setup):
    clients = setup.directory / "clients"

    worker = (clients / "worker-1.toml").read_text()
    gateway = (clients / "gateway-a.toml").read_text()

    assert 'role = "worker"' in worker and 'worker_id = "worker-1"' in worker
    assert 'gateway_id = "a"' in gateway and "workers = 2" in gateway
    assert (clients / "bridge-north.conf").stat().st_mode & 0o777 == 0o600


def test_a_worker_reads_its_share_and_publishes_only_its_partial_and_forwarded_updates(setup):
    gateway = setup.client("gateway-a")
    worker, vehicle = setup.client("worker-0"), setup.client("veh-0000")
    with gateway, worker, vehicle:
        assert gateway.subscribe(f"{topics.ROOT}/gateway/#")
        assert worker.subscribe(SHARED_UPDATES)
        worker.subscribe(topics.subscription(topics.STATUS))  # granted, never delivered
        vehicle.publish(topics.status_topic("veh-0000"), b"online")
        vehicle.publish(topics.update_topic("veh-0000"), b"update")
        worker_got = worker.received(1)
        # Each publish is acknowledged before the next, so the broker handles them in order.
        for forged in (topics.partial_topic("worker-1"), topics.partial_topic("north"),
                       topics.LEASE_TOPIC, topics.ROUND_TOPIC, topics.update_topic("veh-0001")):
            worker.publish(forged, b"forged")
        worker.publish(topics.forwarded_topic("veh-0000"), b"forwarded")
        worker.publish(topics.partial_topic("worker-0"), b"partial")
        gateway_got = gateway.received(2)

    assert worker_got == [(topics.update_topic("veh-0000"), b"update")]
    assert worker.inbox.empty()
    assert gateway_got == [(topics.forwarded_topic("veh-0000"), b"forwarded"),
                           (topics.partial_topic("worker-0"), b"partial")]
    assert gateway.inbox.empty()


def test_a_vehicle_cannot_publish_a_partial_or_the_lease(setup):
    with setup.client("gateway-a") as gateway, setup.client("veh-0001") as vehicle:
        assert gateway.subscribe(f"{topics.ROOT}/gateway/#")
        for forged in (topics.partial_topic("veh-0001"), topics.forwarded_topic("veh-0001"),
                       topics.LEASE_TOPIC):
            vehicle.publish(forged, b"forged")
        gateway.publish(topics.LEASE_TOPIC, b"lease")

        gateway_got = gateway.received(1)

    assert gateway_got == [(topics.LEASE_TOPIC, b"lease")] and gateway.inbox.empty()


@pytest.fixture
def region(setup: Setup, tmp_path: Path) -> Iterator[Mosquitto]:
    """Region north's broker (plain, for its own vehicles on this machine) with the bridge
    lines the setup wrote appended to its config, as the setup's summary says."""
    port = free_port()
    conf = tmp_path / "region.conf"
    bridge = (setup.directory / "clients" / "bridge-north.conf").read_text()
    conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\nuser {ME}\n{bridge}")
    with Mosquitto(port, conf=conf) as server:
        yield server


def test_a_region_bridge_carries_its_partial_statuses_and_alerts_up_and_nothing_forged(
        setup, region):
    local = MqttTarget(HOST, region.port)
    with setup.client("gateway-a") as gateway, Client(local, "north-gateway") as inside:
        assert inside.refusal() is None
        for topic in (f"{topics.ROOT}/gateway/#", topics.subscription(topics.STATUS)):
            assert gateway.subscribe(topic)
        assert inside.subscribe(topics.ROUND_TOPIC)
        gateway.publish(topics.ROUND_TOPIC, b"round", retain=True)
        inside_got = inside.received(1)  # down the bridge: it is up
        for forged in (topics.partial_topic("worker-0"), topics.LEASE_TOPIC):
            inside.publish(forged, b"forged")
        inside.publish(topics.status_topic("north-veh-1"), b"online")
        inside.publish(topics.partial_topic("north"), b"partial")
        gateway_got = sorted(gateway.received(2))

    assert inside_got == [(topics.ROUND_TOPIC, b"round")]
    assert gateway_got == [(topics.partial_topic("north"), b"partial"),
                           (topics.status_topic("north-veh-1"), b"online")]
    assert gateway.inbox.empty()


def test_a_bridge_login_cannot_do_more_than_a_bridge(setup):
    with setup.client("gateway-a") as gateway, setup.client("bridge-north") as bridge:
        assert gateway.subscribe(f"{topics.ROOT}/vehicles/+/update")
        bridge.subscribe(topics.subscription(topics.UPDATE))  # granted, never delivered
        bridge.publish(topics.update_topic("veh-0000"), b"forged")
        bridge.publish(topics.MODEL_TOPIC, b"forged")
        with setup.client("veh-0000") as vehicle:
            vehicle.publish(topics.update_topic("veh-0000"), b"own")
        gateway_got = gateway.received(1)

    assert gateway_got == [(topics.update_topic("veh-0000"), b"own")]
    assert bridge.inbox.empty() and gateway.inbox.empty()
