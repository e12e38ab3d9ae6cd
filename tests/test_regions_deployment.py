"""docker-compose.regions.yml, two regions on two bridged brokers, checked without a Docker
engine: the file validates and wires each part to its broker and login, and its services'
own scripts and commands, run here, federate both regions' vehicles into one model."""

from __future__ import annotations

import os
import pwd
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose_stack import ROOT, Stack, compose_config, healthy
from tests.processes import read_store
from tests.servers import free_port

COMPOSE_FILE = "docker-compose.regions.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    done = compose_config(COMPOSE_FILE, ROOT / ".env.example")
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_two_brokers_two_gateways_sharing_a_lease_a_worker_and_a_region_gateway(compose):
    services = compose["services"]
    commands = {name: " ".join(service.get("command", [])) for name, service in services.items()}

    assert set(services) == {"access", "mosquitto", "mosquitto-south", "gateway-a", "gateway-b",
                             "worker-north", "gateway-south", "fleet-north", "fleet-south"}
    assert services["mosquitto"]["image"] == services["mosquitto-south"]["image"]
    assert "--region south" in commands["access"] and "--region-gateway south" in commands[
        "access"]
    assert "bridge-south.conf" in commands["mosquitto-south"]
    assert commands["gateway-a"].endswith("gateway-a.toml")
    assert commands["gateway-b"].endswith("gateway-b.toml")
    assert "/access/south/" in commands["gateway-south"] + commands["fleet-south"]
    assert "/access/top/" in commands["worker-north"] + commands["fleet-north"]
    assert services["gateway-a"]["volumes"] != services["gateway-b"]["volumes"]  # own stores


def test_every_part_waits_for_the_broker_it_uses(compose):
    services = compose["services"]
    waits = {name: {dep: cond["condition"] for dep, cond in service.get("depends_on", {}).items()}
             for name, service in services.items()}

    assert waits["mosquitto-south"] == {"access": "service_completed_successfully",
                                        "mosquitto": "service_healthy"}
    for name in ("gateway-a", "gateway-b", "worker-north"):
        assert waits[name] == {"mosquitto": "service_healthy"}
    assert waits["gateway-south"] == {"mosquitto-south": "service_healthy"}
    assert waits["fleet-south"]["mosquitto-south"] == "service_healthy"
    assert all(services[dep]["healthcheck"]["test"] for deps in waits.values()
               for dep, cond in deps.items() if cond == "service_healthy")


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_both_regions_vehicles_reach_one_model_through_the_bridge(compose, tmp_path):
    """Both setups written by the access script; both brokers started by their own scripts
    (south's with the bridge lines the top setup wrote); both gateways, north's worker,
    south's region gateway and both fleets with their compose settings. Only addresses
    differ: the service names do not resolve here, so each broker gets a port on
    127.0.0.1."""
    top, south, http = free_port(), free_port(), free_port()
    me = pwd.getpwuid(os.geteuid()).pw_name
    stack = Stack(compose, {  # in this order: each applies to what those before it left
        "-p 8883 --cafile /access/south": f"-p {south} --cafile /access/south",
        "/access": f"{tmp_path}/access",
        "fedfleet broker-setup": f"{sys.executable} -m fedfleet broker-setup",
        "--host mosquitto-south --host localhost --host 127.0.0.1 --port 8883":
            f"--host 127.0.0.1 --port {south} --bind 127.0.0.1",
        "--host mosquitto --host localhost --host 127.0.0.1 --port 8883":
            f"--host 127.0.0.1 --port {top} --bind 127.0.0.1",
        "-p 8883": f"-p {top}",
        "--broker-user mosquitto": f"--broker-user {me}",
        "chown -R mosquitto:mosquitto": f"chown -R {os.geteuid()}",
        "8080": str(http), "0.0.0.0": "127.0.0.1"}, tmp_path)
    fast = {"FEDFLEET_ROUND_SECONDS": "2", "FEDFLEET_LEASE_SECONDS": "1"}
    try:
        assert stack.access(NORTH_VEHICLES="3", SOUTH_VEHICLES="3") == 0
        env = stack.mosquitto("mosquitto")
        assert healthy(stack.health_check("mosquitto"), env)
        env = stack.mosquitto("mosquitto-south")
        assert healthy(stack.health_check("mosquitto-south"), env)
        env = stack.fedfleet("gateway-a", **fast,
                             FEDFLEET_STORE=f"sqlite:///{tmp_path / 'gateway-a.db'}")
        assert healthy(stack.health_check("gateway-a"), env)
        stack.fedfleet("gateway-b", **fast, FEDFLEET_HTTP_PORT="0",
                       FEDFLEET_STORE=f"sqlite:///{tmp_path / 'gateway-b.db'}")
        stack.fedfleet("worker-north", **fast)
        stack.fedfleet("gateway-south", **fast)
        for fleet in ("fleet-north", "fleet-south"):
            stack.fedfleet(fleet, FEDFLEET_SPEEDUP="300")
        deadline = time.monotonic() + 60
        while not _regions_merged(tmp_path / "gateway-a.db"):
            assert time.monotonic() < deadline, "no model from both regions:\n" + "\n".join(
                f"--- {name}\n{stack.log(name)[-1500:]}" for name in (
                    "gateway-a", "gateway-south", "mosquitto-south", "fleet-south"))
            time.sleep(0.5)
    finally:
        codes = stack.stop()

    assert codes[2:] == [0] * (len(codes) - 2)  # every fedfleet part stopped cleanly


def _regions_merged(store: Path) -> bool:
    """Whether a merged round of the store holds vehicles of both regions."""
    merged = {number for number, in read_store(
        store, "SELECT round FROM models WHERE participants > 0")}
    vehicles = read_store(store, "SELECT round, vehicle_id FROM budgets")
    regions = {vehicle.split("-")[0] for number, vehicle in vehicles if number in merged}
    return regions == {"north", "south"}
